#!/usr/bin/env bash
# The main job: set up the environment (with OpenRLHF for CPU), then run MR-ALIGN end to end on the
# bundled demo corpus: transition model, segment weights, segment-weighted KTO vs plain KTO (~1-2 min).
#
#   bash scripts/run_main.sh             # writes runs/demo/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh openrlhf
VENV="${MRALIGN_VENV:-.venv}"
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled
exec "$VENV/bin/mralign" demo --out "${1:-runs/demo}"
