"""`mralign experiment planted`: Part 1 in this process, Part 2 as one worker process per seed, then the report.

    mralign experiment planted --out runs/planted              # 5 seeds, 2 data sizes, 3 arms
    mralign experiment planted --out runs/planted --quick      # 2 seeds, 1 size, 2 arms: a smoke run

Workers (``python -m mralign_plugin.experiments.planted.training``) run ``--jobs`` at a time, one thread
each; the progress bar counts finished training runs (each writes ``model/config.json`` when it is done).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from mralign_plugin.experiments.planted.estimation import run_estimation
from mralign_plugin.experiments.planted.report import write_report
from mralign_plugin.experiments.planted.training import PlantedConfig, config_json

WORKER = "mralign_plugin.experiments.planted.training"
PART1_SIZES = (100, 1000, 10000)


def quick_config() -> PlantedConfig:
    """The reduced Part 2 of ``--quick`` and of the tests."""
    return replace(PlantedConfig(), sizes=(128,), arms=("kto", "mralign"))


def _done_runs(out: Path) -> int:
    return sum(1 for _ in out.glob("seed*/n*/*/model/config.json"))


def run_part2(out: Path, seeds: list[int], cfg: PlantedConfig, jobs: int) -> list[dict]:
    """One worker per seed, ``jobs`` at a time; returns the seeds' results in seed order."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    total = len(seeds) * len(cfg.sizes) * len(cfg.arms)
    pending, running = list(seeds), {}
    with tqdm(total=total, desc="part 2 (training runs)", unit="run") as bar:
        while pending or running:
            while pending and len(running) < jobs:
                seed = pending.pop(0)
                d = out / f"seed{seed}"
                d.mkdir(parents=True, exist_ok=True)
                log = open(d / "worker.log", "w")  # noqa: SIM115 - closed when the worker ends
                proc = subprocess.Popen([sys.executable, "-m", WORKER, str(seed), str(d), config_json(cfg)],
                                        stdout=log, stderr=subprocess.STDOUT, env=env)
                running[seed] = (proc, log)
            for seed, (proc, log) in list(running.items()):
                if proc.poll() is not None:
                    log.close()
                    del running[seed]
                    if proc.returncode != 0:
                        for other, _ in running.values():
                            other.kill()
                        raise RuntimeError(f"seed {seed} failed (exit {proc.returncode}); see {out / f'seed{seed}'}/worker.log")
            bar.update(_done_runs(out) - bar.n)
            if running:
                time.sleep(0.5)  # poll the workers and the progress count
        bar.update(total - bar.n)
    return [json.loads((out / f"seed{s}" / "result.json").read_text()) for s in seeds]


def run_planted(out_dir: str | Path, seeds: int = 5, quick: bool = False, jobs: int = 2, part: str = "all") -> dict:
    """The whole experiment; writes ``report.md``, ``report.json`` and ``curves.png`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seed_list = list(range(seeds))
    part1 = {"summary": {}}
    if part in ("all", "1"):
        with tqdm(total=len(seed_list) * len(PART1_SIZES), desc="part 1 (estimation)", unit="fit") as bar:
            part1 = run_estimation(list(PART1_SIZES), seed_list, progress=bar)
    t1 = time.perf_counter()
    cfg = quick_config() if quick else PlantedConfig()
    results = run_part2(out, seed_list, cfg, jobs) if part in ("all", "2") else []
    t2 = time.perf_counter()
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "seeds": seed_list, "part1_seconds": round(t1 - t0, 1),
            "part2_seconds": round(t2 - t1, 1), "config": json.loads(config_json(cfg)), "jobs": jobs}
    meta["line"] = (f"{meta['date']}, {meta['cpus']} CPUs ({meta['machine']}), seeds {seed_list}; "
                    f"part 1 {meta['part1_seconds']} s, part 2 {meta['part2_seconds']} s with {jobs} workers.")
    report = write_report(out, part1, results, meta)
    print(f"report: {out / 'report.md'} ({meta['line']})")
    return report
