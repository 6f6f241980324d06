"""Training documents for the demo teacher: a small language model that must grow retrieval heads.

A retrieval head forms late and suddenly (docs/method.md section 7): first a previous-token head and an
induction head (copy what followed the last occurrence of the current token), then heads that match a
key across different wordings. The mix below is built for that order, from the shared needle module
(`hydrahead.needles`), with seeds the evaluation and the probes never use:

| kind        | what a document is                                                       | teaches                 |
|-------------|--------------------------------------------------------------------------|-------------------------|
| niah        | the evaluation's own prompt format with its answer (single/multi-key)    | the task as evaluated   |
| multiquery  | a short haystack with 1-4 needles, then a question per needle in one of  | dense retrieval signal; |
|             | several wordings, one of them the needle sentence itself                 | induction bootstraps it |
| repeat      | a random span of 16-64 needle words and digits, written two or three times | copying (see below)   |
| recall      | 2-3 short random spans, each written twice, at random places among       | induction proper      |
|             | haystack sentences                                                       |                         |
| copy        | as recall, with spans of identifiers from the code corpus (thousands of  | induction, fast         |
|             | distinct words, so a token's earlier occurrence is nearly always unique) |                         |
| induction   | a span of 8-64 random tokens of the whole vocabulary, a gap of 0-24 more | induction from scratch  |
|             | random tokens, the span again: half of all targets are a copy whose      | (a curriculum's first   |
|             | distance varies, so only an induction head predicts them                 | phase)                  |
| code        | Python standard-library source (rows may cut it: it is longer than one)  | ordinary language model |

On `induction` documents alone the teacher's shape forms an induction head after ~5M tokens and then
copies needle-word spans it never saw as spans (docs/history.md sections 0 and 1b); mixed among the other kinds,
48M tokens did not form it. Hence the recipe's phases: induction first, then the retrieval mix.

`repeat` alone taught the first shipped teacher a shortcut (docs/history.md section 1): it replays what follows the
" | " separator, copying at 84% after " | " and at chance after any other separator, and never inside a
NIAH document. `recall` has no separator and no fixed distance between the copies.

Every document fits in one training row (`max_tokens`) except code, so packed rows never cut a needle
from its question (`DataConfig.packing = "documents"`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from hydrahead.needles import (
    INTRO,
    KIND,
    QUESTION_FORMS,
    essay_sentences,
    needle_key,
    needle_sentence,
    needle_value,
    place,
    prompt,
    question,
    vocabulary,
)

TRAIN_SEED_OFFSET = 1_000_003  # training documents draw seeds from here on (needles.PROBE_SEED_OFFSET: the seed ranges)
KINDS = ("niah", "multiquery", "repeat", "recall", "copy", "induction", "code")
IDENTIFIER = re.compile(r"\b[A-Za-z][A-Za-z_]{2,14}\b")
FORMS = list(QUESTION_FORMS)


def niah_documents(tokenizer: Any, tasks: Sequence[str], count: int, min_tokens: int, max_tokens: int,
                   seed: int) -> list[str]:
    """`count` prompts in the evaluation's format (`hydrahead.eval.tasks`), each followed by its answer."""
    from hydrahead.eval.tasks import make_example

    from hydrahead.errors import EvalError
    from hydrahead.eval.tasks import Haystack

    rng = random.Random(seed)
    haystack = Haystack.essay(TRAIN_SEED_OFFSET + seed)  # what make_example would build for each document
    docs = []
    for i in range(count):
        task, length, depth = rng.choice(list(tasks)), rng.randint(min_tokens, max_tokens), rng.random()
        try:
            example = make_example(task, tokenizer, length, depth, i, TRAIN_SEED_OFFSET + seed, haystack)
        except EvalError:  # too short for this task's needles: the longest document instead
            example = make_example(task, tokenizer, max_tokens, depth, i, TRAIN_SEED_OFFSET + seed, haystack)
        docs.append(example.prompt + " " + ", ".join(example.answers) + ".")
    return docs


def template_texts(seed: int = 0, count: int = 200) -> list[str]:
    """Filled-in prompts and questions of every form, for tokenizer training (so the template's words
    become whole tokens, as a real tokenizer's English would be)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        kind = rng.choice(("number", "word"))
        key, value = needle_key(rng), needle_value(kind, rng)
        needles = needle_sentence(kind, key, value)
        out.append(prompt(kind, key, needles) + " " + " ".join(question(f, kind, key, value) for f in QUESTION_FORMS))
    return out


def multiquery_document(rng: random.Random, tokenizer: Any, max_tokens: int, sentences: Sequence[str]) -> str:
    """A haystack with 1-4 needles of one value type, then one question per needle (shuffled), answered."""
    kind = rng.choice(("number", "word"))
    n = rng.choice((1, 2, 3, 4))
    keys: list[str] = []
    while len(keys) < n:
        key = needle_key(rng)
        if key not in keys and all(set(key.split("-")).isdisjoint(k.split("-")) for k in keys):
            keys.append(key)
    banned = {w for k in keys for w in k.split("-")}
    values = []
    while len(values) < n:
        value = needle_value(kind, rng)
        if value not in values and value not in banned:
            values.append(value)
    needles = [needle_sentence(kind, k, v) for k, v in zip(keys, values)]
    order = list(range(n))
    rng.shuffle(order)
    qa = " ".join(question(rng.choice(FORMS), kind, keys[i], values[i]) for i in order)
    filler = rng.sample(list(sentences), rng.randint(0, 16))
    intro = INTRO.format(kind=KIND[kind]) + "\n" if rng.random() < 0.5 else ""
    while True:
        text = intro + place(filler, needles, [rng.random() for _ in needles]) + "\n" + qa
        if len(filler) == 0 or len(tokenizer(text)["input_ids"]) < max_tokens:
            return text
        filler = filler[: max(0, len(filler) - 3)]


def repeat_document(rng: random.Random, words: Sequence[str]) -> str:
    """A random span of 16-64 needle words and digits, written 2-3 times with a separator."""
    span = " ".join(rng.choice(words) for _ in range(rng.randint(16, 64)))
    return " | ".join([span] * rng.choice((2, 3)))


def recall_document(rng: random.Random, words: Sequence[str], sentences: Sequence[str]) -> str:
    """Two or three random spans of 4-16 needle words and digits, each written again later in the document,
    with haystack sentences of random length around and between them and no fixed separator, so that the
    only way to predict a second occurrence is to find the first by its content (an induction head), not
    by a marker or a fixed distance."""
    spans = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 16))) for _ in range(rng.choice((2, 3)))]
    parts = spans + spans
    rng.shuffle(parts)
    while any(a == b for a, b in zip(parts, parts[1:])):  # never a copy right after itself
        rng.shuffle(parts)
    out = []
    for part in parts:
        out += rng.sample(sentences, rng.randint(0, 2)) + [part + "."]
    return " ".join(out)


def token_pool(tokenizer: Any) -> list[int]:
    """The tokenizer's ordinary tokens: not special, and decoding to whole characters on their own."""
    special = set(tokenizer.all_special_ids)
    return [i for i in range(len(tokenizer)) if i not in special and "\ufffd" not in tokenizer.decode([i])]


def induction_document(rng: random.Random, tokenizer: Any, pool: Sequence[int]) -> str:
    """A span of 8-64 random tokens, 0-24 other random tokens, then the span again (as text: the copy
    tokenizes like the original)."""
    span = [rng.choice(pool) for _ in range(rng.randint(8, 64))]
    gap = [rng.choice(pool) for _ in range(rng.randint(0, 24))]
    return tokenizer.decode(span + gap + span)


def identifiers(code: Sequence[str]) -> list[str]:
    """The distinct identifier-like words of the code corpus (3-15 letters), sorted: a span vocabulary large
    enough that a word rarely recurs by chance, so the only way to predict a copy is to find the original
    (on needle words alone, 127 of them, chance recurrences blur that signal and the phase change waits)."""
    return sorted({m.group(0) for text in code for m in IDENTIFIER.finditer(text)})


def teacher_documents(tokenizer: Any, code: Sequence[str], *, counts: dict[str, int], niah_tasks: Sequence[str],
                      max_tokens: int, seed: int = 0) -> list[str]:
    """The training documents (shuffled): `counts` per kind of `KINDS` (code: at most len(code) files)."""
    unknown = set(counts) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown teacher document kinds {sorted(unknown)}; choose from {KINDS}")
    rng = random.Random(TRAIN_SEED_OFFSET + seed)
    sentences = essay_sentences(4096, seed=TRAIN_SEED_OFFSET + seed)
    words = vocabulary() + [str(d) for d in range(10)] * 4
    docs = niah_documents(tokenizer, niah_tasks, counts.get("niah", 0), max_tokens // 3, max_tokens, seed)
    docs += [multiquery_document(rng, tokenizer, max_tokens, sentences) for _ in range(counts.get("multiquery", 0))]
    docs += [repeat_document(rng, words) for _ in range(counts.get("repeat", 0))]
    docs += [recall_document(rng, words, sentences) for _ in range(counts.get("recall", 0))]
    if counts.get("copy", 0):
        names = identifiers(code)
        docs += [recall_document(rng, names, sentences) for _ in range(counts["copy"])]
    if counts.get("induction", 0):
        pool = token_pool(tokenizer)
        docs += [induction_document(rng, tokenizer, pool) for _ in range(counts["induction"])]
    docs += list(code[: counts.get("code", 0)])
    rng.shuffle(docs)
    return docs
