"""Transition-aware reward for PPO / GRPO rollouts: the terms, their combination and the config schema.

The reward of one rollout (issue 5; method/MRALIGN.md §5.2 for Eq. 7, §9.6 for answer containment):

    r = α·outcome + γ·s_trans − δ·hit_gap − ε·format

* s_trans = mean over the transitions t of the chain {<start>}, y_1, ..., y_T, {<stop>} of
  clip(log Pr(y_t | y_{t−1}, P⁺) − log Pr(y_t | y_{t−1}, P⁻), −c, c), with Pr the set-to-set
  probability of Eq. 7: the per-step log-likelihood ratio of the positive vs the negative chain model.
* outcome = 1 when a gold alias is contained in the answer (SQuAD normalisation, as ``mralign label``).
* hit_gap = 1 when the gold is contained in the thinking but not in the answer (the paper's "Mis").
* format = 1 when the thinking is unterminated (no ``</think>``) or the answer is empty.

Notation: K states (0 = ``<start>``, K−1 = ``<stop>``); y_t a set of state names (the 1–2 states of a
thinking step); c = ``clip``. P⁺ = ``trans_pos``, P⁻ = ``trans_neg`` from transitions.json.

Interpretations (not in the paper, which scores trajectories only offline):
* A truncated rollout (unterminated thinking) did not stop: its chain has no ``<stop>`` transition.
* A rollout without labelled steps (no thinking) has no chain: s_trans = 0, no evidence either way.
* Steps with no states are skipped in the chain, as in the EM and in Eq. 10 (§9.4).
* hit_gap is literal: a truncated rollout (empty answer) with the gold in its thinking has hit_gap 1.

In transition mode with the defaults, α > 2γc: shaping never ranks a wrong answer above a right one.

Example:
    >>> from mralign_plugin.core.segment import parse_response
    >>> parts = reward_parts(parse_response("<think>Paris.</think><answer>Paris</answer>"),
    ...                      gold=["paris"], transition=0.5, n_segments=1,
    ...                      config=RewardConfig(transitions="t.json"))
    >>> round(parts.reward, 6), parts.outcome, parts.hit_gap
    (1.1, 1.0, 0.0)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from mralign_plugin.core.answers import contains_gold
from mralign_plugin.core.config_file import read_yaml_or_json
from mralign_plugin.core.formats import TransitionModel
from mralign_plugin.core.segment import ParsedResponse
from mralign_plugin.core.taxonomy import MAX_STATES_PER_STEP
from mralign_plugin.core.transitions import set_transition_prob

MODES = ("transition", "implicit")


@dataclass
class ImplicitConfig:
    """The implicit process reward of Eq. 9 from an MR-ALIGN-trained checkpoint (``mode: implicit``)."""

    policy: str = field(metadata={"help": "the MR-ALIGN-trained checkpoint (HF directory or id)"})
    ref: str = field(metadata={"help": "its reference model (the base model it was trained from)"})
    beta: float = field(default=0.1, metadata={"help": "β of Eq. 9 (paper's KTO β: 0.1)"})
    batch_size: int = field(default=8, metadata={"help": "sequences per forward pass"})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available, else cpu), cpu, cuda, cuda:1"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on CUDA, fp32 on CPU), bf16, fp16 or fp32"})

    def __post_init__(self) -> None:
        for name in ("policy", "ref", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"implicit.{name}: expected a non-empty string, got {getattr(self, name)!r}")
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float) or not math.isfinite(self.beta):
            raise ValueError(f"implicit.beta: expected a finite number, got {self.beta!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"implicit.batch_size: expected a positive integer, got {self.batch_size!r}")
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"implicit.dtype: expected auto, bf16, fp16 or fp32, got {self.dtype!r}")


@dataclass
class RewardConfig:
    """The reward config (YAML / JSON): ``MRALIGN_REWARD_CONFIG``, ``mralign serve-reward --config``.

    Relative paths are resolved against the config file's directory (Ray workers run elsewhere).
    """

    transitions: str = field(metadata={"help": "transitions.json from `mralign fit-transitions` (P, P+, P-)"})
    taxonomy: str | None = field(default=None, metadata={"help": "label set (YAML/JSON); default the paper's 15"})
    mode: str = field(default="transition", metadata={"help": "transition (model-free) or implicit (Eq. 9)"})
    alpha: float = field(default=1.0, metadata={"help": "α, weight of the outcome (gold in the answer)"})
    gamma: float = field(default=0.2, metadata={"help": "γ, weight of the process term (s_trans or Eq. 9)"})
    delta: float = field(default=0.5, metadata={"help": "δ, penalty when the gold is in the thinking only"})
    epsilon: float = field(default=0.5, metadata={"help": "ε, penalty for unterminated thinking / empty answer"})
    clip: float = field(default=1.0, metadata={"help": "c, clip of each step's log-ratio (1 = log e, as Eq. 10)"})
    implicit: ImplicitConfig | None = field(default=None, metadata={"help": "models for mode: implicit"})

    def __post_init__(self) -> None:
        if not isinstance(self.transitions, str) or not self.transitions:
            raise ValueError("transitions: a path to transitions.json is required")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("alpha", "gamma", "delta", "epsilon", "clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
            setattr(self, name, float(value))
        if self.clip <= 0:
            raise ValueError(f"clip: must be > 0, got {self.clip}")
        if isinstance(self.implicit, dict):
            self.implicit = _from_mapping(ImplicitConfig, self.implicit, "implicit.")
        elif self.implicit is not None and not isinstance(self.implicit, ImplicitConfig):
            raise ValueError(f"implicit: expected a section with policy and ref, got {self.implicit!r}")
        if self.mode == "implicit" and self.implicit is None:
            raise ValueError("mode implicit needs an implicit section with policy and ref")

    @classmethod
    def from_dict(cls, data: dict, base_dir: str | Path | None = None) -> RewardConfig:
        """Build from a mapping; unknown keys raise naming the closest valid ones; paths resolved on ``base_dir``."""
        config = _from_mapping(cls, data, "")
        if base_dir is not None:
            config.transitions = str(Path(base_dir, config.transitions))
            if config.taxonomy:
                config.taxonomy = str(Path(base_dir, config.taxonomy))
        return config

    @classmethod
    def load(cls, path: str | Path) -> RewardConfig:
        """Read a YAML (``.yaml``/``.yml``) or JSON reward config."""
        path = Path(path)
        data = read_yaml_or_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a reward config is a mapping of keys, got {type(data).__name__}")
        try:
            return cls.from_dict(data, base_dir=path.resolve().parent)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None


def _from_mapping(cls, data: dict, prefix: str):
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), names, n=2, cutoff=0.6)
            hints.append(f"{prefix}{key}" + (f" (did you mean {' or '.join(prefix + c for c in close)}?)" if close else ""))
        raise ValueError(f"unknown key(s): {', '.join(hints)}; valid: {', '.join(prefix + n for n in names)}")
    missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in data]
    if missing:
        raise ValueError(f"missing key(s): {', '.join(prefix + m for m in missing)}")
    return cls(**data)


# ---- the transition score s_trans ------------------------------------------------------------------------


class TransitionScores:
    """Clipped per-step log-ratios log Pr(J | I, P⁺) − log Pr(J | I, P⁻) (Eq. 7), memoised per (I, J).

    A rollout is scored with a few dictionary look-ups: each distinct pair of state sets is computed
    once with Eq. 7 (``set_transition_prob``) and kept. The memo is bounded by the number of distinct
    pairs of sets of at most ``MAX_STATES_PER_STEP`` states.

    Args:
        model: the transition model (P⁺ and P⁻ are used).
        clip: c, each log-ratio is clipped to [−c, c].
    """

    def __init__(self, model: TransitionModel, clip: float = 1.0) -> None:
        self.taxonomy = model.taxonomy
        self.trans_pos = model.trans_pos  # (K, K)
        self.trans_neg = model.trans_neg  # (K, K)
        self.clip = float(clip)
        # Boundary keys hold a None so that no step's names (strings only) can ever equal them.
        self.start: tuple = (None, "<start>")
        self.stop: tuple = (None, "<stop>")
        self._sets: dict[tuple[str, ...], frozenset[int]] = {
            self.start: frozenset((self.taxonomy.start,)),
            self.stop: frozenset((self.taxonomy.stop,)),
        }
        self._memo: dict[tuple[tuple[str, ...], tuple[str, ...]], float] = {}

    def state_set(self, names: tuple[str, ...]) -> frozenset[int]:
        """State indices of a step's names; raises ValueError for an unknown name or too many states."""
        indices = self._sets.get(names)
        if indices is None:
            if len(names) > MAX_STATES_PER_STEP:
                raise ValueError(f"a step has at most {MAX_STATES_PER_STEP} states, got {list(names)}")
            if not all(name in self.taxonomy for name in names):
                bad = [name for name in names if name not in self.taxonomy]
                raise ValueError(f"unknown state(s) {bad}; valid: {', '.join(self.taxonomy.names)}")
            indices = frozenset(self.taxonomy.index(name) for name in names)
            self._sets[names] = indices
        return indices

    def step(self, prev: tuple[str, ...], cur: tuple[str, ...]) -> float:
        """clip(log Pr(cur | prev, P⁺) − log Pr(cur | prev, P⁻), −c, c).

        Where one probability is 0 (a masked cell) the ratio's limit is taken: ±c, and 0 when both are.
        """
        key = (prev, cur)
        value = self._memo.get(key)
        if value is None:
            from_set, to_set = self.state_set(prev), self.state_set(cur)
            pos = set_transition_prob(self.trans_pos, from_set, to_set)
            neg = set_transition_prob(self.trans_neg, from_set, to_set)
            if pos > 0 and neg > 0:
                value = min(max(math.log(pos) - math.log(neg), -self.clip), self.clip)
            else:
                value = self.clip if pos > 0 else (-self.clip if neg > 0 else 0.0)
            self._memo[key] = value
        return value

    def score(self, step_states: Sequence[Sequence[str]], terminated: bool = True) -> tuple[float, int]:
        """s_trans of one rollout: the mean clipped log-ratio over its chain's transitions.

        Args:
            step_states: y_1..y_T, the state names of each step (empty steps are skipped).
            terminated: the thinking was closed; only then is the y_T → <stop> transition counted.

        Returns:
            ``(s_trans, n_transitions)``; ``(0.0, 0)`` when no step has states.
        """
        prev = self.start
        total, n = 0.0, 0
        memo = self._memo
        for states in step_states:
            if not states:
                continue
            cur = states if type(states) is tuple else tuple(states)
            value = memo.get((prev, cur))
            total += self.step(prev, cur) if value is None else value
            n += 1
            prev = cur
        if n == 0:
            return 0.0, 0
        if terminated:
            total += self.step(prev, self.stop)
            n += 1
        return total / n, n


    def step_values(self, step_states: Sequence[Sequence[str]], terminated: bool = True) -> tuple[list[float], float]:
        """The terms of :meth:`score`, per step: what the dense reward places on each segment.

        Returns:
            ``(values, stop)``: values[t] is the clipped log-ratio of the transition into step t (0.0 for a
            step with no states, which the chain skips), stop that of y_T → ``<stop>`` (0.0 when the thinking
            is unterminated or no step has states). s_trans = (Σ values + stop) / n_transitions (:meth:`score`).
        """
        prev, values = self.start, []
        for states in step_states:
            if not states:
                values.append(0.0)
                continue
            cur = tuple(states)
            values.append(self.step(prev, cur))
            prev = cur
        stop = self.step(prev, self.stop) if terminated and prev is not self.start else 0.0
        return values, stop


# ---- outcome, hit gap, format ----------------------------------------------------------------------------

class RewardParts(NamedTuple):
    """One rollout's reward and its terms (what ``extra_logs`` reports); a named tuple, built on every call."""

    reward: float
    score: float  # OpenRLHF's "scores" (dynamic filtering): the outcome when gold is known, else the reward
    transition: float  # the process term: s_trans, or the Eq. 9 implicit reward in implicit mode
    outcome: float
    hit_gap: float
    n_segments: int
    error: str | None = None


ERROR_PARTS = RewardParts(reward=0.0, score=0.0, transition=0.0, outcome=0.0, hit_gap=0.0, n_segments=0)


def reward_parts(
    parsed: ParsedResponse,
    gold: Sequence[str] | None,
    transition: float,
    n_segments: int,
    config: RewardConfig,
) -> RewardParts:
    """r = α·outcome + γ·process − δ·hit_gap − ε·format for one parsed rollout.

    Args:
        parsed: ``parse_response`` of the response (prompt and special tokens removed).
        gold: gold aliases, or None when the label carries none (outcome and hit_gap are then 0).
        transition: the process term (s_trans from :class:`TransitionScores`, or Eq. 9).
        n_segments: thinking segments (steps) of the rollout, reported as is.
        config: the coefficients.
    """
    outcome = hit_gap = 0.0
    if gold:
        outcome = 1.0 if contains_gold(parsed.answer, gold) else 0.0
        if not outcome and parsed.has_thinking and contains_gold(parsed.thinking, gold):
            hit_gap = 1.0
    bad_format = 1.0 if (parsed.unterminated or not parsed.answer) else 0.0
    reward = (
        config.alpha * outcome + config.gamma * transition - config.delta * hit_gap - config.epsilon * bad_format
    )
    return RewardParts(
        reward=reward,
        score=outcome if gold else reward,
        transition=transition,
        outcome=outcome,
        hit_gap=hit_gap,
        n_segments=n_segments,
    )


def dense_terms(
    parsed: ParsedResponse,
    response_len: int,
    steps_paragraphs: Sequence[Sequence[int]],
    values: Sequence[float],
    parts: RewardParts,
    config: RewardConfig,
    n_transitions: int,
) -> list[tuple[int, float]]:
    """The reward of one rollout as (character index, value) pairs that sum to ``parts.reward`` (dense reward).

    Segment t's share of the process term, γ·values[t] / n_transitions, sits on the last character of its last
    paragraph; the rest (α·outcome − δ·hit_gap − ε·format and γ·stop / n_transitions) on the last character
    of the response. Interpretation (the paper defines no online reward): the transition *into* a segment is
    credited to that segment, the closing transition to the answer.

    Args:
        parsed: the parsed response.
        response_len: its length in characters.
        steps_paragraphs: each step's paragraph indices (into ``parsed.paragraphs``).
        values: the per-step terms of :meth:`TransitionScores.step_values` (its ``stop`` term reaches the
            final pair through ``parts.reward``).
        parts: the scalar reward of the same rollout (``reward_parts`` with s_trans).
        config: the coefficients (γ).
        n_transitions: the chain's transition count (from :meth:`TransitionScores.score`); 0 = no chain.

    Returns:
        The segments' pairs in step order, then the final one, at ``max(response_len − 1, 0)``.
    """
    end = max(response_len - 1, 0)
    pairs, process = [], 0.0
    if n_transitions:
        scale = config.gamma / n_transitions
        for paragraphs, value in zip(steps_paragraphs, values, strict=True):
            if value and paragraphs:
                share = scale * value
                pairs.append((parsed.paragraphs[max(paragraphs)][1] - 1, share))  # the segment's last character
                process += share
    pairs.append((end, parts.reward - process))  # the outcome terms and the closing transition
    return pairs


# ---- inputs as OpenRLHF passes them -----------------------------------------------------------------------

# Special tokens a decoded query keeps (skip_special_tokens=False): ChatML / Llama-3 <|...|>,
# DeepSeek <｜...｜> (full-width bars), SentencePiece </s>, Gemma <eos> / <end_of_turn>.
_SPECIAL_TOKEN = re.compile(r"<\|[^<>|\n]{1,64}\|>|<｜[^<>｜\n]{1,64}｜>|</s>|<eos>|<end_of_turn>")
_QUERY_HEAD = 16  # characters of a query searched for in its prompt when the query does not start with it
_PROMPT_TAIL = 64  # characters of the prompt searched for in the query, last resort


def split_query(query: str, prompt: str) -> tuple[str, str]:
    """``(prompt part, response part)`` of OpenRLHF's ``query`` (the decoded prompt + response).

    The query starts with the prompt unless OpenRLHF cut the prompt from the left to fit ``max_len``:
    then it starts with the prompt's end, found by matching the query's first characters inside the
    prompt; failing that (a character split by the cut decodes to U+FFFD), the response follows the
    first occurrence of the prompt's last characters. Otherwise the whole query is the response.
    """
    if not prompt or query.startswith(prompt):
        return query[: len(prompt)], query[len(prompt) :]
    head = query[:_QUERY_HEAD]
    k = prompt.find(head)
    while k >= 0:  # the longest suffix of the prompt that the query starts with
        if query.startswith(prompt[k:]):
            return query[: len(prompt) - k], query[len(prompt) - k :]
        k = prompt.find(head, k + 1)
    tail = prompt[-_PROMPT_TAIL:]
    at = query.find(tail)
    cut = at + len(tail) if at >= 0 else 0
    return query[:cut], query[cut:]


def strip_special_tokens(text: str) -> str:
    """``text`` without the special tokens a decoded query keeps (``skip_special_tokens=False``).

    Example:
        >>> prompt, response = split_query("<|im_start|>user\\nQ?<|im_end|>\\n<think>A</think>B<|im_end|>",
        ...                                "<|im_start|>user\\nQ?<|im_end|>\\n")
        >>> strip_special_tokens(response)
        '<think>A</think>B'
    """
    i = text.find("<")
    while i >= 0:  # up to the first token, a look at each "<" is cheaper than the regex over all the text
        if _SPECIAL_TOKEN.match(text, i):
            return text[:i] + _SPECIAL_TOKEN.sub("", text[i:])
        i = text.find("<", i + 1)
    return text


def parse_label(label: object) -> tuple[list[str] | None, list[dict] | None]:
    """Gold aliases and annotated steps from a dataset label (OpenRLHF ``--data.label_key``).

    Accepted: None or "" (nothing); a string or a number (one gold answer); a list of strings (gold
    aliases); a mapping with optional ``gold`` (string or list of strings) and ``steps`` (the
    annotated-trajectory format: ``[{"paragraphs": [0], "states": ["framing"]}, ...]``). Other keys
    of a mapping are ignored; a None value counts as absent (datasets fill missing columns so).

    Returns:
        ``(gold, steps)``; each None when absent. Steps are checked for shape, not for state names.

    Raises:
        ValueError: a label of another type, or a malformed ``gold`` / ``steps``.
    """
    if label is None or isinstance(label, str | int | float | list) and not isinstance(label, bool):
        return _gold_aliases(label), None
    if isinstance(label, dict):
        steps = label.get("steps")
        if steps is not None:
            if not isinstance(steps, list) or not all(
                isinstance(s, dict) and isinstance(s.get("states"), list) and all(isinstance(n, str) for n in s["states"])
                for s in steps
            ):
                raise ValueError("label steps: expected a list of {paragraphs, states: [names]}")
        return _gold_aliases(label.get("gold")), steps
    raise ValueError(f"label: expected a gold string, a list of aliases or a mapping, got {type(label).__name__}")


def _gold_aliases(gold: object) -> list[str] | None:
    if gold is None or gold == "":
        return None
    if isinstance(gold, str):
        return [gold]
    if isinstance(gold, int | float) and not isinstance(gold, bool):
        if not math.isfinite(gold):
            raise ValueError(f"gold: not a finite number: {gold!r}")
        return [str(gold)]
    if isinstance(gold, list) and all(isinstance(g, str) for g in gold):
        return list(gold) or None
    raise ValueError("gold: expected a string or a list of strings")
