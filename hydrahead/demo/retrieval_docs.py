"""Synthetic key-value retrieval documents for the demo's training corpus.

They are the evaluation's own RULER-style prompts (`hydrahead.eval.tasks`) with the answer written after
the answer prefix, drawn from a seed range the evaluation never uses, so the teacher learns the format
and the skill (find the needle, copy its value) but never sees an evaluation prompt.
"""

from __future__ import annotations

import random
from typing import Any

from hydrahead.eval.tasks import make_example

TRAIN_SEED_OFFSET = 1_000_003  # evaluation uses small seeds; training documents use seeds from here on


def retrieval_documents(tokenizer: Any, tasks: list[str], count: int, min_length: int, max_length: int,
                        seed: int = 0) -> list[str]:
    """`count` documents of `min_length`..`max_length` tokens, tasks and depths drawn at random."""
    rng = random.Random(seed)
    docs = []
    for i in range(count):
        example = make_example(
            rng.choice(tasks), tokenizer, rng.randint(min_length, max_length), depth=rng.random(),
            sample=i, seed=TRAIN_SEED_OFFSET + seed,
        )
        docs.append(example.prompt + " " + ", ".join(example.answers) + ".")
    return docs
