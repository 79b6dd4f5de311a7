"""`mralign demo`: the main job's orchestrator. It drives the stages the other verbs run (pipeline/),
training (the KTO trainer CLI), evaluation (eval/) and the report, so it sits at the top beside cli/.

    mralign demo                     # the real-model path: SmolLM2-135M-Instruct end to end (demo/real.py)
    mralign demo --quick             # the one-minute smoke test: bundled corpus, tiny random Llama (demo/quick.py)
    mralign demo --questions 600 --seed 1 --recipe recipes/demo-cpu.yaml

Every stage of the real path is cached by its inputs under ``--out`` (demo/stages.py): a rerun after
an interruption resumes; ``--fresh`` deletes the run directory first.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path


def run_demo(out_dir: str | Path, quick: bool = False, train: bool = True, questions: int | None = None,
             seed: int | None = None, recipe: str | Path | None = None, fresh: bool = False,
             progress: bool = True) -> int:
    """Run the main job into ``out_dir``; returns the exit status."""
    out = Path(out_dir)
    if fresh and out.exists():
        shutil.rmtree(out)
    if quick:
        from mralign_plugin.demo.quick import run_quick

        return run_quick(out, train=train)
    from mralign_plugin.demo.config import load_demo_config
    from mralign_plugin.demo.real import run_real
    from mralign_plugin.demo.report import terminal_table, write_demo_report

    config = load_demo_config(recipe, questions, seed)
    start = time.perf_counter()
    record = run_real(out, config, progress=progress)
    report = write_demo_report(out, record, time.perf_counter() - start, config["eval"]["n_resamples"])
    print(f"\nheld-out results ({report['data']['test']} questions; full report: {out / 'report.md'})")
    print(terminal_table(report))
    return 0
