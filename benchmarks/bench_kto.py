"""What MR-ALIGN's segment weights cost over plain KTO, in the same trainer (targets: step ≤ 1.03×, loss ≤ 1.05×).

    OMP_NUM_THREADS=1 python benchmarks/bench_kto.py                 # CPU: a tiny random Llama
    python benchmarks/bench_kto.py --steps 40 --model runs/tiny-llama

1. Trainer step time: one process, one trainer, the same data and seed; optimizer steps alternate
   (A B B A ...) between segment weights on and ``--mralign.weights off`` (the trainer's ``use_weights``);
   medians are compared. Each arm's peak memory comes from a separate short run of that arm alone
   (peak RSS on CPU, ``max_memory_allocated`` on GPU).
2. Loss only: forward + backward of ``kto_loss`` at B = 8, T = 4096 with token weights vs without,
   alternating, the metrics (``mean_token_weight`` included) computed inside the timed call as in the
   trainer; the weights are 0 off the response, as the trainer's collate builds them, and passed with
   ``weights_masked=True`` as the trainer does (so the loss skips the ω·mask product); repeated ``--loss-runs`` times, since on a shared CPU the ratio drifts by a few percent from
   run to run; memory = bytes held by the autograd graph after the forward (glibc ``mallinfo2`` on CPU).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # small matmuls: threads only add contention on a shared CPU
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STEP_TARGET, LOSS_TARGET = 1.03, 1.05


def trainer_args(model: str, data: str, out: str, weights: bool, micro: int, batch: int):
    from openrlhf.utils.config import hierarchize

    from mralign_plugin.cli.train_kto import make_parser

    argv = [
        "--model.model_name_or_path", model, "--data.dataset", data, "--data.apply_chat_template",
        "--data.max_len", "512", "--mralign.weights", "on" if weights else "off",
        "--train.micro_batch_size", str(micro), "--train.batch_size", str(batch), "--train.max_epochs", "1000",
        "--train.seed", "42", "--adam.lr", "1e-4", "--lr_scheduler", "constant", "--lr_warmup_ratio", "0",
        "--ds.zero_stage", "0", "--ds.attn_implementation", "sdpa", "--ckpt.output_dir", out,
        "--ckpt.path", os.path.join(out, "ckpt"),
    ]
    return hierarchize(make_parser().parse_args(argv))


def optimizer_steps(trainer, n: int):
    """Yield the wall time of each of ``n`` optimizer steps (one accumulation window each)."""
    accumulation = trainer.strategy.accumulated_gradient
    batches = iter(())
    for _ in range(n):
        start = time.perf_counter()
        for _ in range(accumulation):
            batch = next(batches, None)
            if batch is None:
                batches = iter(trainer.train_dataloader)
                batch = next(batches)
            trainer.training_step(batch)
        yield time.perf_counter() - start


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_trainer(model: str, data: str, steps: int, micro: int, batch: int, warmup: int = 3) -> dict:
    from mralign_plugin.adapters.openrlhf.train import build_trainer

    with tempfile.TemporaryDirectory() as out:
        trainer, _, _ = build_trainer(trainer_args(model, data, out, True, micro, batch))
        trainer.model.train()
        times = {True: [], False: []}
        order = [True, False, False, True]  # ABBA: no arm always goes first
        for i in range(2 * (steps + warmup)):
            trainer.use_weights = order[i % 4]
            elapsed = next(optimizer_steps(trainer, 1))
            if i >= 2 * warmup:
                times[trainer.use_weights].append(elapsed)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    return {"step_s_weights_on": on, "step_s_weights_off": off, "ratio": on / off, "steps_per_arm": steps}


def bench_arm_memory(model: str, data: str, weights: bool, micro: int, batch: int, steps: int) -> float:
    from mralign_plugin.adapters.openrlhf.train import build_trainer

    with tempfile.TemporaryDirectory() as out:
        trainer, _, _ = build_trainer(trainer_args(model, data, out, weights, micro, batch))
        trainer.model.train()
        for _ in optimizer_steps(trainer, steps):
            pass
    return peak_memory_mb()


def _graph_bytes() -> int | None:
    """Bytes currently allocated by malloc (glibc ``mallinfo2``: arena + mmapped), or None elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    if not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def bench_loss(batch: int = 8, length: int = 4096, reps: int = 1000) -> dict:
    from mralign_plugin.core.loss import kto_loss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    policy = (-torch.rand(batch, length, generator=g) * 5).to(device)  # (B, T)
    ref = (-torch.rand(batch, length, generator=g) * 5).to(device)  # (B, T)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=g)
    mask = (torch.arange(length) < lengths[:, None]).to(device)  # (B, T)
    # (B, T) in [1/e, e] on response tokens and 0 elsewhere, as the trainer's collate builds them (and
    # passes weights_masked=True, so the loss skips the ω·mask product)
    weights = (torch.rand(batch, length, generator=g) * 2.35 + 0.368).to(device) * mask
    desirable = (torch.arange(batch) % 2 == 0).to(device)  # (B,)

    def once(token_weights, measure_memory: bool = False) -> tuple[float, int | None]:
        x = policy.clone().requires_grad_()
        if device == "cuda":
            torch.cuda.synchronize()
        before = _graph_bytes() if measure_memory else None
        start = time.perf_counter()
        loss, _ = kto_loss(x, ref, mask, desirable, 0.1, token_weights=token_weights, weights_masked=True)
        held = (_graph_bytes() - before) if before is not None else None  # only when measuring memory
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, held

    for _ in range(10):
        once(weights), once(None)
    times = {True: [], False: []}
    for i in range(reps):
        for use in ((True, False) if i % 2 == 0 else (False, True)):
            times[use].append(once(weights if use else None)[0])
    on, off = statistics.median(times[True]), statistics.median(times[False])
    result = {"loss_ms_weights_on": on * 1e3, "loss_ms_weights_off": off * 1e3, "ratio": on / off,
              "B": batch, "T": length, "device": device}
    if device == "cpu" and _graph_bytes() is not None:
        held = {use: statistics.median(once(weights if use else None, True)[1] for _ in range(20)) for use in (True, False)}
        result["graph_mb_weights_on"] = held[True] / 2**20
        result["graph_mb_weights_off"] = held[False] / 2**20
    elif device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        once(weights)
        result["peak_mb_weights_on"] = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        once(None)
        result["peak_mb_weights_off"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s), python {platform.python_version()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: a tiny random Llama built in a temp dir")
    parser.add_argument("--data", default=str(REPO / "tests" / "data" / "kto_tiny.jsonl"))
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per arm")
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--loss-runs", type=int, default=3, help="loss-only runs; the verdict uses their median")
    parser.add_argument("--skip-trainer", action="store_true")
    parser.add_argument("--memory-arm", choices=("on", "off"), help=argparse.SUPPRESS)  # internal: one arm alone
    args = parser.parse_args()

    from mralign_plugin.adapters.openrlhf import cpu

    cpu.apply()
    if args.model is None and not args.skip_trainer:
        from mralign_plugin.tiny_model import build_tiny_llama

        args.model = str(build_tiny_llama(Path(tempfile.mkdtemp()) / "tiny-llama"))

    if args.memory_arm:
        mb = bench_arm_memory(args.model, args.data, args.memory_arm == "on", args.micro_batch, args.batch, 5)
        print(json.dumps({"peak_mb": mb}))
        return 0

    print(f"machine: {machine()}")
    runs = sorted((bench_loss() for _ in range(args.loss_runs)), key=lambda r: r["ratio"])
    loss = runs[len(runs) // 2]  # the median run
    print(f"loss only, B={loss['B']} T={loss['T']} forward+backward ({loss['device']}), median of {len(runs)} runs: "
          f"weights {loss['loss_ms_weights_on']:.3f} ms vs none {loss['loss_ms_weights_off']:.3f} ms "
          f"-> ratio {loss['ratio']:.3f} (target <= {LOSS_TARGET}) {'OK' if loss['ratio'] <= LOSS_TARGET else 'MISS'}"
          f"; range {runs[0]['ratio']:.3f}-{runs[-1]['ratio']:.3f}")
    memory_keys = [k for k in loss if k.endswith(("_weights_on", "_weights_off")) and "mb" in k]
    print("  memory: " + ", ".join(f"{k} {loss[k]:.2f}" for k in memory_keys))

    if not args.skip_trainer:
        step = bench_trainer(args.model, args.data, args.steps, args.micro_batch, args.batch)
        print(f"trainer step (tiny Llama, micro-batch {args.micro_batch}, batch {args.batch}, ZeRO 0, "
              f"{step['steps_per_arm']} steps per arm, alternating): weights on {step['step_s_weights_on'] * 1e3:.1f} ms "
              f"vs off {step['step_s_weights_off'] * 1e3:.1f} ms -> ratio {step['ratio']:.3f} "
              f"(target <= {STEP_TARGET}) {'OK' if step['ratio'] <= STEP_TARGET else 'MISS'}")
        peaks = {}
        # cpu.apply() gave this process a rank environment and a port; each child picks its own.
        rank_env = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
        env = {k: v for k, v in os.environ.items() if k not in rank_env}
        for arm in ("on", "off"):
            done = subprocess.run(
                [sys.executable, __file__, "--model", args.model, "--data", args.data, "--memory-arm", arm,
                 "--micro-batch", str(args.micro_batch), "--batch", str(args.batch)],
                capture_output=True, text=True, check=True, env=env,
            )
            peaks[arm] = json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]
        kind = "max_memory_allocated" if torch.cuda.is_available() else "peak RSS"
        print(f"  {kind}: weights on {peaks['on']:.0f} MB, off {peaks['off']:.0f} MB "
              f"-> ratio {peaks['on'] / peaks['off']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
