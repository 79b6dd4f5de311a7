"""``mralign ppo``: an OpenRLHF PPO / GRPO recipe with MR-ALIGN's reward → ``openrlhf.cli.train_ppo_ray``.

A PPO recipe is OpenRLHF's own dotted flags as nested YAML (``actor: {model_name_or_path: ...}`` →
``--actor.model_name_or_path ...``) plus an ``mralign`` section that wires the reward:

    mralign:
      reward_config: recipes/reward.yaml   # → --reward.remote_url <the reward file>, MRALIGN_REWARD_CONFIG=<abs path>
      reward_url: null                     # or http://HOST:5000/get_reward of a running `mralign serve-reward`

Every other key is checked against the flags of the installed ``train_ppo_ray`` (its ``--help``).
That module imports vLLM at the top, so on machines without vLLM (CPU development boxes) its parser
is rebuilt from the installed source instead: the statements of its ``__main__`` block up to
``parse_args``, which only build the ``argparse`` parser.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime
import functools
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from mralign_plugin.recipe import RecipeError, validate_keys
from mralign_plugin.reward import CONFIG_ENV

PPO_MODULE = "openrlhf.cli.train_ppo_ray"
MRALIGN_KEYS = ("reward_config", "reward_url")


def help_flags(help_text: str) -> tuple[set[str], set[str]]:
    """(every dotted key, the switches among them) from an argparse ``--help`` text.

    argparse writes each option at an indent of two spaces: ``--name METAVAR, --alias METAVAR``, then
    two spaces and the help (wrapped lines are indented further); a switch has no metavar.

    Example:
        >>> valid, switches = help_flags("options:\\n  --a.b A.B      help\\n  --c            a switch\\n"
        ...                              "                 --not.a flag\\n  --d {x,y}, --e {x,y}\\n")
        >>> sorted(valid), sorted(switches)
        (['a.b', 'c', 'd', 'e'], ['c'])
    """
    valid, switches = set(), set()
    for line in help_text.splitlines():
        if not line.startswith("  --"):
            continue
        invocation = line.strip().split("  ", 1)[0]
        for form in invocation.split(", "):
            name = form.split(" ", 1)[0][2:]
            if name == "help":
                continue
            valid.add(name)
            if " " not in form:
                switches.add(name)
    return valid, switches


def _parser_from_source(path: Path) -> argparse.ArgumentParser:
    """The ``argparse`` parser that ``path``'s ``if __name__ == "__main__":`` block builds, without importing it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            body = []
            for stmt in node.body:
                if "parse_args" in ast.unparse(stmt):
                    break
                body.append(stmt)
            namespace = {"argparse": argparse, "datetime": datetime.datetime, "os": os}
            exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)
            return namespace["parser"]
    raise RuntimeError(f"{path}: no `if __name__ == '__main__':` block building a parser")


@functools.cache
def _ppo_interface() -> tuple[frozenset[str], frozenset[str], str, argparse.ArgumentParser | None]:
    """(valid dotted keys, switches, where they came from, the parser when rebuilt from source)."""
    from mralign_plugin.adapters.openrlhf import check_openrlhf_version

    version = check_openrlhf_version()
    done = subprocess.run([sys.executable, "-m", PPO_MODULE, "--help"], capture_output=True, text=True, timeout=600)
    parser = None
    if done.returncode == 0:
        valid, switches = help_flags(done.stdout)
        source = f"`python -m {PPO_MODULE} --help` (OpenRLHF {version})"
    else:
        missing = re.findall(r"No module named '([^']+)'", done.stderr)
        path = Path(importlib.util.find_spec(PPO_MODULE).origin)
        parser = _parser_from_source(path)
        valid, switches = help_flags(parser.format_help())
        why = f"no {missing[-1]} here" if missing else "its --help failed here"
        source = f"the parser of {path}, OpenRLHF {version} (read from source: {why})"
    if not valid:
        raise RuntimeError(f"found no flags in {source}")
    return frozenset(valid), frozenset(switches), source, parser


def ppo_flags() -> tuple[frozenset[str], frozenset[str], str]:
    """(valid dotted keys, switches, where they came from) of the installed ``train_ppo_ray``."""
    return _ppo_interface()[:3]


def check_ppo_argv(argv: list[str]) -> None:
    """Let ``train_ppo_ray``'s own parser check the values (types, choices); raise :class:`RecipeError`.

    With the real module, ``ARGV --help`` converts every value before ``--help`` exits; with the
    parser rebuilt from source, ``parse_args`` does.
    """
    parser = _ppo_interface()[3]
    if parser is None:
        done = subprocess.run([sys.executable, "-m", PPO_MODULE, *argv, "--help"], capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise RecipeError(f"train_ppo_ray rejects the flags: {last}")
        return

    def error(message: str):
        raise RecipeError(f"train_ppo_ray rejects the flags: {message}")

    parser.error = error
    parser.parse_args(argv)


def reward_file() -> str:
    """Absolute path of the reward function file for ``--reward.remote_url``."""
    return str(Path(importlib.util.find_spec("mralign_plugin.adapters.openrlhf.reward_func").origin).resolve())


def build_command(config: dict) -> tuple[list[str], dict[str, str]]:
    """``(command, extra environment)`` for a loaded recipe; raises :class:`RecipeError` when it is invalid.

    The reward config and its transition model are loaded once here, so a broken one fails before any
    GPU is allocated (implicit mode's models are left to the rollout workers).
    """
    from mralign_plugin.core.reward import RewardConfig
    from mralign_plugin.recipe import to_openrlhf_argv
    from mralign_plugin.reward.scorer import RewardScorer

    config = dict(config)
    section = config.pop("mralign", None) or {}
    if not isinstance(section, dict):
        raise RecipeError("mralign: expected a section with reward_config or reward_url")
    unknown = sorted(set(section) - set(MRALIGN_KEYS))
    if unknown:
        raise RecipeError(f"mralign: unknown key(s) {unknown}; valid: {', '.join(MRALIGN_KEYS)}")
    if (config.get("reward") or {}).get("remote_url") is not None:
        raise RecipeError("reward.remote_url is set by the mralign section (reward_config or reward_url); remove it")
    valid, switches, source = ppo_flags()
    try:
        validate_keys(config, valid, switches)
    except RecipeError as e:
        raise RecipeError(f"{e}\n  (flags of {source})") from None

    env = {}
    if section.get("reward_url") and section.get("reward_config"):
        raise RecipeError("mralign: set reward_config (the reward file) or reward_url (a running serve-reward), "
                          "not both; e.g. add mralign.reward_config=null")
    if section.get("reward_url"):
        url = str(section["reward_url"])
        if not all(u.startswith(("http://", "https://")) for u in url.split(",")):
            raise RecipeError(f"mralign.reward_url: expected http(s)://HOST:PORT/get_reward, got {url!r}")
    elif section.get("reward_config"):
        path = Path(section["reward_config"]).resolve()
        try:  # everything but the implicit mode's models, which the rollout workers load
            reward = RewardConfig.load(path)
            RewardScorer(dataclasses.replace(reward, mode="transition", implicit=None))
        except Exception as e:
            raise RecipeError(f"mralign.reward_config: {path}: {e}") from None
        env[CONFIG_ENV] = str(path)
        url = reward_file()
    else:
        raise RecipeError("mralign: set reward_config (the reward file) or reward_url (a running serve-reward)")
    argv = [*to_openrlhf_argv(config, switches), "--reward.remote_url", url]
    check_ppo_argv(argv)
    return [sys.executable, "-m", PPO_MODULE, *argv], env
