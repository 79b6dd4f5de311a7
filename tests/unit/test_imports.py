"""`import mralign_plugin` and `mralign --help` need only the core dependencies (STYLE B1, B7)."""

import subprocess
import sys

HEAVY = ("openrlhf", "deepspeed", "ray", "vllm", "aiohttp", "starlette", "uvicorn", "flash_attn", "peft", "datasets")


def test_package_cli_and_core_import_nothing_heavy():
    code = (
        "import sys\n"
        "import mralign_plugin, mralign_plugin.cli\n"
        "import mralign_plugin.core.formats, mralign_plugin.core.transitions, mralign_plugin.core.weights\n"
        "import mralign_plugin.core.segment, mralign_plugin.core.taxonomy, mralign_plugin.core.loss\n"
        "import mralign_plugin.core.reward, mralign_plugin.core.answers\n"
        "mralign_plugin.cli.build_parser()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_core_never_imports_adapters_or_pipeline():
    code = (
        "import sys, pkgutil, importlib, mralign_plugin.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__): importlib.import_module('mralign_plugin.core.' + m.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('mralign_plugin.') and not m.startswith('mralign_plugin.core')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
