"""scripts/setup_env.sh skips pip when its stamp says the venv already has what is asked for.

The venv here is a directory whose ``bin/python`` only records its arguments, so the script runs end to
end (and writes its stamp) without installing anything; a run that decides to install is seen by its
pip calls.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "scripts" / "setup_env.sh"


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text(f'#!/usr/bin/env bash\necho "$@" >> {tmp_path / "calls"}\n')
    python.chmod(0o755)
    return tmp_path


def run_setup(venv: Path, *components: str, **env: str) -> subprocess.CompletedProcess:
    (venv / "calls").unlink(missing_ok=True)
    done = subprocess.run(["bash", str(SETUP), *components], capture_output=True, text=True,
                          env={**os.environ, "MRALIGN_VENV": str(venv), **env})
    assert done.returncode == 0, done.stderr
    return done


def installed(venv: Path) -> bool:
    calls = venv / "calls"
    return calls.exists() and "-m pip install" in calls.read_text()


def test_the_stamp_records_the_union_of_components(venv: Path) -> None:
    run_setup(venv, "demo", "openrlhf")
    assert installed(venv)
    run_setup(venv, "trl")
    assert installed(venv)  # a new component installs
    lines = (venv / ".mralign-setup").read_text().split()
    assert len(lines[0]) == 64 and lines[1:] == ["demo", "dev", "openrlhf", "trl"]


def test_same_or_fewer_components_skip_pip(venv: Path) -> None:
    run_setup(venv, "demo", "openrlhf", "trl")
    for components in ((), ("demo", "openrlhf"), ("trl", "demo", "openrlhf")):
        done = run_setup(venv, *components)
        assert "[setup] up to date" in done.stdout
        assert not (venv / "calls").exists()


@pytest.mark.parametrize("case", ["new component", "changed files", "forced"])
def test_anything_else_installs(venv: Path, case: str) -> None:
    run_setup(venv, "demo")
    stamp = venv / ".mralign-setup"
    if case == "changed files":
        stamp.write_text("0" * 64 + "\n" + stamp.read_text().split("\n", 1)[1])
    components = ("demo", "verl") if case == "new component" else ("demo",)
    done = run_setup(venv, *components, **({"MRALIGN_SETUP_FORCE": "1"} if case == "forced" else {}))
    assert "up to date" not in done.stdout
    assert installed(venv)
