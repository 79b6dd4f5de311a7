"""`mralign reward-path --framework verl [--dense]`: the files verl loads by path (no verl import needed)."""

from pathlib import Path

from mralign_plugin.cli import main


def test_verl_paths(capsys):
    assert main(["reward-path", "--framework", "verl"]) == 0
    scalar = Path(capsys.readouterr().out.strip())
    assert scalar.is_absolute() and scalar.name == "compute_score.py" and "def compute_score(" in scalar.read_text()
    assert main(["reward-path", "--framework", "verl", "--dense"]) == 0
    dense = Path(capsys.readouterr().out.strip())
    assert dense.name == "dense.py" and "class MRAlignDenseRewardManager(" in dense.read_text()


def test_dense_is_refused_for_openrlhf(capsys):
    assert main(["reward-path", "--dense"]) == 2
    assert "scalar rewards only" in capsys.readouterr().err
