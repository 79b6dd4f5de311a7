"""The planted world: a closed fact table, two Markov chains over meta-reasoning states, templated traces.

Everything the experiment knows as ground truth lives here (issue 15, "The world"):

* **Facts.** ``N_ENTITIES`` invented entities, each with one value per attribute drawn with the seed, and one
  fixed *distractor* per question (another value of the same attribute): the confusion a bad trace falls into.
* **Chains.** ``P_GOOD`` and ``P_BAD`` over 8 of the paper's 15 states (plus ``<start>``, ``<stop>``). They share
  every row but two, and differ in four planted cells (``PLANTED``):

  ========================================  =======  ======  ==========================================
  cell                                       P_good   P_bad   role
  ========================================  =======  ======  ==========================================
  retrieval → self_verification              0.40     0.04    good: the recalled fact is checked
  self_verification → summarization          0.70     0.25    good: a check is followed by the conclusion
  retrieval → backtracking                   0.04     0.40    bad, the **hit gap**: the recalled gold is
                                                              replaced by the distractor
  self_verification → evaluation             0.20     0.65    bad: a check turns into weighing options
  ========================================  =======  ======  ==========================================

* **Traces.** One paragraph per step. A step's *primary* state follows the chain; with probability
  ``P_COMPANION`` the paragraph also carries a second, content-neutral *companion* state (a second sentence),
  so the step has two labels and the EM's set handling is exercised. Sentences come from short templates
  with varied wording, built from phrases the rules tagger recognises, plus the content (entity, attribute,
  the value currently believed). The states act on the belief: ``retrieval`` recalls the gold, or with
  probability ``RETRIEVAL_NOISE`` the distractor (memory is imperfect); ``self_verification`` checks and
  restores the gold; ``evaluation`` weighs the options and picks the distractor with probability
  ``EVALUATION_NOISE``; ``backtracking`` replaces the belief with the distractor. The answer is the final
  belief. So every planted cell acts on the answer: a check after a recall fixes a wrong recall, concluding
  right after a check keeps the checked gold, weighing options after a check can lose it, and a correct
  recall followed by backtracking gives a wrong answer with the gold in the thinking: the hit gap.
* **Text.** Lower-case words separated by single spaces, paragraphs by `` \\n\\n ``: the exact form a word-level
  tokenizer decodes back to, so sampled text and planted text are read by the same code.

``known_states`` reads a trace back into its steps by matching every sentence to its template: on a planted
trace it returns exactly the planted states (primary first), on a model's sample whatever the model wrote.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

from mralign_plugin.core.taxonomy import PAPER_TAXONOMY

STATES = ("framing", "decomposition", "retrieval", "comparison", "self_verification", "evaluation",
          "backtracking", "summarization")
START, STOP = "<start>", "<stop>"

_SHARED = {
    START: {"framing": 0.7, "decomposition": 0.3},
    "framing": {"decomposition": 0.3, "retrieval": 0.7},
    "decomposition": {"retrieval": 1.0},
    "comparison": {"evaluation": 0.5, "self_verification": 0.2, "summarization": 0.3},
    "evaluation": {"summarization": 0.85, "self_verification": 0.15},
    "backtracking": {"summarization": 0.5, "evaluation": 0.3, "self_verification": 0.2},
    "summarization": {STOP: 1.0},
}
_GOOD_ROWS = {
    "retrieval": {"self_verification": 0.40, "comparison": 0.2, "evaluation": 0.16, "summarization": 0.2,
                  "backtracking": 0.04},
    "self_verification": {"summarization": 0.70, "evaluation": 0.20, "backtracking": 0.1},
}
_BAD_ROWS = {
    "retrieval": {"self_verification": 0.04, "comparison": 0.2, "evaluation": 0.16, "summarization": 0.2,
                  "backtracking": 0.40},
    "self_verification": {"summarization": 0.25, "evaluation": 0.65, "backtracking": 0.1},
}
# (from, to, the class it is typical of); the first bad cell is the hit gap.
PLANTED = (("retrieval", "self_verification", "good"), ("self_verification", "summarization", "good"),
           ("retrieval", "backtracking", "bad"), ("self_verification", "evaluation", "bad"))
HIT_GAP = ("retrieval", "backtracking")
RETRIEVAL_NOISE = 0.25  # probability that a recall brings up the distractor
EVALUATION_NOISE = 0.3  # probability that weighing the options picks the distractor
P_COMPANION = 0.3  # probability that a step carries a second (companion) state
COMPANIONS = ("framing", "decomposition", "comparison", "evaluation", "summarization")  # content-neutral

ATTRIBUTES = {
    "color": ("red", "blue", "green", "amber", "violet", "grey"),
    "metal": ("iron", "copper", "silver", "tin", "zinc", "lead"),
}
_SYLLABLES = ("zor", "mel", "ka", "vin", "tu", "rasp", "lo", "quen", "bri", "dax", "fen", "oru")
N_ENTITIES = 24

# Slots: {e} entity, {a} attribute, {b} the value believed now, {g} gold, {d} distractor, {o}/{v} another
# entity and its value. Each template is a phrase the rules tagger has a cue for, plus content.
TEMPLATES = {
    "framing": ("the question asks for the {a} of {e} .", "okay so i need to find the {a} of {e} .",
                "the goal is to identify the {a} of {e} ."),
    "decomposition": ("let me break this down : first the entity , then its {a} .",
                      "step by step : first find {e} , then the {a} .",
                      "first i name the entity , next i recall the {a} ."),
    "retrieval": ("i recall that the {a} of {e} is {b} .", "from what i remember , {e} has {a} {b} .",
                  "as far as i know the {a} of {e} is {b} ."),
    "comparison": ("compared with {o} , whose {a} is {v} , {e} is different .",
                   "unlike {o} with {a} {v} , {e} differs .", "in contrast , {o} has {a} {v} ."),
    "self_verification": ("let me check : the {a} of {e} is really {g} .",
                          "let me verify : {g} is right for {e} .", "to double-check , {e} has {a} {g} ."),
    "evaluation": ("the most likely option for {e} is {b} .", "i would say {b} fits best .",
                   "among the candidates , {b} is the best fit ."),
    "backtracking": ("wait , that is wrong . actually the {a} of {e} is {d} .",
                     "on second thought , i was wrong : it is {d} .", "let me reconsider . the {a} of {e} must be {d} ."),
    "summarization": ("so the answer is {b} .", "in summary , the {a} of {e} is {b} .", "to sum up , {b} ."),
}
PROMPT = "question : what is the {a} of {e} ?"
PARAGRAPH_SEP = " \n\n "


def _matrix(rows: dict[str, dict[str, float]]) -> np.ndarray:
    """Row dict -> (K, K) matrix in the paper taxonomy's state order (K = 17); unused rows stay zero."""
    K = PAPER_TAXONOMY.num_states
    P = np.zeros((K, K))
    for src, row in rows.items():
        for dst, p in row.items():
            P[PAPER_TAXONOMY.index(src), PAPER_TAXONOMY.index(dst)] = p
    P[K - 1, K - 1] = 1.0  # <stop> absorbing, as in the structural mask
    return P


P_GOOD = _matrix({**_SHARED, **_GOOD_ROWS})  # (17, 17)
P_BAD = _matrix({**_SHARED, **_BAD_ROWS})  # (17, 17)
assert np.allclose(P_GOOD.sum(1)[[PAPER_TAXONOMY.index(s) for s in (START, *STATES)]], 1.0)
assert np.allclose(P_BAD.sum(1)[[PAPER_TAXONOMY.index(s) for s in (START, *STATES)]], 1.0)


@dataclass(frozen=True)
class Question:
    id: str
    entity: str
    attribute: str
    gold: str
    distractor: str
    other: str  # another entity, for comparison sentences
    other_value: str

    @property
    def prompt(self) -> str:
        return PROMPT.format(a=self.attribute, e=self.entity)


def make_questions(seed: int) -> list[Question]:
    """The closed world: ``N_ENTITIES`` × 2 attributes questions, values and distractors drawn with ``seed``."""
    rng = random.Random(seed)
    names: list[str] = []
    while len(names) < N_ENTITIES:
        name = "".join(rng.sample(_SYLLABLES, 2))
        if name not in names:
            names.append(name)
    table = {(e, a): rng.choice(vals) for e in names for a, vals in ATTRIBUTES.items()}
    out = []
    for e in names:
        for a, vals in ATTRIBUTES.items():
            other = rng.choice([n for n in names if n != e])
            out.append(Question(f"{e}-{a}", e, a, table[e, a], rng.choice([v for v in vals if v != table[e, a]]),
                                other, table[other, a]))
    return out


def split_questions(questions: list[Question], seed: int) -> tuple[list[Question], list[Question]]:
    """Half the questions for training (KTO data), half held out for evaluation, shuffled with ``seed``."""
    order = list(questions)
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return order[:half], order[half:]


def sample_states(P: np.ndarray, rng: random.Random, max_steps: int = 12) -> list[str]:
    """A primary-state path <start> -> ... -> <stop> of chain ``P`` (states between, at most ``max_steps``)."""
    names = PAPER_TAXONOMY.states
    path, i = [], PAPER_TAXONOMY.start
    while len(path) < max_steps:
        i = rng.choices(range(len(names)), weights=P[i])[0]
        if i == PAPER_TAXONOMY.stop:
            break
        path.append(names[i])
    return path


def _sentence(state: str, q: Question, belief: str, rng: random.Random) -> str:
    return rng.choice(TEMPLATES[state]).format(e=q.entity, a=q.attribute, b=belief, g=q.gold, d=q.distractor,
                                               o=q.other, v=q.other_value)


def render_trace(q: Question, path: list[str], rng: random.Random) -> tuple[str, list[dict]]:
    """Text of a trace for the primary states ``path`` and its annotated steps (states, confidences).

    Returns:
        ``(response, steps)``: response ``"<think> p1 \\n\\n p2 ... </think> <answer> x </answer>"``; steps in
        the annotated-trajectory format, a companion state second with a confidence drawn so that it is
        usually, not always, below the primary's (the single-label ablation then mostly keeps the primary).
    """
    belief, paragraphs, steps = q.gold, [], []
    for i, state in enumerate(path):
        if state == "retrieval":
            belief = q.distractor if rng.random() < RETRIEVAL_NOISE else q.gold
        elif state == "self_verification":
            belief = q.gold
        elif state == "backtracking" or (state == "evaluation" and rng.random() < EVALUATION_NOISE):
            belief = q.distractor
        text = _sentence(state, q, belief, rng)
        step = {"paragraphs": [i], "states": [state], "confidence": [round(rng.uniform(6.0, 10.0), 1)]}
        if rng.random() < P_COMPANION:
            companion = rng.choice([c for c in COMPANIONS if c != state])
            text += " " + _sentence(companion, q, belief, rng)
            step["states"].append(companion)
            step["confidence"].append(round(rng.uniform(3.0, 9.0), 1))
        paragraphs.append(text)
        steps.append(step)
    response = f"<think> {PARAGRAPH_SEP.join(paragraphs)} </think> <answer> {belief} </answer>"
    return response, steps


def sample_record(q: Question, good: bool, rng: random.Random, rid: str) -> dict:
    """One labelled trace of chain P_good (``good``) or P_bad, with its planted annotation and latent path."""
    path = sample_states(P_GOOD if good else P_BAD, rng)
    response, steps = render_trace(q, path, rng)
    return {"id": rid, "prompt": q.prompt, "response": response, "label": good, "gold": [q.gold],
            "steps": steps, "planted_path": path}


def sample_records(questions: list[Question], n: int, seed: int) -> list[dict]:
    """``n`` traces, half from each chain (alternating), questions drawn uniformly; deterministic for ``seed``."""
    rng = random.Random(seed)
    return [sample_record(rng.choice(questions), i % 2 == 0, rng, f"planted-{seed}-{i}") for i in range(n)]


# ---- reading a trace back -------------------------------------------------------------------------------

_SLOT = re.compile(r"\{(\w)\}")


def _shape_regex(template: str) -> re.Pattern:
    parts = _SLOT.split(template)  # literal, slot, literal, ...
    return re.compile("".join(re.escape(p) if k % 2 == 0 else r"(\S+)" for k, p in enumerate(parts)))


_SENTENCE_RES = [(state, _shape_regex(t)) for state, ts in TEMPLATES.items() for t in ts]


def _parse_sentences(paragraph: str) -> list[str] | None:
    """States of the template sentences that make up ``paragraph`` exactly, in order; None if it is not one."""
    states, rest = [], paragraph.strip()
    while rest:
        for state, regex in _SENTENCE_RES:
            m = regex.match(rest)
            if m and (m.end() == len(rest) or rest[m.end()] == " "):
                states.append(state)
                rest = rest[m.end():].lstrip(" ")
                break
        else:
            return None
    return states


def known_states(thinking_paragraphs: list[str]) -> list[dict]:
    """Steps of the known-states annotator: per paragraph its template states in text order (primary first).

    A paragraph that is not a sequence of template sentences, or holds more than two, gets no states (a
    step the model garbled; the transition model then skips it, as for any unlabelled step).
    """
    steps = []
    for i, paragraph in enumerate(thinking_paragraphs):
        states = _parse_sentences(paragraph) or []
        if len(states) > 2 or len(set(states)) < len(states):
            states = []
        steps.append({"paragraphs": [i], "states": states})
    return steps


def vocabulary(questions: list[Question]) -> list[str]:
    """Every word the world writes (templates, prompts, entities, values, tags), sorted."""
    words = {"<think>", "</think>", "<answer>", "</answer>", "\n\n"}
    for ts in TEMPLATES.values():
        for t in ts:
            words.update(w for w in _SLOT.sub("", t).split(" ") if w)
    words.update(PROMPT.replace("{a}", "").replace("{e}", "").split())
    for q in questions:
        words.update((q.entity, q.attribute))
    for vals in ATTRIBUTES.values():
        words.update(vals)
    return sorted(words)
