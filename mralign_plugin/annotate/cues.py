"""The rules tagger's definition: its cue phrases, their weights, and the global knobs (method/MRALIGN.md §4.2).

Every cue adds a weight to one or more of the paper's 15 states. ``CUE_RE`` and ``ENTITY_RE`` are the
reference semantics of finding cues and entities in one paragraph; annotate/rules.py finds the same
matches faster (a byte view, a trie walk in C or an automaton) and picks the states. Property tests
hold the fast paths to these definitions.
"""

from __future__ import annotations

import re

from mralign_plugin.core.taxonomy import PAPER_TAXONOMY

STATES = PAPER_TAXONOMY.names  # the tagger's cues are written for the paper's 15 labels
STATE_INDEX = {name: i for i, name in enumerate(STATES)}

# Tie-break order: frequency in the paper's training data (Table 7), most frequent first.
FREQ_ORDER = (
    "retrieval", "self_verification", "framing", "evaluation", "summarization", "backtracking",
    "synthesis", "comparison", "explanation", "chaining", "case_analysis", "decomposition",
    "causal_reasoning", "categorization", "analogy",
)
TIE_BREAK = [0.0] * len(STATES)
for _rank, _name in enumerate(FREQ_ORDER):
    TIE_BREAK[STATE_INDEX[_name]] = (len(STATES) - _rank) * 1e-6

# The four global knobs below were picked once on aggregate scores of half of the hand-labelled traces
# (benchmarks/eval_rules_tagger.py); the cue lists were not fitted to any labelled data.
FALLBACK = "retrieval"
SECOND_MIN = 1.0  # the runner-up needs a cue of its own...
SECOND_RATIO = 0.75  # ...and this fraction of the top score
FIRST_BONUS = ("framing", 1.5)
LAST_BONUS = ("summarization", 1.0)
ENTITY_WEIGHT, ENTITY_CAP = 0.25, 2.0  # retrieval per mid-sentence entity / number, capped
QUESTION_WEIGHT = 0.75  # self_verification for a "?" after the first paragraph

S, W = 2.0, 1.0  # strong and weak cue weights

# (state, weight, phrases). Phrases are lower-case and matched on word boundaries; a phrase may
# appear under several states (its weights add). Written from the App. B.6 definitions and the
# open labels merged into each cluster (Table 6), not fitted to any labelled set.
CUES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("framing", S, (
        "the question is asking", "the question asks", "question is asking", "the user is asking",
        "the user asks", "the user wants", "is asking about", "is asking for", "asking for", "asking about",
        "asking which", "asking what", "asking who", "asking when", "asking where", "asking how",
        "we need to find", "i need to find", "i need to figure out", "need to figure out", "i need to determine",
        "i need to identify", "need to identify", "need to determine", "the goal is", "my goal", "looking for",
        "trying to find", "trying to figure out", "trying to remember", "want to know", "wants to know",
        "what is being asked", "the key here is", "the key is", "the question", "this question",
        "refers to", "could refer to", "might refer to", "could mean", "might mean", "ambiguous",
        "the phrase", "the term", "the wording", "interpret", "interpretation", "let me understand",
        "let me parse", "let me think about", "let me figure out", "let me try to figure out",
    )),
    ("framing", W, ("okay so", "ok so", "okay", "alright", "hmm so", "so i", "i need to", "we need to", "constraint")),
    ("retrieval", S, (
        "i remember", "i recall", "i think i remember", "from what i remember", "from what i recall",
        "from what i know", "as far as i know", "as i recall", "if i recall", "if i remember", "recall that",
        "i know that", "i know", "i've heard", "i have heard", "i've read", "i have read", "i learned",
        "known as", "known for", "is known", "was born", "born in", "died in", "was founded", "founded in",
        "founded by", "was released", "released in", "was published", "published in", "written by",
        "directed by", "produced by", "played by", "starred", "starring", "is located", "located in",
        "is the capital", "capital of", "according to", "is called", "was called", "is named", "named after",
        "atomic number", "discovered by", "invented by", "composed by", "sung by", "performed by",
    )),
    ("retrieval", W, (
        "i believe", "i think it", "i think he", "i think she", "i think they", "was the", "is the",
        "in the year", "the album", "the film", "the movie", "the song", "the novel", "the book", "the series",
        "the show", "the team", "the band", "won the", "discovered", "invented", "consists of", "is made of",
        "contains", "composed of",
    )),
    ("categorization", S, (
        "is a type of", "a type of", "is a kind of", "is a form of", "a form of", "belongs to", "belong to",
        "classified as", "is classified", "classification", "category", "categories", "falls under",
        "falls into", "fall under", "is considered a", "is an example of", "a class of", "a family of",
        "types of", "kinds of", "a subtype", "subtype", "categorize", "classify", "is a member of",
    )),
    ("categorization", W, ("kind of", "a group of", "genre", "species", "class", "type")),
    ("decomposition", S, (
        "break it down", "break this down", "break down", "breaking down", "let's break", "let me break",
        "step by step", "step one", "the first step", "first step", "first i", "first, i", "first let",
        "first, let", "then i", "next i", "next, i", "next step", "let's start", "let me start", "start by",
        "two parts", "three parts", "several parts", "sub-question", "subquestion", "sub-problem",
        "one by one", "piece by piece", "i should first", "let me list", "list out", "let's list",
        "there are two things", "a few things", "several things", "two things", "the first part",
        "the second part", "plan",
    )),
    ("decomposition", W, ("first", "second", "then", "next", "finally", "after that", "components")),
    ("comparison", S, (
        "compared to", "compared with", "in comparison", "comparing", "compare", "on the other hand",
        "whereas", "unlike", "in contrast", "contrast", "versus", "vs", "difference between", "differs from",
        "different from", "the difference", "as opposed to", "distinguish", "between the two", "the former",
        "the latter", "more than", "less than", "better than", "larger than", "smaller than", "older than",
        "younger than", "bigger than", "higher than", "lower than", "earlier than", "later than",
    )),
    ("comparison", W, ("than", "rather than", "differ", "different", "similarly", "while", "both")),
    ("analogy", S, (
        "similar to", "analogous", "analogy", "just as", "just like", "in the same way", "the same way",
        "much like", "akin to", "reminds me of", "like how", "resembles", "comparable to", "by analogy",
        "it's like", "is like a", "parallel",
    )),
    ("case_analysis", S, (
        "for example", "for instance", "e.g", "such as", "consider the case", "in the case of",
        "take the case", "take for example", "another example", "an example", "example of", "examples",
        "counterexample", "counter-example", "exception", "exceptions", "in some cases", "case by case",
        "suppose", "let's say", "what if", "scenario", "precedent",
    )),
    ("case_analysis", W, ("except", "case", "cases", "if it were", "in that case", "what about")),
    ("chaining", S, (
        "therefore", "thus", "hence", "which means", "that means", "this means", "so that means", "this implies",
        "which implies", "implies", "it follows", "follows that", "that would mean", "would mean",
        "which would make", "that would make", "which makes", "that makes", "consequently", "given that",
        "if that's the case", "if that is the case", "so if",
    )),
    ("chaining", W, ("so it", "so he", "so she", "so they", "so this", "so that", "then the", "then it", "since")),
    ("causal_reasoning", S, (
        "because of", "due to", "caused by", "causes", "causing", "results in", "resulted in", "result in",
        "as a result", "leads to", "led to", "lead to", "the effect", "effect of", "effects of",
        "reason why", "mechanism", "responsible for", "triggers", "triggered", "driven by", "contributes to",
        "contribute to", "affects", "affected",
    )),
    ("causal_reasoning", W, ("because", "cause", "effect", "why", "since", "produces", "depends on")),
    ("synthesis", S, (
        "putting it together", "putting it all together", "putting this together", "putting that together",
        "put together", "putting everything together", "combining", "combine", "taken together",
        "all of this", "all of these", "all this", "considering all", "considering everything",
        "all the evidence", "everything points", "all point to", "points to", "this fits", "that fits",
        "fits with", "consistent with", "which matches", "that matches", "lines up", "adds up", "integrat",
        "both of these", "together",
    )),
    ("synthesis", W, ("overall", "matches", "along with", "based on")),
    ("explanation", S, (
        "in other words", "i.e", "this is because", "the reason is", "that's because", "that is because",
        "which explains", "to explain", "to clarify", "in simple terms", "simply put", "put simply",
        "to put it", "this is why", "that's why", "that is why", "the idea is", "note that", "keep in mind",
        "it's important to note", "it is important", "assuming", "assumption", "means that",
    )),
    ("explanation", W, ("basically", "essentially", "meaning", "that is", "since", "because")),
    ("evaluation", S, (
        "the best answer", "best answer", "the correct answer", "the right answer", "the most likely",
        "most likely", "more likely", "less likely", "the most accurate", "most accurate", "most plausible",
        "more plausible", "i think the answer", "i'll go with", "go with", "i would say", "i'd say",
        "the answer should be", "better fit", "best fit", "fits best", "makes more sense", "more accurate",
        "i'm leaning", "leaning towards", "leaning toward", "the better", "the strongest", "choose",
        "options", "option", "candidate", "candidates",
    )),
    ("evaluation", W, (
        "likely", "probably", "plausible", "seems", "seems like", "choice", "decide", "pick", "select",
        "should be", "the answer", "better",
    )),
    ("self_verification", S, (
        "let me check", "let me verify", "let me confirm", "let me double-check", "let me double check",
        "double-check", "double check", "to double-check", "verify", "verifying", "confirm", "confirming",
        "confirms", "make sure", "to be sure", "is that right", "is that correct", "is this right",
        "is this correct", "am i sure", "am i right", "i'm not sure", "not sure", "i'm pretty sure",
        "i'm fairly sure", "i'm confident", "not entirely sure", "i'm certain", "cross-check", "sanity check",
        "recheck", "re-check", "does that make sense", "that makes sense", "let me see", "hold on",
        "i should check", "i should verify", "i need to check", "check",
    )),
    ("self_verification", W, (
        "correct", "yes", "indeed", "certain", "doubt", "uncertain", "unsure", "sure", "right", "hmm", "wait",
    )),
    ("backtracking", S, (
        "wait", "actually", "no wait", "but wait", "i was wrong", "i made a mistake", "mistake", "that's not right",
        "that's wrong", "that is wrong", "that's incorrect", "not correct", "incorrect", "scratch that",
        "on second thought", "let me reconsider", "reconsider", "let me rethink", "rethink", "let me go back",
        "go back", "going back", "revisit", "i confused", "mixed up", "oops", "correction", "but no",
        "no,",
    )),
    ("backtracking", W, ("instead", "alternatively", "another possibility", "or maybe", "hmm", "oh", "but")),
    ("summarization", S, (
        "so the answer is", "so the answer", "the answer is", "the final answer", "final answer",
        "in summary", "to summarize", "summarizing", "in conclusion", "to conclude", "in short",
        "to sum up", "to recap", "so in summary", "therefore the answer", "thus the answer",
        "the answer would be", "i conclude", "my answer", "so, the answer",
    )),
    ("summarization", W, ("conclusion", "so yes", "so, yes", "overall")),
)


def _trie_regex(phrases: list[str]) -> str:
    """A regex matching any of ``phrases``, with shared prefixes factored out (longest match first)."""
    trie: dict = {}
    for phrase in phrases:
        node = trie
        for ch in phrase:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        ends = "" in node
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if ends else body

    return emit(trie)


def _cue_weights() -> dict[str, tuple[tuple[int, float], ...]]:
    weights: dict[str, dict[int, float]] = {}
    for state, weight, phrases in CUES:
        for phrase in phrases:
            per_state = weights.setdefault(phrase, {})
            per_state[STATE_INDEX[state]] = per_state.get(STATE_INDEX[state], 0.0) + weight
    return {p: tuple(w.items()) for p, w in weights.items()}


CUE_WEIGHTS = _cue_weights()
# The reference semantics: cues are found on the lower-cased paragraph, leftmost and longest first,
# non-overlapping, starting on a word boundary and ending on one (or right after a ",").
CUE_RE = re.compile(r"\b" + _trie_regex(sorted(CUE_WEIGHTS)) + r"(?:\b|(?<=,))")
# A proper noun or acronym in mid-sentence (after a lower-case word, digit or comma), or a number of
# 2+ digits (the reference semantics; the fast path counts the same matches on character classes).
ENTITY_RE = re.compile(r"[A-Z0-9](?:(?<=[a-z0-9,;:] [A-Z])(?:[a-z]+|[A-Z]+)|(?<=[0-9])[0-9]+)")
