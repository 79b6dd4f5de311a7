"""The planted policy's pieces: the word-level tokenizer gives the world's text back exactly, the measures
count transitions as defined, and the report aggregates and plots over seeds."""

import math
import random

import numpy as np
import pytest

from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
from mralign_plugin.experiments.planted import policy, report, world


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return policy.build_model(tmp_path_factory.mktemp("planted-init"), world.make_questions(0), seed=0)


def test_tokenizer_round_trips_the_world_text_with_offsets(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    for r in world.sample_records(world.make_questions(0), 50, seed=0):
        enc = tok(r["response"], add_special_tokens=False, return_offsets_mapping=True)
        assert tok.unk_token_id not in enc["input_ids"]
        assert tok.decode(enc["input_ids"]) == r["response"]
        assert all(r["response"][a:b] == t for (a, b), t in
                   zip(enc["offset_mapping"], tok.convert_ids_to_tokens(enc["input_ids"]), strict=True))


def test_sampling_from_the_untrained_model_is_measurable(model_dir):
    qs = world.make_questions(0)[:3]
    samples = policy.sample(model_dir, qs, per_question=2, seed=0, max_new_tokens=8)
    assert len(samples) == 6 and all(s["question"] in qs for s in samples)
    m = policy.measure(samples)
    assert m["n"] == 6 and 0.0 <= m["acc"] <= 1.0


def test_measure_counts_planted_transitions_of_known_traces():
    qs = world.make_questions(0)
    paths = [["framing", "retrieval", "self_verification", "summarization"],
             ["framing", "retrieval", "backtracking", "summarization"]]
    samples = []
    for k, path in enumerate(paths):
        response, _ = world.render_trace(qs[0], path, random.Random(k))
        samples.append({"question": qs[0], "response": response})
    assert [policy.primary_path(s["response"]) for s in samples] == paths
    m = policy.measure(samples)
    assert m["freq/retrieval->self_verification"] == 0.5 and m["freq/retrieval->backtracking"] == 0.5
    assert m["count/self_verification->summarization"] == [1.0, 1.0]
    assert m["acc"] == 0.5  # the backtracking trace answers the distractor


def test_row_distance_is_zero_on_the_chain_itself():
    K = PAPER_TAXONOMY.num_states
    counts = np.zeros((K, K))
    r = PAPER_TAXONOMY.index("retrieval")
    counts[r] = world.P_GOOD[r] * 100  # 100 visits of retrieval, exactly at P_good's rates
    assert policy.row_distance(counts, world.P_GOOD) == pytest.approx(0.0)
    assert policy.row_distance(counts, world.P_BAD) == pytest.approx(0.36)  # TV of the retrieval rows
    assert math.isnan(policy.row_distance(np.zeros((K, K)), world.P_GOOD))


def _result(seed: int, acc: float) -> dict:
    point = {m: acc for m in report.CURVE_METRICS}
    return {"seed": seed, "curves": {"128": {"kto": [{"step": 0, **point}, {"step": 6, **point}]}}}


def test_report_aggregates_over_seeds_and_plots(tmp_path):
    curves = report.aggregate_curves([_result(0, 0.5), _result(1, 0.7)])
    mean, lo, hi = curves["128"]["kto"][1]["acc"]
    assert mean == pytest.approx(0.6) and 0.5 <= lo <= mean <= hi <= 0.7
    table = report.training_table(curves)
    assert "| 128 | base | 0 |" in table and "KTO (weights off)" in table
    png = report.plot_curves(curves, tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
