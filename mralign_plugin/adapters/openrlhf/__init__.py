"""MR-ALIGN on OpenRLHF 0.11.x: KTO data and collate, trainer, ``train()`` wiring, CPU compatibility.

Nothing here is imported by ``import mralign_plugin``; the ``mralign train`` verb imports it lazily.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings

WRITTEN_FOR = "0.11"  # major.minor this adapter was written against
TESTED = "0.11.2"


@functools.cache
def check_openrlhf_version() -> str:
    """Return the installed OpenRLHF version; warn once when it is not the 0.11.x series.

    Raises:
        ImportError: OpenRLHF is not installed, with the install command for GPU and CPU machines.
    """
    try:
        found = importlib.metadata.version("openrlhf")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            "the KTO trainer needs OpenRLHF 0.11.x: `pip install \"mralign_plugin[openrlhf]\"` on GPU machines; "
            "on CPU machines `DS_BUILD_OPS=0 pip install -c constraints/cpu.txt -r requirements/openrlhf-cpu.txt "
            f"&& pip install --no-deps openrlhf=={TESTED}`"
        ) from None
    if ".".join(found.split(".")[:2]) != WRITTEN_FOR:
        warnings.warn(
            f"mralign_plugin's OpenRLHF adapter was written for OpenRLHF {WRITTEN_FOR}.x (tested with {TESTED}) "
            f"but found {found}. OpenRLHF changes its Actor / DeepspeedStrategy API between minor releases; "
            f"if training fails, install openrlhf=={TESTED}.",
            RuntimeWarning,
            stacklevel=2,
        )
    return found
