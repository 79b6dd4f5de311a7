"""`mralign fit-transitions`: annotated jsonl -> transitions.json (P, P⁺, P⁻) and, optionally, heatmaps.

    mralign fit-transitions annotated.jsonl -o transitions.json --plot-dir plots/
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from mralign_plugin.core.formats import FormatError, iter_jsonl, read_transitions, record_problems, write_transitions
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy
from mralign_plugin.core.transitions import fit_transition_model


class _Lines:
    """The records of a jsonl, remembering the line and record last handed out, for error messages."""

    def __init__(self, path: Path, progress: bool):
        self.path, self.progress = path, progress
        self.lineno, self.record = 0, None

    def __iter__(self) -> Iterator[dict]:
        lines = tqdm(iter_jsonl(self.path), desc="fit-transitions", unit=" rec",
                     disable=None if self.progress else True, mininterval=1.0)
        for lineno, record in lines:
            self.lineno, self.record = lineno, record
            if isinstance(record, FormatError):
                raise record
            yield record

    def error(self, exc: ValueError, taxonomy: Taxonomy) -> FormatError:
        # The fit checks the fields it reads (label, states) at almost no cost, once per distinct
        # state tuple; the full per-field check runs only here, to name the field in the message.
        problems = record_problems(self.record, taxonomy, check_paragraphs=False) if isinstance(self.record, dict) else []
        return FormatError(f"{self.path}:{self.lineno}: {problems[0] if problems else exc}")


def fit_transitions_file(
    annotated: str | Path,
    out: str | Path,
    taxonomy: Taxonomy = PAPER_TAXONOMY,
    estimator: str = "em",
    single_label: bool = False,
    plot_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Fit P (all), P⁺ (label true) and P⁻ (label false) in one pass over ``annotated`` and write ``out``.

    Returns the transitions.json dict. Raises :class:`FormatError` naming the first bad line.
    """
    lines = _Lines(Path(annotated), progress)
    try:
        model = fit_transition_model(lines, taxonomy, estimator=estimator, single_label=single_label)
    except (ValueError, KeyError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise lines.error(exc, taxonomy) from None
    write_transitions(out, model)
    if plot_dir is not None:
        from mralign_plugin.pipeline.transition_plots import plot_transition_model

        plot_transition_model(read_transitions(out, taxonomy), plot_dir)
    return model
