#!/usr/bin/env bash
# The main job: set up the environment (OpenRLHF for CPU, SmolLM2 and the QA reference data), then run
# MR-ALIGN end to end on SmolLM2-135M-Instruct: factual QA built offline, generate, label, annotate,
# fit-transitions, weigh, plain KTO vs MR-ALIGN, held-out evaluation of vanilla / KTO / MR-ALIGN, report.
#
#   bash scripts/run_main.sh                  # writes runs/demo/ (report.md); a rerun resumes
#   bash scripts/run_main.sh runs/demo2 --fresh --questions 600 --seed 1
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh demo openrlhf
VENV="${MRALIGN_VENV:-.venv}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
out="${1:-runs/demo}"
shift || true
exec "$VENV/bin/mralign" demo --out "$out" "$@"
