"""`mralign train`: the printed launch command, validation errors, and the trainer's --help."""

import subprocess
import sys
from pathlib import Path

import pytest

from mralign_plugin.cli import main
from mralign_plugin.cli.train_kto import launch_command, make_parser, on_off

TINY = Path(__file__).resolve().parents[3] / "recipes" / "tiny-cpu.yaml"


def test_print_command_on_cpu(capsys):
    assert main(["train", str(TINY), "kto.beta=0.05", "mralign.weights=off", "--print-command"]) == 0
    out = capsys.readouterr().out
    assert "-m mralign_plugin.cli.train_kto" in out
    assert "--kto.beta 0.05" in out and "--mralign.weights false" in out and "--data.apply_chat_template" in out


def test_gpu_command_uses_the_deepspeed_launcher():
    assert launch_command(["--kto.beta", "0.1"], gpus=True) == [
        "deepspeed", "--module", "mralign_plugin.cli.train_kto", "--kto.beta", "0.1"
    ]
    assert launch_command([], gpus=False) == [sys.executable, "-m", "mralign_plugin.cli.train_kto"]


def test_unknown_key_fails_before_launch(capsys):
    assert main(["train", str(TINY), "kto.betaa=0.05"]) == 2
    assert "did you mean kto.beta" in capsys.readouterr().err


def test_bad_value_fails_before_launch():
    with pytest.raises(SystemExit):
        main(["train", str(TINY), "kto.beta=abc", "--print-command"])


def test_on_off():
    assert on_off("on") is True and on_off("off") is False and on_off("False") is False
    with pytest.raises(Exception, match="on or off"):
        on_off("maybe")


def test_micro_batch_one_needs_another_kl_mode():
    args = make_parser().parse_args(["--model.model_name_or_path", "m", "--data.dataset", "d",
                                     "--train.micro_batch_size", "1", "--kto.kl_mode", "accumulated"])
    assert args.__dict__["kto.kl_mode"] == "accumulated"


def test_trainer_module_help():
    out = subprocess.run([sys.executable, "-m", "mralign_plugin.cli.train_kto", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--mralign.weights" in out and "--kto.kl_mode" in out and "--ds.lora.rank" in out
