"""Part 2 of the planted experiment, reduced, end to end: a tiny word-level Llama learns the world, the base
policy's samples go through label / annotate / fit-transitions / weigh, and plain KTO and MR-ALIGN train from
it through the trainer CLI. The test checks that training learns at all: after training, the planted good
transitions are more frequent on held-out questions than under the base policy, significantly over the
samples drawn, for both arms. It does not compare the arms (that is the experiment's finding)."""

import math
from dataclasses import replace

import pytest

from mralign_plugin.experiments.planted.run import quick_config
from mralign_plugin.experiments.planted.training import run_seed
from mralign_plugin.experiments.planted.world import PLANTED

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("openrlhf")
pytest.importorskip("deepspeed")

GOOD, BAD = (f"count/{a}->{b}" for a, b, _ in PLANTED if a == "retrieval")


def pooled(point: dict) -> tuple[float, float]:
    """(retrieval -> self_verification, retrieval -> either planted cell) over the samples of one evaluation."""
    return point[GOOD][0], point[GOOD][0] + point[BAD][0]


def z_two_proportions(k1: float, n1: float, k0: float, n0: float) -> float:
    p = (k1 + k0) / (n1 + n0)
    return (k1 / n1 - k0 / n0) / math.sqrt(p * (1 - p) * (1 / n1 + 1 / n0))


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    cfg = replace(quick_config(), eval_per_question=16)
    return run_seed(0, cfg, tmp_path_factory.mktemp("planted"))


def test_base_policy_writes_both_kinds(result):
    base = result["curves"]["128"]["kto"][0]
    assert result["sft"]["last_loss"] < result["sft"]["first_loss"]
    data = result["data"]["128"]
    assert data["pos"] > 10 and data["neg"] > 10  # both labels among the base policy's samples
    assert 0.05 < base["freq/retrieval->backtracking"] < 0.6 and 0.0 < base["freq/retrieval->self_verification"] < 0.6


@pytest.mark.parametrize("arm", ["mralign", "kto"])
def test_training_makes_the_planted_good_transitions_more_frequent(result, arm):
    curve = result["curves"]["128"][arm]
    assert [p["step"] for p in curve] == [0, 6, 12, 18, 24]
    k0, n0 = pooled(curve[0])
    k1, n1 = pooled(curve[-1])
    assert n0 > 50 and n1 > 50
    assert z_two_proportions(k1, n1, k0, n0) > 1.96, (k0 / n0, k1 / n1)
