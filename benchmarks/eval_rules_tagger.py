"""Agreement of the rules tagger with hand-labelled paragraphs: per-state precision / recall.

The gold file (tests/data/rules_gold.jsonl, one paragraph per line with its 1-2 states) was written
independently of the tagger. The tagger's cues come from the paper's label definitions, not from
this file, so these numbers are an honest held-out estimate (and the paper's own human-human strict
agreement is about 0.5, method/MRALIGN.md §4.6).

    python benchmarks/eval_rules_tagger.py
    python benchmarks/eval_rules_tagger.py --gold tests/data/rules_gold.jsonl --json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from mralign_plugin.annotate.agreement import agreement, format_agreement
from mralign_plugin.annotate.rules import tag_paragraph
from mralign_plugin.core.formats import iter_jsonl

GOLD = Path(__file__).resolve().parents[1] / "tests" / "data" / "rules_gold.jsonl"


def evaluate(gold_path: Path) -> dict:
    rows = [r for _, r in iter_jsonl(gold_path)]
    pairs = [(r["states"], tag_paragraph(r["paragraph"], r["position"], r["n_paragraphs"])) for r in rows]
    result = agreement(pairs)
    result["top1_in_gold"] = sum(pred[0] in ref for ref, pred in pairs) / len(pairs)
    result["predicted_sizes"] = dict(Counter(len(pred) for _, pred in pairs))
    result["gold_sizes"] = dict(Counter(len(ref) for ref, _ in pairs))
    # Baseline: always the most frequent gold state (what a tagger with no cues would score).
    majority = Counter(s for ref, _ in pairs for s in ref).most_common(1)[0][0]
    base = agreement((ref, [majority]) for ref, _ in pairs)
    result["baseline_majority"] = {"state": majority, "strict": base["strict"], "micro_f1": base["micro"]["f1"],
                                   "macro_f1": base["macro_f1"]}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gold", type=Path, default=GOLD)
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args()
    result = evaluate(args.gold)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"rules tagger vs {args.gold.name} ({result['n']} paragraphs)\n")
    print(format_agreement(result))
    b = result["baseline_majority"]
    print(f"top-1 state in gold {result['top1_in_gold']:.3f};  predicted set sizes {result['predicted_sizes']}, "
          f"gold {result['gold_sizes']}")
    print(f"baseline (always '{b['state']}'): strict {b['strict']:.3f}  micro f1 {b['micro_f1']:.3f}  "
          f"macro f1 {b['macro_f1']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
