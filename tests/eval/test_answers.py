"""Scoring on hand-made outputs: right, wrong, partially right, and the edges of a match."""

import pytest

from hydrahead.eval.answers import exact, found, score

CASES = {
    # id: (prediction, expected answers, score)
    "right": (" 1234567.", ["1234567"], 1.0),
    "right-with-words": (" are: 1234567, as I recall", ["1234567"], 1.0),
    "wrong": (" 7654321.", ["1234567"], 0.0),
    "empty-output": ("", ["1234567"], 0.0),
    "longer-number": (" 12345678", ["1234567"], 0.0),
    "prefix-of-answer": (" 123456", ["1234567"], 0.0),
    "word-case": (" Otter.", ["otter"], 1.0),
    "word-plural": (" otters", ["otter"], 0.0),
    "uuid": (" 3f2b8c1e-0d4a-4e6b-9c2d-1a2b3c4d5e6f\n", ["3f2b8c1e-0d4a-4e6b-9c2d-1a2b3c4d5e6f"], 1.0),
    "uuid-truncated": (" 3f2b8c1e-0d4a-4e6b", ["3f2b8c1e-0d4a-4e6b-9c2d-1a2b3c4d5e6f"], 0.0),
    "multivalue-all": (" 11, 22, 33 and 44.", ["11", "22", "33", "44"], 1.0),
    "multivalue-half": (" 11, 99, 33.", ["11", "22", "33", "44"], 0.5),
    "multivalue-any-order": (" 44, 33, 22, 11", ["11", "22", "33", "44"], 1.0),
    "multivalue-extra-values": (" 11, 22, 33, 44, 55", ["11", "22", "33", "44"], 1.0),
    "vt-three-of-four": (" ABCDE, FGHIJ, KLMNO", ["ABCDE", "FGHIJ", "KLMNO", "PQRST"], 0.75),
    "vt-glued": (" ABCDEFGHIJ", ["ABCDE", "FGHIJ"], 0.0),
    "whitespace-in-answer": ("the  blue\nsky", ["blue sky"], 1.0),
}


@pytest.mark.parametrize("prediction,answers,expected", list(CASES.values()), ids=list(CASES))
def test_score(prediction, answers, expected):
    assert score(prediction, answers) == expected
    assert exact(prediction, answers) == (expected == 1.0)


def test_found_is_case_insensitive_whole_token():
    assert found("ABCDE", "vars: abcde.")
    assert not found("ABCDE", "XABCDE")
    assert not found("", "anything")


def test_no_expected_answers_scores_one():
    assert score("whatever", []) == 1.0


def test_a_string_is_one_answer_not_its_characters():
    assert score("The key is 1234.", "1234") == 1.0 and exact("The key is 1234.", "1234")
    assert score("The key is 12345.", "1234") == 0.0
