"""Matching generated answers against the expected ones (RULER's `string_match_all`, made stricter at the edges).

An expected answer counts as found when it occurs in the generated text as a whole token: case-insensitive,
and not glued to further letters or digits, so "1234567" is found in "are: 1234567." but not in "12345678",
and "otter" not in "otters". Per example:

- `score` = fraction of the expected answers found (partial credit). For single-key and multi-key tasks there
  is one answer, so it is 0 or 1; for multi-value, multi-query and variable tracking it is e.g. 0.75 when
  3 of 4 values are in the output. This is RULER's accuracy.
- `exact` = every expected answer found (score == 1).

Extra output (a distractor's value, repeated text) is not penalised, as in RULER; generations are short
(`tasks.generation_budget`), which bounds how much a model can list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_EDGE = r"[0-9a-z]"


def found(answer: str, text: str) -> bool:
    """Whether `answer` occurs in `text` as a whole token (case-insensitive)."""
    answer = " ".join(answer.split())
    if not answer:
        return False
    pattern = rf"(?<!{_EDGE}){re.escape(answer.lower())}(?!{_EDGE})"
    return re.search(pattern, " ".join(text.split()).lower()) is not None


def score(prediction: str, answers: Sequence[str] | str) -> float:
    """Fraction of `answers` found in `prediction` (1.0 for an empty answer list); a string is one answer (as a
    sequence of characters, "1234" scored 0 against "1234": no single character stands alone in it)."""
    if isinstance(answers, str):
        answers = [answers]
    if not answers:
        return 1.0
    return sum(found(a, prediction) for a in answers) / len(answers)


def exact(prediction: str, answers: Sequence[str] | str) -> bool:
    """Every expected answer is in `prediction`."""
    return score(prediction, answers) == 1.0
