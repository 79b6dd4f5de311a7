"""YAML recipes → OpenRLHF-style dotted flags, with torchtune-style overrides and key validation.

A recipe's nested keys map one-to-one onto dotted flags (``kto: {beta: 0.1}`` → ``--kto.beta 0.1``), which
OpenRLHF's ``hierarchize()`` nests again. Generic over the target CLI: validation takes the set of valid
dotted keys (from an argparse parser with :func:`parser_flags`, or from a tool's ``--help``).

    config = load_recipe("recipes/mralign.yaml", ["kto.beta=0.05"])
    validate_keys(config, *parser_flags(make_parser()))
    argv = to_openrlhf_argv(config, switches)
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe or override that cannot be used; the message says which key and why."""


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> dict:
    """Read a YAML recipe (``safe_load``) and apply ``section.key=value`` overrides.

    Override values are parsed as YAML (``kto.beta=0.05`` → float, ``data.apply_chat_template=true`` → bool,
    ``ds.lora.target_modules=[q_proj,v_proj]`` → list); ``key=null`` removes a key.
    """
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RecipeError(f"cannot read recipe {path}: {e}") from None
    if not isinstance(config, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(config).__name__}")
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise RecipeError(f"override {override!r} is not section.key=value")
        value = yaml.safe_load(raw) if raw else ""
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"override {override!r}: {part} is a value, not a section")
            node = child
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return config


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mapping → ``{"section.key": value}`` (mappings are sections, everything else a value)."""
    flat = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def parser_flags(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """(every dotted key the parser accepts, the subset that are switches, i.e. flags without a value)."""
    valid, switches = set(), set()
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                valid.add(option[2:])
                if action.nargs == 0:
                    switches.add(option[2:])
    return valid, switches


def validate_keys(config: dict, valid: Iterable[str], switches: Iterable[str] = ()) -> None:
    """Raise :class:`RecipeError` for unknown keys (listing the closest valid ones) and misused switches."""
    valid, switches = set(valid), set(switches)
    problems = []
    for key, value in flatten(config).items():
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            problems.append(f"unknown key {key!r}{hint}")
        elif key in switches and not isinstance(value, bool):
            problems.append(f"{key} is a switch: write true or false, got {value!r}")
    if problems:
        raise RecipeError("\n  ".join(["invalid recipe:", *problems]))


def to_openrlhf_argv(config: dict, switches: Iterable[str] = ()) -> list[str]:
    """Dotted flags for ``config``: switches become a bare ``--key`` when true and are left out when false;
    lists become several values (``nargs``); None is left out; other bools are written true / false."""
    switches = set(switches)
    argv = []
    for key, value in flatten(config).items():
        if value is None or (key in switches and value is False):
            continue
        if key in switches:
            argv.append(f"--{key}")
        elif isinstance(value, list | tuple):
            argv += [f"--{key}", *(str(v) for v in value)]
        elif isinstance(value, bool):
            argv += [f"--{key}", "true" if value else "false"]
        else:
            argv += [f"--{key}", str(value)]
    return argv
