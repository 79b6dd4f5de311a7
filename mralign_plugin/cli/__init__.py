"""The ``mralign`` command: one verb per pipeline stage.

Each module in ``VERB_MODULES`` defines ``register(subparsers)``, which adds its verbs and sets
``func`` on each; heavy imports happen inside ``func``, so ``mralign --help`` stays instant.

    mralign --help
    mralign fit-transitions annotated.jsonl -o transitions.json --plot-dir plots/
"""

from __future__ import annotations

import argparse
import importlib
import sys

VERB_MODULES = (
    "mralign_plugin.cli.data",
    "mralign_plugin.cli.annotate",
    "mralign_plugin.cli.train_kto",
    "mralign_plugin.cli.eval",
    "mralign_plugin.cli.reward",
    "mralign_plugin.cli.experiment",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mralign",
        description="MR-ALIGN: meta-reasoning informed factuality alignment for OpenRLHF.",
    )
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name in VERB_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
