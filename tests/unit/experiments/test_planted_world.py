"""The planted world: deterministic for a seed, known-states reading gives back the planted states, and
its text goes through the project's own parser and answer matching as the world intends."""

import random

import numpy as np

from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
from mralign_plugin.experiments.planted import world
from mralign_plugin.pipeline.label import is_correct


def paragraphs(response: str) -> list[str]:
    return [response[a:b] for a, b in parse_response(response).paragraphs]


def test_generator_is_deterministic_for_a_seed():
    a = world.sample_records(world.make_questions(3), 50, seed=3)
    b = world.sample_records(world.make_questions(3), 50, seed=3)
    c = world.sample_records(world.make_questions(4), 50, seed=4)
    assert a == b
    assert [r["response"] for r in a] != [r["response"] for r in c]


def test_known_states_give_back_exactly_the_planted_states():
    records = world.sample_records(world.make_questions(0), 2000, seed=0)
    two = 0
    for r in records:
        read = world.known_states(paragraphs(r["response"]))
        assert [s["states"] for s in read] == [s["states"] for s in r["steps"]], r["id"]
        assert [s["states"][0] for s in read] == r["planted_path"]
        two += sum(len(s["states"]) == 2 for s in read)
    assert 0.2 < two / sum(len(r["steps"]) for r in records) < 0.4  # P_COMPANION = 0.3 of steps carry two labels


def test_garbled_paragraph_gets_no_states():
    steps = world.known_states(["i recall that the color of zorvin is red .", "color the i recall", ""])
    assert [s["states"] for s in steps] == [["retrieval"], [], []]


def test_chains_are_row_stochastic_and_differ_only_in_the_planted_rows():
    rows = [PAPER_TAXONOMY.index(s) for s in (world.START, *world.STATES)]
    for P in (world.P_GOOD, world.P_BAD):
        assert np.allclose(P[rows].sum(1), 1.0)
        assert P[:, PAPER_TAXONOMY.start].sum() == 0  # nothing enters <start>
    differ = {(PAPER_TAXONOMY.states[i], PAPER_TAXONOMY.states[j])
              for i, j in zip(*np.nonzero(np.abs(world.P_GOOD - world.P_BAD) > 1e-12), strict=True)}
    assert differ == {(a, b) for a, b, _ in world.PLANTED}


def test_states_act_on_the_answer_as_documented():
    q = world.make_questions(1)[0]
    hit_gaps = 0
    for seed in range(40):
        wrong, _ = world.render_trace(q, ["framing", "retrieval", "backtracking", "summarization"], random.Random(seed))
        assert not is_correct(wrong, [q.gold]) and is_correct(wrong, [q.distractor])  # backtracking: distractor
        hit_gaps += q.gold in parse_response(wrong).thinking.split()  # gold recalled, then dropped: the hit gap
        right, _ = world.render_trace(q, ["framing", "retrieval", "self_verification", "summarization"],
                                      random.Random(seed))
        assert is_correct(right, [q.gold])  # a check restores the gold whatever was recalled
    assert 20 < hit_gaps < 40  # the recall is right with probability 1 - RETRIEVAL_NOISE


def test_bad_chain_answers_wrong_more_often():
    records = world.sample_records(world.make_questions(2), 4000, seed=2)
    wrong = {lab: np.mean([not is_correct(r["response"], r["gold"]) for r in records if r["label"] is lab])
             for lab in (True, False)}
    assert wrong[False] > wrong[True] + 0.15


def test_vocabulary_covers_every_word_written():
    qs = world.make_questions(5)
    vocab = set(world.vocabulary(qs))
    for r in world.sample_records(qs, 500, seed=5):
        assert set((r["prompt"] + " " + r["response"]).split(" ")) <= vocab
