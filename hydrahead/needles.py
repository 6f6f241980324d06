"""Needles and haystacks: the one place that writes a needle-in-a-haystack prompt.

Head-scoring probes (`scoring.probes`), evaluation tasks (`eval.tasks`) and the demo teacher's training
documents (`demo.teacher_data`) all build their text from this module, so what heads are scored on, what
models are evaluated on and what the teacher is trained on is the same prompt. It owns:
- the text sources: haystack sentences, needle keys and needle values (below);
- `distinct` and `draw_keys`: draws of keys and values that never repeat one another, so a prompt holds
  the asked value in its asked needle only (and a word value is never a word of a key);
- the templates (RULER's, Hsieh et al. 2024): the needle sentence, the question and its answer prefix;
- `place`, which inserts needles into filler at their depths (`arrangement`: the order it joins them in).
Probes keep only the same-token-length counterfactual pairing and the token-level split of the prompt;
tasks keep only the RULER task specs and length fitting.

Haystacks (RULER's two kinds, without downloads; the essay's seeds, one range per use: `PROBE_SEED_OFFSET`):
- "noise": RULER's repeated filler ("The grass is green. The sky is blue. ...").
- "essay": prose-like sentences generated from small word lists with a seeded generator (our stand-in for
  RULER's Paul Graham essays, which we cannot ship).
- "files": the sentences of user text files, in order.

Needle values come in three types, as in RULER: 7-digit numbers, words, and UUID-like strings.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from hydrahead.errors import NeedleError
from hydrahead.utils.io import read_text

NEEDLE_TYPES = ("number", "word", "uuid")
HAYSTACKS = ("essay", "noise", "files")
# Essay filler seeds, one range per use, so that heads are never chosen on the text they are evaluated on:
# the evaluation draws from its `seed` (small numbers), head-scoring probes from PROBE_SEED_OFFSET + their seed,
# the demo teacher's training documents from demo.teacher_data.TRAIN_SEED_OFFSET + theirs.
PROBE_SEED_OFFSET = 2_000_003

NOISE = ["The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again."]

_ADJECTIVES = (
    "quiet bright ancient careful distant early famous gentle hidden honest large little modern narrow "
    "patient quick rare silent simple small steady strange strong sudden warm wild young calm busy clever"
).split()
_NOUNS = (
    "river garden teacher window engine market village letter mountain station bridge forest harbor "
    "library painter kitchen island farmer doctor school pocket valley castle theater sailor basket "
    "mirror lantern meadow orchard"
).split()
_VERBS = (
    "watches follows builds carries finds keeps leaves opens reads remembers shows visits moves paints "
    "answers gathers crosses"
).split()
_PREPOSITIONS = "near behind beyond under above beside across".split()
_WORD_VALUES = (
    "apple bottle candle dragon feather guitar hammer jacket kettle ladder marble needle orange pencil "
    "puzzle rabbit saddle tablet tunnel violin wallet button cactus donkey falcon garlic helmet igloo "
    "jungle koala lemon magnet napkin oyster parrot quartz rocket salmon tomato umbrella walrus yogurt zebra"
).split()


def vocabulary() -> list[str]:
    """Every word of the generated essays, the needle keys and the word values (for tokenizer training)."""
    return list(dict.fromkeys(_ADJECTIVES + _NOUNS + _VERBS + _PREPOSITIONS + _WORD_VALUES))


def essay_sentences(count: int, seed: int) -> list[str]:
    """`count` prose-like sentences ("The quiet river follows the warm teacher near the market.")."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        adj1, adj2 = rng.choice(_ADJECTIVES), rng.choice(_ADJECTIVES)
        noun1, noun2, noun3 = rng.choice(_NOUNS), rng.choice(_NOUNS), rng.choice(_NOUNS)
        sentence = f"The {adj1} {noun1} {rng.choice(_VERBS)} the {adj2} {noun2} {rng.choice(_PREPOSITIONS)} the {noun3}."
        out.append(sentence)
    return out


def file_sentences(paths: Sequence[str | Path]) -> list[str]:
    """The sentences of text files, split after '.', '!' or '?' followed by whitespace."""
    if not paths:
        raise NeedleError("haystack 'files' needs at least one text file (eval niah: --haystack-files; score: "
                          "--probes-file; Python: haystack_files)")
    sentences: list[str] = []
    for path in paths:
        text = " ".join(read_text(path, NeedleError, "haystack file").split())
        sentences += [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    if not sentences:
        raise NeedleError(f"haystack files {[str(p) for p in paths]} contain no text")
    return sentences


def haystack_sentences(kind: str, files: Sequence[str | Path] = (), seed: int = 0, count: int = 4096) -> list[str]:
    """The sentence pool a haystack is cut from (cycled when a probe needs more)."""
    if kind == "noise":
        return list(NOISE)
    if kind == "essay":
        return essay_sentences(count, seed)
    if kind == "files":
        return file_sentences(files)
    raise NeedleError(f"haystack must be one of {HAYSTACKS}, got {kind!r}")


def needle_key(rng: random.Random) -> str:
    """A RULER-style key: two words joined by a hyphen ("quiet-lantern")."""
    return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS + _WORD_VALUES)}"


def needle_value(kind: str, rng: random.Random) -> str:
    """A needle value of one of `NEEDLE_TYPES`."""
    if kind == "number":
        return str(rng.randrange(1_000_000, 10_000_000))  # 7 digits, as in RULER
    if kind == "word":
        return rng.choice(_WORD_VALUES)
    if kind == "uuid":
        hexdigits = "0123456789abcdef"
        parts = ["".join(rng.choice(hexdigits) for _ in range(n)) for n in (8, 4, 4, 4, 12)]
        return "-".join(parts)
    raise NeedleError(f"needle type must be one of {NEEDLE_TYPES}, got {kind!r}")


def distinct(rng: random.Random, make: Callable[[random.Random], str], n: int, taken: set[str],
             redraws: int = 10_000) -> list[str]:
    """`n` draws of `make(rng)` that differ from each other and from everything in `taken` (redrawn until
    they do); each is added to `taken`, so later draws avoid it too. NeedleError after `redraws` draws that
    were taken (fewer possible values than needles)."""
    out: list[str] = []
    while len(out) < n:
        item = make(rng)
        if item not in taken:
            taken.add(item)
            out.append(item)
        elif (redraws := redraws - 1) < 0:
            raise NeedleError(f"could not draw {n} distinct values ({len(out)} drawn, the rest already taken): "
                              "ask for fewer needles")
    return out


def draw_keys(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    """`n` distinct needle keys; `taken` gets the keys and their words, so no value drawn against it
    afterwards (`distinct`) is a word of a key (echoing the question's key then never answers it)."""
    keys = distinct(rng, needle_key, n, taken)
    taken.update(word for key in keys for word in key.split("-"))
    return keys


# ----------------------------------------------------------------------------------------------- templates
KIND = {"number": "numbers", "word": "words", "uuid": "uuids"}  # how the templates name a value type
NEEDLE = "One of the special magic {kind} for {key} is: {value}."
INTRO = ("Some special magic {kind} are hidden within the following text. Make sure to memorize it. "
         "I will quiz you about the {kind} afterwards.")
QUESTION = "What are all the special magic {kind} for {query} mentioned in the provided text?"
ANSWER_PREFIX = "The special magic {kind} for {query} mentioned in the provided text are"
PROMPT = INTRO + "\n{context}\n" + QUESTION + " " + ANSWER_PREFIX  # the evaluation's and the probes' prompt

# How a training document may ask for a needle (demo teacher only): the evaluation's own question, its
# answer prefix alone, and two that end like the needle sentence, so that plain induction (copy what
# followed the key last time) already answers them and can grow into the key match the others need.
QUESTION_FORMS: dict[str, str] = {
    "ruler": QUESTION + " " + ANSWER_PREFIX + " {value}.",
    "prefix": ANSWER_PREFIX + " {value}.",
    "is": "The special magic {kind} for {query} is: {value}.",
    "needle": NEEDLE.replace("{key}", "{query}"),
}


def needle_sentence(value_type: str, key: str, value: str) -> str:
    """"One of the special magic numbers for quiet-lantern is: 4921387." """
    return NEEDLE.format(kind=KIND[value_type], key=key, value=value)


def prompt(value_type: str, query: str, context: str) -> str:
    """The whole prompt, ending with the answer prefix (a base model answers by continuing it)."""
    return PROMPT.format(kind=KIND[value_type], query=query, context=context)


def question(form: str, value_type: str, query: str, value: str) -> str:
    """A question of one of `QUESTION_FORMS` with its answer written out (training documents)."""
    return QUESTION_FORMS[form].format(kind=KIND[value_type], query=query, value=value)


def arrangement(filler: int, depths: Sequence[float]) -> list[int]:
    """The order `place` joins `filler` sentences and one needle per depth in: indices 0..filler-1 are the
    sentences, filler + i is needle i, inserted at the sentence boundary nearest its depth (0 = before the
    first sentence, 1 = after the last); needles at one boundary keep their order."""
    slots = sorted((round(d * filler), i) for i, d in enumerate(depths))
    order, start = [], 0
    for slot, i in slots:
        order.extend(range(start, slot))
        order.append(filler + i)
        start = max(start, slot)
    order.extend(range(start, filler))
    return order


def place(filler: Sequence[str], needles: Sequence[str], depths: Sequence[float]) -> str:
    """Filler sentences with each needle inserted at the sentence boundary nearest its depth (0 = before
    the first sentence, 1 = after the last), joined by spaces; needles at one boundary keep their order."""
    pieces = [*filler, *needles]
    return " ".join(pieces[j] for j in arrangement(len(filler), depths))
