"""LongFact long-form factuality via VeriScore (§7.2; VeriScore: Song et al. 2024, arXiv 2406.19276).

VeriScore is **not** reimplemented here: it extracts claims with an LLM, searches evidence with
Serper and verifies each claim with an LLM. We write its input, optionally run it, and compute
F1@K from its per-claim output ourselves:

* C(r): the distinct claims extracted from response r ("No verifiable claim." is none); #Claims = |C(r)|;
* S(r) = number of claims in C(r) whose verification result is "supported";
* P(r) = S / |C| (0 when |C| = 0); R_K(r) = min(S / K, 1);
* F1@K(r) = 2 P R_K / (P + R_K) if S > 0 else 0; the reported F1@K is 100 · the mean over responses;
* K = the median of |C(r)| over the responses scored together (VeriScore takes the element at
  index n // 2 of the sorted counts, the upper median for even n; so do we). ``mralign report``
  pools the responses of all runs it combines, as VeriScore pools all models of one domain.

The hook, step by step (RUN = the `mralign eval` output directory):

1. ``mralign eval`` writes ``RUN/veriscore/NAME__MODE.jsonl`` in VeriScore's input format, one line
   per prompt: ``question`` (the LongFact prompt), ``response`` (the final answer only; the thinking
   is not scored), ``model``, ``prompt_source`` and our ``id``.
2. Run VeriScore on it (``pip install veriscore``, ``python -m spacy download en_core_web_sm``, its
   ``prompt/`` folder in the working directory, ``demos/few_shot_examples.jsonl`` under the data
   directory, and the OpenAI and Serper keys its README names)::

       python -m veriscore.veriscore --data_dir RUN/veriscore --input_file NAME__MODE.jsonl \\
           --output_dir RUN/veriscore --model_name_extraction gpt-4-0125-preview --model_name_verification gpt-4o

   or give ``mralign eval --veriscore-home DIR`` (a VeriScore checkout: ``DIR/prompt``,
   ``DIR/data/demos``) and it runs exactly that command for you, in DIR.
3. Rerun the same ``mralign eval`` command: generations are reused, and it reads
   ``RUN/veriscore/model_output/verification_NAME__MODE_3.jsonl`` (label_n = 3 by default).

Output format read (VeriScore's ``verify_claims`` / ``veriscore`` output, one JSON object per
response): ``question``, ``response``, ``abstained``, ``all_claims`` (or ``all_claim_lst``) and
``claim_verification_result``, either a list of ``{"claim", "verification_result"}`` or a mapping
claim -> ``{"verification_result": ...}``. The paper does not name VeriScore's models or search
backend (§9 item 17); VeriScore's defaults are used.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mralign_plugin.core.formats import FormatError, iter_jsonl
from mralign_plugin.eval.metrics import bootstrap_ci

NO_CLAIM = "No verifiable claim."
DEFAULT_EXTRACTION_MODEL = "gpt-4-0125-preview"  # VeriScore's defaults
DEFAULT_VERIFICATION_MODEL = "gpt-4o"


def input_stem(name: str, mode: str) -> str:
    """File stem of a VeriScore input. VeriScore drops every dot of the file name, so we use none.

    Example:
        >>> input_stem("longfact.v1", "thinking_on")
        'longfact_v1__thinking_on'
    """
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{name}__{mode}")


def output_path(veriscore_dir: str | Path, stem: str, label_n: int = 3) -> Path:
    """Where VeriScore writes the per-claim verification of ``stem``.jsonl."""
    return Path(veriscore_dir) / "model_output" / f"verification_{stem}_{label_n}.jsonl"


def input_rows(rows: Sequence[dict], model: str, prompt_source: str = "longfact") -> list[dict]:
    """VeriScore input rows from scored predictions (``{id, question, answer}``: answer = y_a)."""
    return [{"question": r["question"], "response": r["answer"], "model": model, "prompt_source": prompt_source,
             "id": r["id"]} for r in rows]


def command(input_file: str | Path, veriscore_dir: str | Path, extraction_model: str = DEFAULT_EXTRACTION_MODEL,
            verification_model: str = DEFAULT_VERIFICATION_MODEL, label_n: int = 3,
            python: str = sys.executable) -> list[str]:
    """The VeriScore end-to-end command (argv) for one input file in ``veriscore_dir``."""
    return [python, "-m", "veriscore.veriscore", "--data_dir", str(veriscore_dir), "--input_file", Path(input_file).name,
            "--output_dir", str(veriscore_dir), "--model_name_extraction", extraction_model,
            "--model_name_verification", verification_model, "--label_n", str(label_n)]


def run_veriscore(argv: list[str], veriscore_home: str | Path, veriscore_dir: str | Path) -> None:
    """Run VeriScore in ``veriscore_home`` (it reads ``prompt/`` from its working directory).

    ``argv`` comes from :func:`command` with an absolute ``veriscore_dir``.

    Links ``veriscore_home/data/demos`` into ``veriscore_dir`` when the latter has no ``demos``.

    Raises:
        RuntimeError: VeriScore exited with an error (its last output lines are in the message).
    """
    home, vdir = Path(veriscore_home).resolve(), Path(veriscore_dir).resolve()
    demos = vdir / "demos"
    if not demos.exists() and (home / "data" / "demos").is_dir():
        demos.symlink_to(home / "data" / "demos", target_is_directory=True)
    proc = subprocess.run(argv, cwd=home, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        raise RuntimeError(f"VeriScore failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")


def claim_counts(record: dict) -> tuple[int, int]:
    """``(S, |C|)`` of one VeriScore output record: supported and distinct extracted claims."""
    if record.get("abstained"):
        return 0, 0
    claims = record.get("all_claims", record.get("all_claim_lst"))
    verdicts: dict[str, bool] = {}
    result = record.get("claim_verification_result") or []
    if isinstance(result, dict):
        result = [{"claim": c, "verification_result": v.get("verification_result") if isinstance(v, dict) else v}
                  for c, v in result.items()]
    for entry in result:
        if isinstance(entry, dict) and isinstance(entry.get("claim"), str):
            label = str(entry.get("verification_result", "")).strip().lower()
            verdicts[entry["claim"].strip()] = verdicts.get(entry["claim"].strip(), False) or label == "supported"
    if claims is None:
        claims = list(verdicts)
    distinct = {c.strip() for c in claims if isinstance(c, str) and c.strip() and c.strip() != NO_CLAIM}
    return sum(1 for c in distinct if verdicts.get(c)), len(distinct)


def read_output(path: str | Path) -> list[dict]:
    """Per response of a VeriScore output file: ``{question, supported, claims, abstained}``."""
    out = []
    for _, record in iter_jsonl(path):
        if isinstance(record, FormatError):
            raise record
        supported, claims = claim_counts(record)
        out.append({"question": str(record.get("question", "")).strip(), "id": record.get("id"),
                    "supported": supported, "claims": claims, "abstained": bool(record.get("abstained"))})
    return out


def match_to_items(veriscore_rows: list[dict], items: Sequence[dict]) -> list[dict]:
    """Attach our ids to VeriScore rows by stripped question text (VeriScore keeps no id), in order."""
    by_question: dict[str, list[str]] = {}
    for it in items:
        by_question.setdefault(it["question"].strip(), []).append(it["id"])
    matched = []
    for row in veriscore_rows:
        ids = by_question.get(row["question"])
        if ids:
            matched.append({**row, "id": ids.pop(0)})
    return matched


def median_k(claims: Sequence[int]) -> int:
    """K: the median number of claims as VeriScore takes it (sorted, index n // 2).

    Example:
        >>> median_k([3, 9, 5, 1])
        5
    """
    if not claims:
        raise ValueError("K is undefined without responses")
    return sorted(claims)[len(claims) // 2]


def f1_at_k(supported: int, claims: int, k: int) -> float:
    """F1@K of one response (in [0, 1]).

    Example:
        >>> round(f1_at_k(supported=4, claims=5, k=8), 4)  # P = 0.8, R = 0.5
        0.6154
        >>> f1_at_k(0, 7, 8)
        0.0
    """
    if supported <= 0 or k <= 0:
        return 0.0
    precision = supported / claims
    recall = min(supported / k, 1.0)
    return 2 * precision * recall / (precision + recall)


def summarize_longfact(counts: Sequence[tuple[int, int]], k: int | None = None, n_items: int | None = None,
                       n_resamples: int = 1000, seed: int = 0) -> dict:
    """F1@K (percent, with a bootstrap 95 % CI) and #Claims over responses.

    Args:
        counts: ``(S, |C|)`` per response.
        k: K; default the median of the responses' claim counts.
        n_items: number of prompts evaluated (to report responses VeriScore did not return).

    Returns:
        ``{n, n_scored, k, f1_at_k, f1_at_k_ci, claims_mean, supported_mean, precision_mean}``.
        #Claims in the table is ``claims_mean`` (interpretation: the paper prints an integer per method).
    """
    n_scored = len(counts)
    out = {"n": n_items if n_items is not None else n_scored, "n_scored": n_scored}
    if not counts:
        return {**out, "k": k, "f1_at_k": None, "f1_at_k_ci": None, "claims_mean": None, "supported_mean": None,
                "precision_mean": None}
    k = median_k([c for _, c in counts]) if k is None else k
    f1 = np.array([f1_at_k(s, c, k) for s, c in counts])  # (n,)
    lo, hi = bootstrap_ci(f1, n_resamples=n_resamples, seed=seed)
    return {**out, "k": int(k), "f1_at_k": round(100 * float(f1.mean()), 4),
            "f1_at_k_ci": [round(100 * float(lo), 4), round(100 * float(hi), 4)],
            "claims_mean": round(float(np.mean([c for _, c in counts])), 4),
            "supported_mean": round(float(np.mean([s for s, _ in counts])), 4),
            "precision_mean": round(100 * float(np.mean([s / c if c else 0.0 for s, c in counts])), 4)}
