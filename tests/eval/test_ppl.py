"""Perplexity by position: chunked passes equal one forward, buckets add up, documents load with clear errors."""

import json
import math

import pytest
import torch

from hydrahead.eval import Document, EvalError, evaluate_perplexity, load_documents, perplexity
from hydrahead.eval.ppl import token_nll


@pytest.mark.parametrize("name", ["hybrid", "teacher"])
def test_chunked_nll_equals_one_forward(models, name):
    ids = torch.randint(3, 300, (70,))
    whole = token_nll(models[name], ids)
    assert whole.shape == (69,)
    for chunk in (16, 23):
        torch.testing.assert_close(token_nll(models[name], ids, chunk_size=chunk), whole, rtol=1e-4, atol=1e-4)


def test_nll_matches_cross_entropy_by_hand(models):
    ids = torch.randint(3, 300, (20,))
    with torch.no_grad():
        logits = models["teacher"](ids[None]).logits[0]
    expected = -torch.log_softmax(logits[:-1], -1).gather(1, ids[1:, None])[:, 0]
    torch.testing.assert_close(token_nll(models["teacher"], ids), expected, rtol=1e-5, atol=1e-5)


def text(n):
    return " ".join(f"Line {i} says the grass is green and the sky is blue." for i in range(n))


def test_buckets_cover_every_position(tokenizer, models):
    docs = [Document("a", text(40)), Document("short", "Too short."), Document("b", text(50))]
    (teacher, hybrid) = perplexity(models, tokenizer, docs, length=100, bucket=32, progress=False)
    for r in (hybrid, teacher):
        assert r.documents == ["a", "b"] and r.skipped == ["short"]
        assert r.buckets == [(0, 32), (32, 64), (64, 96), (96, 100)]
        assert r.tokens == [2 * 31, 2 * 32, 2 * 32, 2 * 4]  # positions 1..99, two documents
        assert len(r.per_document) == 2 and all(len(row) == 4 for row in r.per_document)
        assert all(p > 1 for p in r.ppl) and math.isfinite(r.overall_ppl)
    assert hybrid.model == "hybrid" and teacher.model == "teacher"


def test_chunk_and_max_documents(tokenizer, models):
    docs = [Document(str(i), text(40 + i)) for i in range(3)]
    full = evaluate_perplexity(models["hybrid"], tokenizer, docs, 96, max_documents=2, progress=False)
    chunked = evaluate_perplexity(models["hybrid"], tokenizer, docs, 96, chunk_size=40, max_documents=2,
                                  progress=False)
    assert full.documents == ["0", "1"] and full.bucket == 12
    assert chunked.ppl == pytest.approx(full.ppl, rel=1e-4)


def test_no_long_document_is_an_error(tokenizer, models):
    tokens = len(tokenizer(text(3))["input_ids"])
    with pytest.raises(EvalError, match=f"no document has 5000 tokens .1 shorter skipped, the longest {tokens} "):
        evaluate_perplexity(models["teacher"], tokenizer, [Document("a", text(3))], 5000, progress=False)


def test_another_models_larger_tokenizer_is_refused(models):
    from tests.eval.conftest import bpe_tokenizer

    bigger = bpe_tokenizer()
    bigger.add_tokens([f"extra{i}" for i in range(models["teacher"].config.vocab_size)])
    with pytest.raises(EvalError, match="tokens but the model only"):  # an IndexError in the embedding before
        evaluate_perplexity(models["teacher"], bigger, [Document("a", text(3))], 64, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"bucket": 0}, "bucket must be >= 1"),  # took the default bucket
    ({"max_documents": 0}, "max_documents must be >= 1"),  # blamed the documents' length
    ({"chunk_size": -4}, "chunk_size must be >= 1"),
    ({"bucket": 8.5}, "bucket must be an integer, got 8.5"),
    ({"length": "64"}, "length must be an integer, got '64'"),
    ({"bucket": 1}, "bucket must be >= 2 positions"),  # its first bucket, position 0, held no token: NaN
    ({"documents": ["a long text"]}, r"documents must be Document\(name, text\) items .*got 'a long text'"),
])
def test_settings_that_measure_nothing_are_refused(tokenizer, models, kwargs, message):
    with pytest.raises(EvalError, match=message):
        evaluate_perplexity(models["teacher"], tokenizer, **{"documents": [Document("a", text(40))], "length": 64,
                                                             **kwargs}, progress=False)


def test_no_models_is_an_error_not_an_empty_result(tokenizer, models):
    for given in ({}, [models["teacher"]]):  # [] came back; a list failed on .items
        with pytest.raises(EvalError, match="models must be a non-empty mapping of label -> model"):
            perplexity(given, tokenizer, [Document("a", text(40))], 64, progress=False)
    with pytest.raises(EvalError, match=r"models\['h'\] must be a transformers causal LM .*got 'hybrid/'"):
        perplexity({"h": "hybrid/"}, tokenizer, [Document("a", text(40))], 64, progress=False)


def test_a_short_document_gets_buckets_of_two_positions_at_least(tokenizer, models):
    result = evaluate_perplexity(models["teacher"], tokenizer, [Document("a", text(40))], 12, progress=False)
    assert result.bucket == 2 and 0 not in result.tokens  # 12 // 8 = 1: its first bucket held no token


def test_load_documents(tmp_path):
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "second"}) + "\n\n" + json.dumps({"text": "third"}) + "\n")
    (tmp_path / "ignored.bin").write_bytes(b"\0")
    docs = load_documents([tmp_path])
    assert [(d.name, d.text) for d in docs] == [("a.txt", "first document"), ("b.jsonl:1", "second"),
                                               ("b.jsonl:3", "third")]
    assert load_documents([tmp_path / "a.txt"]) == docs[:1]
    assert load_documents(str(tmp_path / "a.txt")) == docs[:1]  # one path, not a list of its characters
    with pytest.raises(EvalError, match="not found: .*nope.txt"):
        load_documents([tmp_path / "nope.txt"])
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(EvalError, match="bad.jsonl:1: expected a JSON object with a 'text' field"):
        load_documents([tmp_path / "bad.jsonl"])
