"""Make OpenRLHF 0.11.2 importable and trainable on a machine without CUDA (a development / CI aid).

Users train on GPUs, where :func:`apply` does nothing. On a CPU-only machine it makes five changes,
each only where OpenRLHF would otherwise fail (see OPENRLHF_NOTES.md, "Running OpenRLHF without a GPU"):

1. ``flash_attn`` missing: ``openrlhf.models`` imports four flash_attn helpers at module level (used
   only by sample packing / ring attention); serve the pure-torch versions of :mod:`flash_attn_fallback`
   under those module names. Use ``attn_implementation="sdpa"`` or ``"eager"``.
2. ``torch.cuda.set_device`` / ``current_device`` / ``synchronize``, called unconditionally by
   ``DeepspeedStrategy`` (setup, ``all_reduce``, ``all_gather``, ``save_model``), become "the CPU".
   Without CUDA these calls can only raise, so nothing that worked before changes.
3. DeepSpeed's AdamW would JIT-compile ``fused_adam`` with g++ (~80 s): ask it for ``torch.optim.AdamW``
   (``"torch_adam": true`` in the optimizer params the strategy writes).
4. DeepSpeed's gloo backend would JIT-compile a shared-memory comm op (~50 s): skip it.
5. A plain ``python`` process gets the rank environment ``deepspeed.init_distributed`` needs
   (RANK=0, WORLD_SIZE=1, a free MASTER_PORT); ``torchrun`` sets its own and is left alone.

Call :func:`apply` before the first ``import openrlhf``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import socket
import sys
import types

import torch

from mralign_plugin.adapters.openrlhf import check_openrlhf_version

_applied = False


def apply() -> bool:
    """Apply the CPU compatibility once; return True when in effect (no CUDA), False on GPU machines."""
    global _applied
    if torch.cuda.is_available():
        return False
    if _applied:
        return True
    check_openrlhf_version()
    _serve_flash_attn_fallback()
    _cuda_calls_to_cpu()
    _skip_deepspeed_shm_op()
    _use_torch_adamw()
    _single_process_env()
    _applied = True
    return True


def _serve_flash_attn_fallback() -> None:
    if importlib.util.find_spec("flash_attn") is not None:
        return  # a real flash_attn is installed: use it
    from mralign_plugin.adapters.openrlhf import flash_attn_fallback as fallback

    names = {
        "flash_attn": {},
        "flash_attn.bert_padding": {
            f: getattr(fallback, f) for f in ("index_first_axis", "pad_input", "unpad_input", "rearrange")
        },
        "flash_attn.utils": {},
        "flash_attn.utils.distributed": {"all_gather": fallback.all_gather},
    }
    for name, attributes in names.items():
        module = types.ModuleType(name, f"mralign_plugin CPU fallback for {name} (pure torch)")
        # A spec with no loader: importlib.util.find_spec works on it; transformers still reports
        # flash-attn unavailable because no such distribution is installed.
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=name.count(".") < 2)
        module.__dict__.update(attributes)
        sys.modules[name] = module
    sys.modules["flash_attn"].bert_padding = sys.modules["flash_attn.bert_padding"]
    sys.modules["flash_attn"].utils = sys.modules["flash_attn.utils"]
    sys.modules["flash_attn.utils"].distributed = sys.modules["flash_attn.utils.distributed"]


def _cuda_calls_to_cpu() -> None:
    torch.cuda.set_device = lambda device: None
    torch.cuda.current_device = lambda: torch.device("cpu")
    torch.cuda.synchronize = lambda device=None: None


def _skip_deepspeed_shm_op() -> None:
    # import_module, not `import deepspeed.comm.torch as m`: the latter binds the `torch` attribute
    # of deepspeed.comm (the real torch package), so the patch would silently miss.
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def _use_torch_adamw() -> None:
    from openrlhf.utils.deepspeed import DeepspeedStrategy

    original = DeepspeedStrategy.get_ds_train_config

    def get_ds_train_config(self, optim_dict=None, *, max_norm=None):
        config = original(self, optim_dict, max_norm=max_norm)
        if config.get("optimizer", {}).get("type") == "AdamW":
            config["optimizer"]["params"]["torch_adam"] = True
        return config

    DeepspeedStrategy.get_ds_train_config = get_ds_train_config


def _single_process_env() -> None:
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
