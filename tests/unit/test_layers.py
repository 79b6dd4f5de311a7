"""The layering of DESIGN.md holds in the code: every import of a package module points down.

Layers, bottom to top (a module may import its own layer and the layers below, never above):

    core, and beside it recipe, tiny_model, smollm2, data   (they import only core)
    annotate                                        the annotation library
    reward                                          the framework-neutral rollout reward
    pipeline                                        stages over files, their shared machinery, figures
    eval
    adapters/<framework>                            one framework each; no adapter imports another
    demo, experiments                               the main job's orchestrator; controlled experiments
    cli                                             the verbs

Imports inside functions (the lazy ones) count as much as top-level ones.
"""

import ast
from pathlib import Path

import pytest

import mralign_plugin

PACKAGE = Path(mralign_plugin.__file__).parent
RANK = {"core": 0, "recipe": 1, "tiny_model": 1, "smollm2": 1, "data": 1, "annotate": 2, "reward": 3, "pipeline": 4, "eval": 5,
        "adapters": 6, "demo": 7, "experiments": 7, "cli": 8}
# Units of the same rank that must not import each other (beside core, each stands alone).
SIBLINGS_APART = {"recipe", "tiny_model", "smollm2", "data"}


def unit_of(module: str) -> str:
    """The layer unit of a dotted module name under mralign_plugin: ``core``, ``adapters.openrlhf``, ..."""
    parts = module.split(".")
    assert parts[0] == "mralign_plugin", module
    if len(parts) == 1:
        return "package"
    if parts[1] == "adapters" and len(parts) > 2:
        return f"adapters.{parts[2]}"
    return parts[1]


def rank(unit: str) -> int:
    return RANK[unit.split(".")[0]]


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of each mralign_plugin module that ``source`` (module ``module``) imports."""
    out = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "mralign_plugin"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "mralign_plugin":
                out += [(node.lineno, f"{name}.{a.name}" if name.count(".") < 2 else name) for a in node.names]
    return out


def violations(source: str, module: str) -> list[str]:
    """Every import in ``source`` that breaks the layering, as ``module:line imports target (why)``."""
    here = unit_of(module)
    found = []
    for line, target in imported_modules(source, module):
        there = unit_of(target)
        if there in (here, "package"):
            continue
        if rank(there) > rank(here):
            found.append(f"{module}:{line} imports {target} ({there} is above {here})")
        elif rank(there) == rank(here) and (here.startswith("adapters") or here in SIBLINGS_APART):
            found.append(f"{module}:{line} imports {target} ({here} and {there} stand apart)")
        elif here in SIBLINGS_APART | {"core"} and there != "core":
            found.append(f"{module}:{line} imports {target} ({here} imports only core)")
    return found


def package_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def test_no_module_imports_a_layer_above_it():
    found = []
    for module, path in package_modules():
        if module == "mralign_plugin":
            continue
        assert unit_of(module).split(".")[0] in RANK, f"{module}: add its layer to RANK (and to DESIGN.md's table)"
        found += violations(path.read_text(encoding="utf-8"), module)
    assert not found, "imports against the layering:\n" + "\n".join(found)


@pytest.mark.parametrize("module, source", [
    ("mralign_plugin.pipeline.fit_transitions", "from mralign_plugin.eval.plots import plot_transition_model"),
    ("mralign_plugin.pipeline.generate", "def f():\n    from mralign_plugin.eval import plots\n"),
    ("mralign_plugin.core.weights", "from mralign_plugin.annotate.rules import tag_spans"),
    ("mralign_plugin.annotate.client", "import mralign_plugin.pipeline.resumable"),
    ("mralign_plugin.reward.scorer", "from mralign_plugin.adapters.openrlhf.reward_contract import reply"),
    ("mralign_plugin.adapters.trl.kto", "from mralign_plugin.adapters.openrlhf.data import KTODataset"),
    ("mralign_plugin.adapters.openrlhf.train", "from mralign_plugin.cli.train_kto import main"),
    ("mralign_plugin.pipeline.annotate", "from ..eval import metrics"),
    ("mralign_plugin.tiny_model", "from mralign_plugin.annotate.rules import STATES"),
])
def test_the_check_catches_an_upward_import(module, source):
    assert violations(source, module), f"{module} importing up was not caught: {source!r}"


def test_the_check_allows_downward_imports():
    assert not violations("from mralign_plugin.core.formats import iter_jsonl\n"
                          "from mralign_plugin.pipeline.resumable import ResumableOutput\n"
                          "from . import metrics\n", "mralign_plugin.eval.judge")
    assert not violations("from mralign_plugin.reward.scorer import RewardScorer", "mralign_plugin.adapters.trl.grpo")
    assert not violations("from mralign_plugin.demo import run_demo", "mralign_plugin.cli.data")
