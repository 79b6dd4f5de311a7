"""``RewardScorer``: MR-ALIGN's rollout reward, framework-neutral, on top of core/reward.py.

Every framework adapter calls it: OpenRLHF's reward file and HTTP server (adapters/openrlhf/), and
any other stack's reward hook. ``scorer.score_parts(queries, prompts, labels)`` gives one
:class:`~mralign_plugin.core.reward.RewardParts` per rollout; :func:`batch_logs` their means under
``LOG_KEYS``. Per rollout: the response is cut out of the query, parsed, its thinking segments take the
states of the label's ``steps`` or else of the ``rules`` tagger, and core/reward.py combines the terms.
A sample that fails scores 0.0 and counts in ``mralign/errors``; nothing here raises on bad input.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from mralign_plugin.annotate.rules import STATES as RULES_STATES
from mralign_plugin.annotate.rules import tag_spans
from mralign_plugin.core.formats import read_transitions
from mralign_plugin.core.reward import (
    ERROR_PARTS,
    RewardConfig,
    RewardParts,
    TransitionScores,
    dense_terms,
    parse_label,
    reward_parts,
    split_query,
    strip_special_tokens,
)
from mralign_plugin.core.segment import ParsedResponse, parse_response
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy

logger = logging.getLogger("mralign.reward")

LOG_KEYS = ("mralign/transition", "mralign/outcome", "mralign/hit_gap", "mralign/n_segments", "mralign/errors")
_MAX_LOGGED_ERRORS = 20


class RewardScorer:
    """The loaded reward: config, transition model, memoised step scores, implicit models if any.

    Args:
        config: the reward config (paths already resolved).
    """

    def __init__(self, config: RewardConfig) -> None:
        self.config = config
        taxonomy = Taxonomy.load(config.taxonomy) if config.taxonomy else PAPER_TAXONOMY
        missing = [s for s in RULES_STATES if s not in taxonomy]
        if missing:
            raise ValueError(f"the rules tagger emits the paper's 15 states; the taxonomy lacks {missing}")
        self.model = read_transitions(config.transitions, taxonomy)
        self.transition_scores = TransitionScores(self.model, config.clip)
        self.implicit = None
        if config.mode == "implicit":
            from mralign_plugin.reward.implicit import ImplicitScorer

            self.implicit = ImplicitScorer(config.implicit, self.model)
        self.n_errors = 0

    def score_parts(self, queries: Sequence, prompts: Sequence | None, labels: Sequence | None) -> list[RewardParts]:
        """One :class:`RewardParts` per query; a failing sample gets zeros and its error message."""
        n = len(queries)
        prompts = prompts if prompts is not None and len(prompts) == n else [""] * n
        labels = labels if labels is not None and len(labels) == n else [None] * n
        parts: list[RewardParts] = [ERROR_PARTS] * n
        pending: list[tuple[int, _Sample]] = []  # implicit mode: scored in batches below
        for i in range(n):
            try:  # a reward function must never raise: OpenRLHF would only log it and fail later
                sample = self._prepare(queries[i], prompts[i], labels[i])
                if self.implicit is None:
                    s_trans, _ = self.transition_scores.score(sample.states, not sample.parsed.unterminated)
                    parts[i] = self._finish(sample, s_trans)
                else:
                    pending.append((i, sample))
            except Exception as e:
                parts[i] = self.error_parts(e)
        if pending:
            try:
                values = self.implicit.process_rewards(
                    [s.prompt for _, s in pending], [s.response for _, s in pending], [s.steps for _, s in pending]
                )
            except Exception as e:
                values = [e] * len(pending)
            for (i, sample), value in zip(pending, values, strict=True):
                try:
                    if isinstance(value, Exception):
                        raise value
                    parts[i] = self._finish(sample, value)
                except Exception as e:
                    parts[i] = self.error_parts(e)
        return parts

    def score_dense(self, responses: Sequence, labels: Sequence | None) -> list[tuple[RewardParts, list[tuple[int, float]]]]:
        """Per response (prompt removed): its scalar parts and the dense (character index, value) pairs that sum
        to the same reward (core/reward.py ``dense_terms``). A failing response gets zeros and ``[(0, 0.0)]``."""
        if self.implicit is not None:
            raise ValueError("the dense reward needs mode: transition (implicit mode scores whole sequences)")
        n = len(responses)
        labels = labels if labels is not None and len(labels) == n else [None] * n
        out = []
        for response, label in zip(responses, labels, strict=True):
            try:
                sample = self._prepare(response, "", label, need_paragraphs=True)
                terminated = not sample.parsed.unterminated
                s_trans, n_transitions = self.transition_scores.score(sample.states, terminated)
                values, _ = self.transition_scores.step_values(sample.states, terminated)
                parts = self._finish(sample, s_trans)
                paragraphs = ([step["paragraphs"] for step in sample.steps] if sample.steps is not None
                              else [[j] for j in range(len(sample.states))])
                out.append((parts, dense_terms(sample.parsed, len(sample.response), paragraphs, values, parts,
                                               self.config, n_transitions)))
            except Exception as e:
                out.append((self.error_parts(e), [(0, 0.0)]))
        return out

    def _prepare(self, query: object, prompt: object, label: object, need_paragraphs: bool = False) -> _Sample:
        if not isinstance(query, str):
            raise TypeError(f"query: expected a string, got {type(query).__name__}")
        prompt_text, response = split_query(query, prompt if isinstance(prompt, str) else "")
        response = strip_special_tokens(response)
        gold, steps = parse_label(label)
        parsed = parse_response(response)
        if steps is None:  # one step per thinking paragraph, tagged by the rules tagger
            states = tag_spans(response, parsed.paragraphs)
            if self.implicit is not None:
                steps = [{"paragraphs": [i], "states": list(s)} for i, s in enumerate(states)]
        else:
            states = [tuple(step["states"]) for step in steps]
            for step_states in states:  # names and sizes; raises ValueError for this sample only
                if step_states:
                    self.transition_scores.state_set(step_states)
            if self.implicit is not None or need_paragraphs:
                n = len(parsed.paragraphs)
                for step in steps:
                    paragraphs = step.get("paragraphs")
                    if not isinstance(paragraphs, list) or not all(type(p) is int and 0 <= p < n for p in paragraphs):
                        raise ValueError(f"label steps: paragraphs {paragraphs!r} are not indices of the {n} paragraphs")
        return _Sample(prompt_text, response, parsed, states, steps, gold)

    def _finish(self, sample: _Sample, process: float) -> RewardParts:
        if not math.isfinite(process):
            raise ValueError(f"process term is not finite: {process}")
        parts = reward_parts(sample.parsed, sample.gold, process, len(sample.states), self.config)
        if not math.isfinite(parts.reward):
            raise ValueError(f"reward is not finite: {parts.reward} (check the coefficients)")
        return parts

    def error_parts(self, exc: BaseException) -> RewardParts:
        """Zero parts carrying ``exc``; counted, and logged for the first few failures."""
        self.n_errors += 1
        if self.n_errors <= _MAX_LOGGED_ERRORS:
            last = "; further errors are only counted" if self.n_errors == _MAX_LOGGED_ERRORS else ""
            logger.warning("mralign reward: a sample failed (%s: %s); reward 0.0%s", type(exc).__name__, exc, last)
        return ERROR_PARTS._replace(error=f"{type(exc).__name__}: {exc}")


class _Sample(NamedTuple):
    prompt: str  # the query before the response, special tokens kept
    response: str
    parsed: ParsedResponse
    states: list[tuple[str, ...]]
    steps: list[dict] | None
    gold: list[str] | None


def batch_logs(parts: Sequence[RewardParts]) -> dict[str, float]:
    """The batch's logs under ``LOG_KEYS``: means of the terms, and ``mralign/errors`` a count."""
    transition = outcome = hit_gap = n_segments = errors = 0.0
    for p in parts:  # one pass: this runs on every reward call, most often for one rollout
        transition += p.transition
        outcome += p.outcome
        hit_gap += p.hit_gap
        n_segments += p.n_segments
        errors += p.error is not None
    n = max(len(parts), 1)
    return {
        "mralign/transition": transition / n,
        "mralign/outcome": outcome / n,
        "mralign/hit_gap": hit_gap / n,
        "mralign/n_segments": n_segments / n,
        "mralign/errors": errors,
    }


def load_scorer(path: str | Path) -> RewardScorer:
    """Read the reward config at ``path`` and load everything it names (raises on a bad config)."""
    return RewardScorer(RewardConfig.load(path))
