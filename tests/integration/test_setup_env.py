"""scripts/setup_env.sh skips pip when its stamp says the venv already has what is asked for.

The venv here is a directory whose ``bin/python`` only records that it was called and fails, so a run
that decides to install is seen (and stopped) at its first pip call, and nothing is installed anywhere.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "setup_env.sh"


def inputs_hash() -> str:
    """The stamp's first line: sha256 of the checkout's path and the set-up files, as the script computes it."""
    cmd = ('{ echo "$PWD"; cat scripts/setup_env.sh setup.py pyproject.toml constraints/*.txt requirements/*.txt; } '
           "| sha256sum | cut -d' ' -f1")
    return subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text(f'#!/usr/bin/env bash\necho "$@" >> {tmp_path / "calls"}\nexit 3\n')
    python.chmod(0o755)
    return tmp_path


def run_setup(venv: Path, *components: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SETUP), *components], capture_output=True, text=True,
                          env={**os.environ, "MRALIGN_VENV": str(venv), **env})


def write_stamp(venv: Path, digest: str, components: list[str]) -> None:
    (venv / ".mralign-setup").write_text("\n".join([digest, *components]) + "\n")


def test_same_or_fewer_components_skip_pip(venv: Path) -> None:
    write_stamp(venv, inputs_hash(), ["demo", "dev", "openrlhf", "trl"])
    for components in ((), ("demo", "openrlhf"), ("trl", "demo", "openrlhf")):
        done = run_setup(venv, *components)
        assert done.returncode == 0, done.stderr
        assert "[setup] up to date" in done.stdout
    assert not (venv / "calls").exists()


@pytest.mark.parametrize("case", ["new component", "changed files", "forced", "no stamp"])
def test_anything_else_installs(venv: Path, case: str) -> None:
    digest = "0" * 64 if case == "changed files" else inputs_hash()
    if case != "no stamp":
        write_stamp(venv, digest, ["demo", "dev"])
    components = ("demo", "verl") if case == "new component" else ("demo",)
    env = {"MRALIGN_SETUP_FORCE": "1"} if case == "forced" else {}
    done = run_setup(venv, *components, **env)
    assert done.returncode == 3  # the first pip call reached the recording python, which fails
    assert "up to date" not in done.stdout
    assert "-m pip install" in (venv / "calls").read_text()
