"""The dense reward manager vs the scalar ``compute_score`` path in verl (target: dense ≤ 1.5× per batch).

    python benchmarks/bench_verl_dense.py              # 256 rollouts of ~1,000 GPT-2 tokens, 7 rounds per arm
    python benchmarks/bench_verl_dense.py --rounds 3

One batch = one ``DataProto`` of 256 rollouts (prompt left-padded, response right-padded, as verl's rollout
builds it), scored by verl 0.9.1's own ``RewardLoopWorker.compute_score_batch`` (decode + reward per rollout,
as each reward worker runs it) and turned into the ``rm_scores`` tensor by the manager class's
``assemble_rm_scores`` (as ``RewardLoopManager.compute_rm_score`` does). Scalar arm: verl's ``naive`` manager
with ``reward.custom_reward_function`` = our compute_score.py (the reward on the last token). Dense arm: the
``mralign_dense`` manager (segment scores on segment ends). Arms alternate A B B A; medians are compared. The
manager's one-off token-length table (built at start-up, not per batch) is timed separately.
Traces: benchmarks/bench_reward.py's (the demo corpus's sentences, ~12 paragraphs, a third each right /
hit gap / never mentioned).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from bench_reward import gpt2_tokenizer, make_traces, write_config  # noqa: E402
from verl_batch import rollout_batch  # noqa: E402

TARGET = 1.5


def batch_of(tokenizer, rollouts, prompt_len: int = 64):
    """The rollouts (query, prompt, label) as one DataProto; and the mean response length in tokens."""
    responses = [query[len(prompt):].removesuffix("<|im_end|>") for query, prompt, _ in rollouts]
    data = rollout_batch(tokenizer, [p for _, p, _ in rollouts], responses, [label for *_, label in rollouts],
                         prompt_len=prompt_len)
    return data, data.batch["attention_mask"][:, prompt_len:].sum(1).float().mean().item()


def verl_config(tokenizer_dir: str, dense: bool):
    from omegaconf import OmegaConf

    from mralign_plugin.adapters.verl import compute_score_path

    return OmegaConf.create({
        "actor_rollout_ref": {"model": {"path": tokenizer_dir, "tokenizer_path": None}},
        "reward": {"custom_reward_function": {"path": None if dense else compute_score_path(), "name": "compute_score"},
                   "reward_manager": {"source": "register", "name": "mralign_dense" if dense else "naive",
                                      "module": {"path": None, "name": "custom_reward_manager"}},
                   "sandbox_fusion": None, "reward_model": {"enable": False, "model_path": None}},
    })


def score_batch(worker, manager_cls, data) -> torch.Tensor:
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(data))  # the loop its manager runs on
    return manager_cls.assemble_rm_scores(data, [out["reward_score"] for out in outputs])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rollouts", type=int, default=256)
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=7, help="timed batches per arm")
    args = p.parse_args(argv)

    from verl.experimental.reward_loop import RewardLoopWorker
    from verl.trainer.ppo.reward import resolve_reward_manager_cls

    from mralign_plugin.adapters.verl import CONFIG_ENV
    from mralign_plugin.adapters.verl.dense import piece_lengths

    tokenizer = gpt2_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp + "/tok")
        os.environ[CONFIG_ENV] = str(write_config(Path(tmp)))
        rollouts, _ = make_traces(args.rollouts, args.tokens)
        data, mean_tokens = batch_of(tokenizer, rollouts)
        start = time.perf_counter()
        piece_lengths(tokenizer)  # the manager builds it once, at start-up
        table_s = time.perf_counter() - start
        arms = {}
        for dense in (False, True):
            config = verl_config(tmp + "/tok", dense)
            arms[dense] = (RewardLoopWorker(config), resolve_reward_manager_cls(config))
        results = {dense: score_batch(*arms[dense], data) for dense in (False, True)}  # warm-up (memo, pools)
        gap = (results[True].sum(-1) - results[False].sum(-1)).abs().max().item()
        times = {False: [], True: []}
        for i in range(args.rounds):
            for dense in ((False, True) if i % 2 == 0 else (True, False)):  # A B B A ...
                start = time.perf_counter()
                score_batch(*arms[dense], data)
                times[dense].append(time.perf_counter() - start)
        exact = arms[True][0].reward_manager.n_approximate == 0
    scalar, dense = statistics.median(times[False]), statistics.median(times[True])
    ratio = dense / scalar
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}")
    print(f"batch: {args.rollouts} rollouts, mean {mean_tokens:.0f} response tokens (GPT-2 BPE), "
          f"{args.rounds} batches per arm, medians")
    print(f"scalar compute_score (naive manager): {scalar * 1e3:.1f} ms/batch ({scalar / args.rollouts * 1e6:.0f} us/rollout)")
    print(f"dense mralign_dense manager:          {dense * 1e3:.1f} ms/batch ({dense / args.rollouts * 1e6:.0f} us/rollout)")
    print(f"max |dense sum - scalar| over the batch: {gap:.2e}; character->token mapping exact: {exact}")
    print(f"one-off token-length table at manager start-up: {table_s * 1e3:.0f} ms ({len(tokenizer)} tokens)")
    print(f"ratio dense/scalar = {ratio:.3f}x (target <= {TARGET}x): {'ok' if ratio <= TARGET else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
