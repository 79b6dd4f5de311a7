"""The meta-reasoning state taxonomy (paper §3.1.2, App. B.6; method/MRALIGN.md §4.2).

State indices of the augmented space C* (§5.2): 0 = ``<start>``, 1..N = the labels in the order of
the paper's controlled vocabulary, N+1 = ``<stop>``. With the paper's 15 labels, K = 17 and
``<stop>`` = 16. Every function downstream takes a :class:`Taxonomy`, so a user-supplied label set
(YAML or JSON: a list of ``{name, group, definition}``) works everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mralign_plugin.core.config_file import read_yaml_or_json

START_NAME = "<start>"
STOP_NAME = "<stop>"
MAX_STATES_PER_STEP = 2  # |y_t| in {1, 2} (§3.2.2); 0 marks a step with no meta-reasoning (App. F)


@dataclass(frozen=True)
class Taxonomy:
    """An ordered set of meta-reasoning labels with their macro-group and definition.

    Args:
        names: the N base labels, in state-index order (label i has index i+1).
        groups: macro-strategy of each label.
        definitions: one-line definition of each label.
    """

    names: tuple[str, ...]
    groups: tuple[str, ...]
    definitions: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("taxonomy: at least one label is required")
        if not (len(self.names) == len(self.groups) == len(self.definitions)):
            raise ValueError("taxonomy: names, groups and definitions must have the same length")
        for i, name in enumerate(self.names):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"taxonomy: label {i} has an empty or non-string name")
            if name in (START_NAME, STOP_NAME):
                raise ValueError(f"taxonomy: label {i} uses the reserved name {name!r}")
        dupes = sorted({n for n in self.names if self.names.count(n) > 1})
        if dupes:
            raise ValueError(f"taxonomy: duplicate label names {dupes}")
        index = {name: i + 1 for i, name in enumerate(self.names)}
        index[START_NAME] = 0
        index[STOP_NAME] = len(self.names) + 1
        object.__setattr__(self, "_index", index)

    @property
    def num_states(self) -> int:
        """K = N + 2: the labels plus ``<start>`` and ``<stop>``."""
        return len(self.names) + 2

    @property
    def start(self) -> int:
        return 0

    @property
    def stop(self) -> int:
        return len(self.names) + 1

    @property
    def states(self) -> tuple[str, ...]:
        """All K state names in index order: ``<start>``, the labels, ``<stop>``."""
        return (START_NAME, *self.names, STOP_NAME)

    def index(self, name: str) -> int:
        """State index of a label name (``<start>``/``<stop>`` included).

        Raises:
            KeyError: naming the unknown label and listing the valid ones.
        """
        try:
            return self._index[name]
        except (KeyError, TypeError):
            raise KeyError(f"unknown state {name!r}; valid states: {', '.join(self.names)}") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._index and name not in (START_NAME, STOP_NAME)

    def group_of(self, name: str) -> str:
        return self.groups[self.index(name) - 1]

    def to_dict(self) -> list[dict[str, str]]:
        return [
            {"name": n, "group": g, "definition": d}
            for n, g, d in zip(self.names, self.groups, self.definitions, strict=True)
        ]

    @classmethod
    def from_entries(cls, entries: list[dict], source: str = "taxonomy") -> Taxonomy:
        """Build from ``[{name, group, definition}, ...]``; ``group``/``definition`` optional."""
        if not isinstance(entries, list):
            raise ValueError(f"{source}: expected a list of labels (or {{'labels': [...]}})")
        names, groups, defs = [], [], []
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"name": entry}
            if not isinstance(entry, dict) or "name" not in entry:
                raise ValueError(f"{source}: label {i}: expected an object with a 'name' field")
            names.append(entry["name"])
            groups.append(str(entry.get("group", "")))
            defs.append(str(entry.get("definition", "")))
        return cls(tuple(names), tuple(groups), tuple(defs))

    @classmethod
    def load(cls, path: str | Path) -> Taxonomy:
        """Read a taxonomy from a YAML or JSON file: a list of labels, or ``{labels: [...]}``."""
        data = read_yaml_or_json(path)
        if isinstance(data, dict):
            data = data.get("labels")
        return cls.from_entries(data, source=str(path))


_META = "Meta-cognitive Regulation"
_PROBLEM = "Problem-Solving Operations"
_KNOWLEDGE = "Knowledge Operations"
_EXPLAIN = "Explanatory & Communication"

# Paper App. B.6 definitions (paraphrased), in the controlled-vocabulary order of App. F, Figure 9.
_PAPER_LABELS = (
    ("framing", _META, "Sets up the problem representation, goals and constraints that steer later search and evaluation."),
    ("retrieval", _KNOWLEDGE, "Acquires (recalls) evidence at the point of need to ground hypotheses and fill gaps."),
    ("categorization", _KNOWLEDGE, "Assigns instances to classes via prototypes, features or rules."),
    ("decomposition", _PROBLEM, "Splits the task into sub-problems with local goals, solved and recombined."),
    ("comparison", _KNOWLEDGE, "Contrasts alternatives against explicit criteria to support a choice."),
    ("analogy", _KNOWLEDGE, "Maps relational structure from a known case onto the target problem."),
    ("case_analysis", _KNOWLEDGE, "Reasons from precedents or examples, including counterexamples."),
    ("chaining", _PROBLEM, "Links intermediate inferences step by step from premises to conclusion."),
    ("causal_reasoning", _KNOWLEDGE, "Tests cause-effect hypotheses, counterfactuals and mechanisms, beyond association."),
    ("synthesis", _KNOWLEDGE, "Combines several pieces of evidence or sub-results into one consistent conclusion."),
    ("explanation", _EXPLAIN, "States reasoning and evidence in audience-appropriate language, with assumptions and limits."),
    ("evaluation", _META, "Scores and chooses among candidate results by correctness, coherence and evidence."),
    ("self_verification", _META, "Checks intermediate claims for internal consistency and factuality before committing."),
    ("backtracking", _META, "Goes back to an earlier decision point to try another branch when the current path fails."),
    ("summarization", _EXPLAIN, "Compresses content to its salient, faithful points."),
)

PAPER_TAXONOMY = Taxonomy(
    names=tuple(n for n, _, _ in _PAPER_LABELS),
    groups=tuple(g for _, g, _ in _PAPER_LABELS),
    definitions=tuple(d for _, _, d in _PAPER_LABELS),
)

# Module constants for the paper's taxonomy (K = 17).
K = PAPER_TAXONOMY.num_states
START = PAPER_TAXONOMY.start
STOP = PAPER_TAXONOMY.stop
