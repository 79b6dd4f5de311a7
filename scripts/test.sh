#!/usr/bin/env bash
# The test command: set up the environment, then run the unit and integration tiers on CPU.
#
#   bash scripts/test.sh                 # everything except `slow` and `gpu` tests
#   bash scripts/test.sh -m slow         # extra pytest arguments are passed through
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh annotate serve serving ray demo openrlhf trl verl
VENV="${MRALIGN_VENV:-.venv}"
# Tests never touch the network.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
if [ "$#" -eq 0 ]; then set -- -m "not slow and not gpu"; fi
"$VENV/bin/python" -m ruff check mralign_plugin tests benchmarks
exec "$VENV/bin/python" -m pytest tests "$@"
