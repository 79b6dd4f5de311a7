"""`mralign label`: positive / negative trajectories from candidates (paper §3.1.1, Table 1; method/MRALIGN.md §3, §9 items 6, 8, 9).

Per question, each draw is correct when a gold alias is contained in its extracted answer
(``<answer>…</answer>``, else the text after ``</think>``; SQuAD normalisation, core/answers.py).

* **positive** (desirable): thinking on is correct and thinking off wrong in ALL draws;
* **negative** (undesirable): the reverse in all draws; every other question is dropped.

``rule="majority"`` relaxes "all draws" to "more than half of the draws" (2 of 3) for both modes,
for small models whose draws rarely all agree; with one draw the two rules are the same.

The kept example is the first thinking-on draw that passes the filters on its thinking, among the
draws that agree with the label (a correct one for a positive, a wrong one for a negative):
paragraph count in (4, 15) and reasoning tokens in (450, 1000), strict bounds, tokens counted by
a named tokenizer (Qwen3 by default; §9 item 8). Questions are deduplicated by their normalised
text, first one kept. Every dropped question is counted under exactly one reason.

    mralign label candidates.jsonl -o trajectories.jsonl --tokenizer Qwen/Qwen3-8B
    mralign label candidates.jsonl -o trajectories.jsonl --no-filter
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from mralign_plugin.core.answers import contains_gold, normalize_answer
from mralign_plugin.core.formats import FormatError, iter_jsonl, write_jsonl
from mralign_plugin.core.segment import parse_response

# Drop reasons, in the order they are checked (the summary's columns). no_thinking: no thinking-on draw
# has a complete (closed) non-empty <think> block.
DROP_REASONS = ("malformed", "both_correct", "both_wrong", "inconsistent", "no_thinking", "paragraphs", "tokens", "duplicate")


@dataclass
class LabelOptions:
    """Filters of `mralign label` (paper §3 defaults; bounds are exclusive)."""

    min_paragraphs: int = 4
    max_paragraphs: int = 15
    min_tokens: int = 450
    max_tokens: int = 1000
    tokenizer: str = "Qwen/Qwen3-8B"
    no_filter: bool = False
    rule: str = "all"  # all | majority


def is_correct(response: str, gold: list[str]) -> bool:
    """Answer containment of any gold alias (§9 item 6), on the extracted answer."""
    return contains_gold(parse_response(response).answer, gold)


def classify(on_hits: list[bool], off_hits: list[bool], rule: str = "all") -> str:
    """``positive``, ``negative``, ``both_correct``, ``both_wrong`` or ``inconsistent``.

    Args:
        on_hits, off_hits: correctness of each thinking-on / thinking-off draw.
        rule: ``"all"`` (every draw of a mode agrees) or ``"majority"`` (more than half of them).

    Example:
        >>> classify([True, True, True], [False, False, False])
        'positive'
        >>> classify([True, False, True], [False, False, False])
        'inconsistent'
        >>> classify([True, False, True], [False, False, True], rule="majority")
        'positive'
    """
    if rule == "all":
        on = True if all(on_hits) else False if not any(on_hits) else None
        off = True if all(off_hits) else False if not any(off_hits) else None
    elif rule == "majority":
        on, off = _majority(on_hits), _majority(off_hits)
    else:
        raise ValueError(f"label rule must be all or majority, got {rule!r}")
    if on is None or off is None:
        return "inconsistent"
    return {(True, False): "positive", (False, True): "negative", (True, True): "both_correct",
            (False, False): "both_wrong"}[(on, off)]


def _majority(hits: list[bool]) -> bool | None:
    """True / False when more than half of ``hits`` are / are not correct; None on a tie."""
    correct = sum(hits)
    return True if 2 * correct > len(hits) else False if 2 * correct < len(hits) else None


def load_token_counter(name: str):
    """``count(texts) -> list[int]`` with the named tokenizer (a hub id or a local directory)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as e:  # transformers raises OSError, ValueError, ... depending on what is missing
        raise ValueError(
            f"cannot load tokenizer {name!r} for the reasoning-token filter ({type(e).__name__}); "
            "pass --tokenizer with a local directory, or --no-filter"
        ) from None

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return count


def pick_draw(draws: list[str], opts: LabelOptions, count_tokens, eligible: list[bool] | None = None) -> tuple[int, int, int] | str:
    """The first thinking-on draw passing the filters (among the ``eligible`` ones, default all), as
    ``(index, n_paragraphs, n_tokens)``; else the reason the draw that got furthest failed
    (``no_thinking``, ``paragraphs``, ``tokens``)."""
    furthest = 0
    for j, response in enumerate(draws):
        if eligible is not None and not eligible[j]:
            continue
        parsed = parse_response(response)
        if not parsed.has_thinking or parsed.unterminated:
            continue
        n_par = len(parsed.paragraphs)
        if opts.no_filter:
            return j, n_par, -1
        if not opts.min_paragraphs < n_par < opts.max_paragraphs:
            furthest = max(furthest, 1)
            continue
        n_tok = count_tokens([parsed.thinking])[0]
        if not opts.min_tokens < n_tok < opts.max_tokens:
            furthest = 2
            continue
        return j, n_par, n_tok
    return ("no_thinking", "paragraphs", "tokens")[furthest]


def label_rows(rows, opts: LabelOptions, count_tokens=None) -> tuple[list[dict], dict]:
    """Label candidate rows; returns ``(trajectories, summary)``.

    Args:
        rows: iterable of ``(line_number, candidate dict or FormatError)``.
        opts: filters.
        count_tokens: token counter (default: :func:`load_token_counter` of ``opts.tokenizer``,
            loaded only when a question reaches the token filter).

    Returns:
        The trajectories, and ``{"by_source": {source: Counter}, "total": Counter}`` where each
        Counter has ``positive``, ``negative``, ``in`` and one count per drop reason.
    """
    by_source: dict[str, Counter] = defaultdict(Counter)
    seen_questions: set[str] = set()
    trajectories: list[dict] = []
    tokenizer_holder: list = [count_tokens]

    def lazy_count(texts: list[str]) -> list[int]:
        if tokenizer_holder[0] is None:
            tokenizer_holder[0] = load_token_counter(opts.tokenizer)
        return tokenizer_holder[0](texts)

    for _lineno, row in rows:
        if isinstance(row, FormatError) or not _valid_candidate(row):
            source = row.get("source", "?") if isinstance(row, dict) else "?"
            by_source[source]["in"] += 1
            by_source[source]["malformed"] += 1
            continue
        source = str(row.get("source") or "?")
        counts = by_source[source]
        counts["in"] += 1
        gold = row["answers"]
        on, off = row["draws"]["thinking_on"], row["draws"]["thinking_off"]
        on_hits = [is_correct(r, gold) for r in on]
        verdict = classify(on_hits, [is_correct(r, gold) for r in off], opts.rule)
        if verdict not in ("positive", "negative"):
            counts[verdict] += 1
            continue
        picked = pick_draw(on, opts, lazy_count, [hit == (verdict == "positive") for hit in on_hits])
        if isinstance(picked, str):
            counts[picked] += 1
            continue
        key = normalize_answer(row["question"])
        if key in seen_questions:
            counts["duplicate"] += 1
            continue
        seen_questions.add(key)
        j, n_par, n_tok = picked
        counts[verdict] += 1
        trajectory = {
            "id": row["id"], "prompt": row.get("prompt", row["question"]), "question": row["question"],
            "response": on[j], "label": verdict == "positive", "gold": gold, "source": source, "draw": j,
            "n_paragraphs": n_par,
        }
        if n_tok >= 0:
            trajectory["n_reasoning_tokens"] = n_tok
        trajectories.append(trajectory)
    total = Counter()
    for c in by_source.values():
        total.update(c)
    return trajectories, {"by_source": dict(by_source), "total": total}


def _valid_candidate(row: dict) -> bool:
    draws = row.get("draws")
    return (
        isinstance(row.get("question"), str) and isinstance(row.get("answers"), list) and bool(row["answers"])
        and isinstance(draws, dict)
        and all(isinstance(draws.get(k), list) and draws[k] and all(isinstance(t, str) for t in draws[k])
                for k in ("thinking_on", "thinking_off"))
    )


def format_summary(summary: dict) -> str:
    """A Table-1-like text table: per source, positive / negative / total, then drops by reason."""
    head = ["source", "positive", "negative", "total", "in", *DROP_REASONS]
    lines = []
    items = sorted(summary["by_source"].items()) + [("TOTAL", summary["total"])]
    for source, c in items:
        lines.append([source, c["positive"], c["negative"], c["positive"] + c["negative"], c["in"],
                      *(c[r] for r in DROP_REASONS)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head)] + [fmt.format(*line) for line in lines]
    out.insert(len(out) - 1, "-" * len(out[0]))
    return "\n".join(out)


def label_file(candidates: str | Path, output: str | Path, opts: LabelOptions | None = None, count_tokens=None) -> dict:
    """Read candidates, write trajectories jsonl, return the summary (see :func:`label_rows`)."""
    opts = opts or LabelOptions()
    trajectories, summary = label_rows(iter_jsonl(candidates), opts, count_tokens)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(output, trajectories)
    return summary
