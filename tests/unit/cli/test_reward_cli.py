"""`mralign reward-path` and `mralign ppo`: the reward file, the PPO recipes (validated against the installed
OpenRLHF's train_ppo_ray flags), the reward wiring and the error messages."""

import doctest
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from mralign_plugin.cli import main
from mralign_plugin.core.reward import RewardConfig

REPO = Path(__file__).resolve().parents[3]
RECIPES = REPO / "recipes"
PPO_RECIPES = sorted(p for p in RECIPES.glob("*.yaml") if "mralign" in (yaml.safe_load(p.read_text()) or {})
                     and "reward_config" in (yaml.safe_load(p.read_text())["mralign"] or {}))


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_reward_path_prints_the_reward_function_file(capsys):
    code, out, _ = run(capsys, "reward-path")
    path = Path(out.strip())
    assert code == 0 and path.is_absolute() and path.name == "reward_func.py" and path.is_file()
    assert "def reward_func(queries" in path.read_text()


def test_example_reward_config_loads():
    config = RewardConfig.load(RECIPES / "reward.yaml")
    assert Path(config.transitions).resolve() == REPO / "runs" / "demo" / "transitions.json"
    assert (config.mode, config.alpha, config.gamma, config.delta, config.epsilon, config.clip) == (
        "transition", 1.0, 0.2, 0.5, 0.5, 1.0)
    assert "mralign serve-reward --config recipes/reward.yaml" in (RECIPES / "reward.yaml").read_text()


def test_help_flags_reads_argparse_help_like_the_parser_itself():
    from mralign_plugin.adapters.openrlhf import ppo
    from mralign_plugin.cli.train_kto import make_parser
    from mralign_plugin.recipe import parser_flags

    assert doctest.testmod(ppo).failed == 0
    parser = make_parser()
    assert ppo.help_flags(parser.format_help()) == parser_flags(parser)


# --- mralign ppo (needs the installed OpenRLHF's train_ppo_ray) -------------------------------------------


@pytest.fixture(scope="module")
def openrlhf():
    pytest.importorskip("openrlhf")


def test_two_ppo_recipes_exist():
    assert {"ppo_mralign.yaml", "ppo_add_mralign.yaml"} <= {p.name for p in PPO_RECIPES}


@pytest.mark.parametrize("recipe", PPO_RECIPES, ids=lambda p: p.name)
def test_ppo_recipe_validates_and_wires_the_reward(openrlhf, capsys, reward_config, recipe):
    text = recipe.read_text()
    assert text.startswith("#") and f"mralign ppo recipes/{recipe.name}" in text
    code, out, err = run(capsys, "ppo", str(recipe), f"mralign.reward_config={reward_config}", "--print-command")
    assert code == 0, err
    words = shlex.split(out)
    assert words[0] == f"MRALIGN_REWARD_CONFIG={reward_config.resolve()}"
    assert words[1:4] == [sys.executable, "-m", "openrlhf.cli.train_ppo_ray"]
    url = words[words.index("--reward.remote_url") + 1]
    assert url.endswith("adapters/openrlhf/reward_func.py") and Path(url).is_file()
    assert words[words.index("--data.label_key") + 1] == "answers"


def test_grpo_recipe_is_grpo_on_qwen3_8b(openrlhf, capsys, reward_config):
    _, out, _ = run(capsys, "ppo", str(RECIPES / "ppo_mralign.yaml"), f"mralign.reward_config={reward_config}",
                    "rollout.n_samples_per_prompt=16", "--print-command")
    words = shlex.split(out)
    flag = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}
    assert flag["--actor.model_name_or_path"] == "Qwen/Qwen3-8B" and flag["--algo.advantage.estimator"] == "group_norm"
    assert flag["--rollout.n_samples_per_prompt"] == "16" and "--algo.kl.use_loss" in words


def test_swap_recipe_differs_from_a_plain_openrlhf_recipe_only_in_the_reward():
    config = yaml.safe_load((RECIPES / "ppo_add_mralign.yaml").read_text())
    assert set(config["mralign"]) == {"reward_config"} and "remote_url" not in (config.get("reward") or {})
    assert "# reward:\n#   remote_url:" in (RECIPES / "ppo_add_mralign.yaml").read_text()


def test_ppo_with_a_running_reward_server(openrlhf, capsys):
    url = "http://10.0.0.5:5000/get_reward,http://10.0.0.6:5000/get_reward"
    code, out, err = run(capsys, "ppo", str(RECIPES / "ppo_add_mralign.yaml"), "mralign.reward_config=null",
                         f"mralign.reward_url={url}", "--print-command")
    assert code == 0, err
    words = shlex.split(out)
    assert words[0] == sys.executable and words[words.index("--reward.remote_url") + 1] == url


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["actor.adam.lrr=1e-6"], "did you mean actor.adam.lr"),
        (["rollout.n_samples_per_prompt=many"], "invalid int value: 'many'"),
        (["algo.advantage.estimator=ppo2"], "invalid choice: 'ppo2'"),
        (["vllm.enable_sleep=2"], "vllm.enable_sleep is a switch"),
        (["reward.remote_url=mine.py"], "reward.remote_url is set by the mralign section"),
        (["mralign.reward_config=null"], "set reward_config"),
        (["mralign.reward_config=null", "mralign.reward_url=localhost:5000"], "expected http(s)://"),
        (["mralign.reward=x"], "mralign: unknown key(s) ['reward']"),
        (["mralign.reward_config=/nonexistent/reward.yaml"], "/nonexistent/reward.yaml"),
        (["mralign.reward_url=http://127.0.0.1:5000/get_reward"], "not both"),
    ],
)
def test_ppo_errors_stop_before_launching(openrlhf, capsys, reward_config, overrides, message):
    code, out, err = run(capsys, "ppo", str(RECIPES / "ppo_add_mralign.yaml"), f"mralign.reward_config={reward_config}",
                         *overrides, "--print-command")
    assert code == 2 and out == "" and message in err, err


def test_serve_reward_refuses_a_broken_config(capsys, tmp_path):
    (tmp_path / "r.yaml").write_text("transitions: t.json\ngamma: high\n")
    code, _, err = run(capsys, "serve-reward", "--config", str(tmp_path / "r.yaml"))
    assert code == 2 and "gamma" in err


def test_ppo_launches_train_ppo_ray_with_the_config_in_the_environment(openrlhf, capsys, reward_config, monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, env: calls.append((command, env)) or
                        subprocess.CompletedProcess(command, 0))
    code, _, err = run(capsys, "ppo", str(RECIPES / "ppo_add_mralign.yaml"), f"mralign.reward_config={reward_config}")
    assert code == 0, err
    (command, env), = calls
    assert command[1:3] == ["-m", "openrlhf.cli.train_ppo_ray"]
    assert env["MRALIGN_REWARD_CONFIG"] == str(reward_config.resolve()) and env["PATH"]
