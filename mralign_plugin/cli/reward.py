"""Verbs of the transition-aware PPO / GRPO reward: reward-path, serve-reward, ppo.

    # the one-flag swap into an existing OpenRLHF run
    export MRALIGN_REWARD_CONFIG=$PWD/recipes/reward.yaml
    python -m openrlhf.cli.train_ppo_ray ... --reward.remote_url "$(mralign reward-path)" --data.label_key answers

    # verl: the scalar compute_score file, or the dense reward manager's file
    mralign reward-path --framework verl [--dense]

    # the same reward over HTTP (OpenRLHF's remote-reward contract)
    mralign serve-reward --config recipes/reward.yaml --port 5000

    # GRPO on Qwen3-8B from a recipe
    mralign ppo recipes/ppo_mralign.yaml rollout.n_samples_per_prompt=16 --print-command
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys


def _reward_path(args: argparse.Namespace) -> int:
    if args.framework == "verl":
        from mralign_plugin.adapters.verl import compute_score_path, dense_manager_path

        print(dense_manager_path() if args.dense else compute_score_path())
        return 0
    if args.dense:
        print("mralign reward-path: --dense is verl's reward manager; OpenRLHF takes scalar rewards only",
              file=sys.stderr)
        return 2
    from mralign_plugin.adapters.openrlhf.ppo import reward_file

    print(reward_file())
    return 0


def _serve(args: argparse.Namespace) -> int:
    from mralign_plugin.core.reward import RewardConfig
    from mralign_plugin.reward.scorer import load_scorer

    try:
        if args.workers > 1 and RewardConfig.load(args.config).mode == "implicit":
            print("mralign serve-reward: --workers > 1 is for mode: transition; implicit mode batches requests "
                  "on one copy of its models", file=sys.stderr)
            return 2
        scorer = load_scorer(args.config)
    except Exception as e:
        print(f"mralign serve-reward: {args.config}: {e}", file=sys.stderr)
        return 2
    try:
        import uvicorn  # noqa: F401  (used by serve; checked here for a clear message)

        from mralign_plugin.adapters.openrlhf.reward_server import serve
    except ImportError as e:
        print(f"mralign serve-reward: the server needs starlette and uvicorn ({e.name} is missing): "
              "pip install 'mralign_plugin[serve]'", file=sys.stderr)
        return 2
    serve(scorer, host=args.host, port=args.port, max_batch_size=args.max_batch_size,
          max_body_bytes=int(args.max_body_mb * (1 << 20)), graceful_timeout=args.graceful_timeout,
          workers=args.workers, config_path=os.path.abspath(args.config))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _ppo(args: argparse.Namespace) -> int:
    from mralign_plugin.adapters.openrlhf.ppo import build_command
    from mralign_plugin.recipe import RecipeError, load_recipe

    try:
        command, env = build_command(load_recipe(args.recipe, args.overrides))
    except (RecipeError, ImportError, RuntimeError) as e:
        print(f"mralign ppo: {e}", file=sys.stderr)
        return 2
    if args.print_command:
        print(shlex.join([f"{k}={v}" for k, v in env.items()] + command))
        return 0
    return subprocess.run(command, env={**os.environ, **env}).returncode


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reward-path",
        help="print the path of the reward file for OpenRLHF's --reward.remote_url or verl's custom reward",
        description="Print the absolute path of the reward function file. OpenRLHF loads it with "
                    "--reward.remote_url PATH; verl with reward.custom_reward_function.path=PATH "
                    "(.name=compute_score), or with --dense the reward manager file for "
                    "reward.reward_manager.module.path. Both read their config from $MRALIGN_REWARD_CONFIG.",
    )
    p.add_argument("--framework", choices=("openrlhf", "verl"), default="openrlhf")
    p.add_argument("--dense", action="store_true",
                   help="verl: the dense reward manager's file (reward.reward_manager.name=MRAlignDenseRewardManager)")
    p.set_defaults(func=_reward_path)

    p = subparsers.add_parser(
        "serve-reward",
        help="HTTP reward server with OpenRLHF's remote-reward contract (POST /get_reward)",
        description="Serve the reward of CONFIG on http://HOST:PORT/get_reward (OpenRLHF --reward.remote_url). "
                    "Example: mralign serve-reward --config recipes/reward.yaml --port 5000",
    )
    p.add_argument("--config", required=True, help="reward config (YAML / JSON), e.g. recipes/reward.yaml")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--max-batch-size", type=int, default=64, help="rollouts scored together at most")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="server processes sharing the port (default 1); each scores on its own core")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="larger request bodies get 413")
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="seconds in-flight requests get to finish on SIGINT / SIGTERM")
    p.set_defaults(func=_serve)

    p = subparsers.add_parser(
        "ppo",
        help="PPO / GRPO with MR-ALIGN's reward from a recipe (openrlhf.cli.train_ppo_ray)",
        description="Read RECIPE (YAML: OpenRLHF's dotted flags nested, plus an mralign section naming the "
                    "reward), apply section.key=value overrides, check every key against the installed "
                    "train_ppo_ray and launch it. Example: mralign ppo recipes/ppo_mralign.yaml --print-command",
    )
    p.add_argument("recipe", help="YAML recipe, e.g. recipes/ppo_mralign.yaml")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="torchtune-style overrides")
    p.add_argument("--print-command", action="store_true", help="print the launch command instead of running it")
    p.set_defaults(func=_ppo)
