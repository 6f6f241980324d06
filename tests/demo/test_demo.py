"""Smoke test of the demo path at minimal scale, and the report's honest verdicts."""

import json

import pytest

from hydrahead.demo.report import verdicts
from hydrahead.demo.scale import get_scale


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reuses_the_teacher(tmp_path):
    from hydrahead.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    index = (out / "report" / "index.md").read_text()
    for name in ("teacher", "hydrahead-7:1", "random-7:1", "fixed-per-layer-7:1", "layerwise-3:1",
                 "layerwise-7:1", "all-gdn"):
        assert f"| {name} |" in index
    for png in ("heads.png", "niah_accuracy.png", "kv_bytes.png", "ppl_by_position.png"):
        assert (out / "report" / png).stat().st_size > 1000
    records = json.loads((out / "report" / "niah.json").read_text())["records"]
    assert {r["length"] for r in records} == {256, 512}
    key = json.loads((out / "teacher" / "demo_key.json").read_text())["key"]

    # The second run reuses the cached teacher: the stamp and the weights are unchanged.
    weights = (out / "teacher" / "model.safetensors").read_bytes()
    from hydrahead.demo.pipeline import get_teacher, Log

    get_teacher(out, get_scale("tiny"), Log(quiet=True))
    assert (out / "teacher" / "model.safetensors").read_bytes() == weights
    assert json.loads((out / "teacher" / "demo_key.json").read_text())["key"] == key


def test_verdicts_say_plainly_who_wins():
    table = {"teacher": {1: 1.0}, "hydrahead-7:1": {1: 0.5, 2: 0.25}, "random-7:1": {1: 0.25, 2: 0.25},
             "all-gdn": {1: 0.75, 2: 0.5}, "layerwise-3:1": {1: 0.5, 2: 0.25}}
    lines = verdicts(table, {"hydrahead-7:1": 3.0, "random-7:1": 4.0, "all-gdn": 2.0, "layerwise-3:1": 3.0})
    text = "\n".join(lines)
    assert "**beats** random-7:1" in text and "better at 1, worse at 0 of 2" in text
    assert "**does not beat** all-gdn" in text
    assert "**ties** layerwise-3:1" in text
    assert "teacher itself" not in text


def test_verdicts_warn_when_the_teacher_cannot_retrieve():
    table = {"teacher": {256: 0.0, 512: 0.0}, "hydrahead-7:1": {256: 0.0, 512: 0.0}, "all-gdn": {256: 0.0, 512: 0.0}}
    lines = verdicts(table, {})
    assert "The teacher itself scores 0.0" in lines[0]
    assert "**ties** all-gdn" in lines[1]


def test_pack_never_cuts_a_document_that_fits_in_a_row():
    from hydrahead.demo.teacher import pack

    eos, pad = 0, 1
    docs = [[5] * 3, [6] * 4, [7] * 2, [8] * 11]  # 4, 5, 3 and 12 tokens with EOS, rows of 8
    rows = sorted(pack(docs, 8, eos, pad).tolist())
    assert rows == sorted([
        [5, 5, 5, 0, pad, pad, pad, pad],  # the next document does not fit: it starts a new row
        [6, 6, 6, 6, 0, 7, 7, 0],
        [8] * 8, [8, 8, 8, 0, pad, pad, pad, pad],  # longer than a row: cut, its tail padded
    ])


def test_tokenizer_splits_digits_and_keeps_the_needle_vocabulary_whole():
    from hydrahead.demo.tokenizer import train_tokenizer
    from hydrahead.scoring.haystack import vocabulary

    words = vocabulary()
    tok = train_tokenizer(["def f(x):\n    return x + 1\n"] * 50, vocab_size=2048, whole_words=words)
    assert [tok.decode([i]) for i in tok(" 1960230")["input_ids"]] == [" ", "1", "9", "6", "0", "2", "3", "0"]
    assert all(len(tok(" " + w)["input_ids"]) == 1 for w in words)
