"""TRL adapter: segment-weighted KTO (``kto.py``, a ``trl.KTOTrainer`` subclass) and the GRPO reward (``grpo.py``).

Only TRL's contract lives here; the row encoding is core/kto_rows.py, the loss core/loss.py, the reward
reward/scorer.py. TRL is imported lazily (``pip install "mralign_plugin[trl]"``).
"""

from __future__ import annotations

TRL_VERSION = "1.16.0"  # the release this adapter was written against (read from its installed source)


def check_trl_version() -> str:
    """The installed TRL version; ImportError naming the extra when TRL is missing, a warning off 1.16."""
    import warnings
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("trl")
    except PackageNotFoundError:
        raise ImportError('TRL is not installed: pip install "mralign_plugin[trl]"') from None
    if installed.split(".")[:2] != TRL_VERSION.split(".")[:2]:
        warnings.warn(f"mralign_plugin's TRL adapter was verified on trl {TRL_VERSION}; found {installed}",
                      stacklevel=2)
    return installed
