"""The NIAH runner: greedy generation over the grid, batching with left padding, scoring of the output."""

import re

import pytest
import torch
from torch import nn

from hydrahead.eval import evaluate_niah, make_examples, niah

TASK_NAMES = ["single_number", "single_word", "multikey", "multivalue", "multiquery", "vt"]


class Oracle(nn.Module):
    """A fake model that reads each prompt and answers it, listing at most `limit` values (None: all).

    It follows the generate() contract the runner relies on: left-padded input_ids with an attention mask in,
    prompt + continuation out; the continuation is padded past its answer.
    """

    def __init__(self, tokenizer, limit=None):
        super().__init__()
        self.tokenizer, self.limit = tokenizer, limit
        self.weight = nn.Parameter(torch.zeros(1))
        self.config = None
        self.generation_config = type("GenerationConfig", (), {"eos_token_id": None})()

    def solve(self, prompt: str) -> list[str]:
        if "VAR " in prompt:
            value = re.search(r"assigned the value (\d+) in the text", prompt)[1]
            names, chain = [], dict(re.findall(r"VAR (\w+) = (VAR \w+|\d+)\.", prompt))
            for name, rhs in chain.items():
                if rhs == value or rhs.removeprefix("VAR ") in names:
                    names.append(name)
            return names
        query = re.search(r"What are all the special magic \w+ for (.+?) mentioned", prompt)[1]
        keys = re.split(r", and |, ", query)
        return [v for k in keys for v in re.findall(rf"for {re.escape(k)} is: (\S+)\.", prompt)]

    def generate(self, input_ids, attention_mask, generation_config):
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            answer = self.solve(self.tokenizer.decode(ids[mask.bool()]))[: self.limit]
            new = self.tokenizer(" " + ", ".join(answer) + ".", add_special_tokens=False)["input_ids"]
            new = (new + [self.tokenizer.pad_token_id] * generation_config.max_new_tokens)
            rows.append(torch.cat([ids, torch.tensor(new[: generation_config.max_new_tokens])]))
        return torch.stack(rows)


class RecordingOracle(Oracle):
    """An Oracle that keeps the generation config it was called with."""

    def generate(self, input_ids, attention_mask, generation_config):
        self.seen = generation_config
        return super().generate(input_ids, attention_mask, generation_config)


def test_generation_stops_at_the_configs_and_the_tokenizers_eos(tokenizer):
    """An instruct model's end-of-turn token is not always its generation config's EOS: both end an answer
    (hydrahead.generation.eos_ids, the rule `hydrahead generate` follows too)."""
    oracle = RecordingOracle(tokenizer)
    other = tokenizer.convert_tokens_to_ids("<pad>")
    oracle.generation_config.eos_token_id = [other]
    examples = make_examples(tokenizer, ["single_number"], [300], [0.5], samples=1)
    evaluate_niah(oracle, tokenizer, examples, "oracle", progress=False)
    assert oracle.seen.eos_token_id == sorted({other, tokenizer.eos_token_id})
    assert tokenizer.eos_token_id != other


@pytest.fixture(scope="module")
def grid(tokenizer):
    return make_examples(tokenizer, TASK_NAMES, [300, 420], [0.0, 1.0], samples=1)


def test_oracle_scores_every_task_fully(tokenizer, grid):
    records = evaluate_niah(Oracle(tokenizer), tokenizer, grid, "oracle", batch_tokens=1000, progress=False)
    assert len(records) == len(grid)
    assert [(r.task, r.length, r.depth) for r in records] == [(e.task, e.length, e.depth) for e in grid]
    bad = [(r.task, r.answers, r.prediction) for r in records if r.score != 1.0 or not r.exact]
    assert not bad


def test_oracle_listing_one_value_gets_partial_credit(tokenizer, grid):
    records = evaluate_niah(Oracle(tokenizer, limit=1), tokenizer, grid, "oracle-1", progress=False)
    expected = {"single_number": 1.0, "single_word": 1.0, "multikey": 1.0,
                "multivalue": 0.25, "multiquery": 0.25, "vt": 0.2}
    assert {r.task: r.score for r in records} == expected
    assert {r.task for r in records if r.exact} == {"single_number", "single_word", "multikey"}


def test_random_models_run_with_hybrid_cache(tokenizer, models):
    records = niah(models, tokenizer, lengths=[320], depths=[0.0, 1.0], tasks=["single_number", "vt"],
                   samples=1, progress=False)
    assert len(records) == 2 * 2 * 2
    assert {r.model for r in records} == {"teacher", "hybrid"}
    for r in records:
        assert 0.0 <= r.score <= 1.0 and r.prediction  # random weights: wrong, but some output
        assert r.prompt_tokens < 320


def test_another_models_larger_tokenizer_is_refused(models):
    from hydrahead.eval import EvalError
    from tests.eval.conftest import bpe_tokenizer

    bigger = bpe_tokenizer()
    bigger.add_tokens([f"extra{i}" for i in range(models["hybrid"].config.vocab_size)])
    with pytest.raises(EvalError, match="tokens but the model only"):  # an IndexError in the embedding before
        niah({"hybrid": models["hybrid"]}, bigger, lengths=[320], depths=[0.5], tasks=["single_number"], samples=1,
             progress=False)


@pytest.mark.parametrize("name", ["hybrid", "teacher"])
def test_a_sweep_past_the_window_is_not_warned_of_by_transformers(tokenizer, models, name, monkeypatch):
    """The demo evaluates students at 2x-8x the length their config states: transformers' one-time reminder
    that a generation passed max_position_embeddings was printed in the middle of the demo's progress lines."""
    import logging

    from transformers.utils import logging as hf_logging

    monkeypatch.setattr(models[name].config, "max_position_embeddings", 64)
    hf_logging.get_logger("transformers").warning_once.cache_clear()  # once per process: wherever it came before
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    stopping = logging.getLogger("transformers.generation.stopping_criteria")
    assert stopping.isEnabledFor(logging.WARNING)  # else the test could not see the reminder either way
    stopping.addHandler(handler)
    try:
        records = niah({name: models[name]}, tokenizer, lengths=[320], depths=[0.5], tasks=["single_number"],
                       samples=1, progress=False)
    finally:
        stopping.removeHandler(handler)
    assert records and records[0].prompt_tokens > 64 and not seen


@pytest.mark.parametrize("name", ["teacher", "hybrid"])
def test_the_checkpoints_generation_settings_are_set_aside(tokenizer, models, name):
    """Answers are plain greedy: generate filled every setting left unset from the model's generation config
    (a repetition penalty such as Qwen2.5-Instruct's, an n-gram ban, beams), which changed them."""
    model = models[name]
    examples = make_examples(tokenizer, ["single_number", "vt"], [320], [0.0, 0.5], samples=1)
    plain = [r.prediction for r in evaluate_niah(model, tokenizer, examples, progress=False)]
    kept = model.generation_config
    model.generation_config.no_repeat_ngram_size, model.generation_config.repetition_penalty = 1, 5.0
    try:
        assert [r.prediction for r in evaluate_niah(model, tokenizer, examples, progress=False)] == plain
        assert model.generation_config is kept and kept.repetition_penalty == 5.0  # given back as it was
    finally:
        model.generation_config.no_repeat_ngram_size = model.generation_config.repetition_penalty = None


@pytest.mark.parametrize("name", ["hybrid", "teacher"])
def test_batching_does_not_change_answers(tokenizer, models, name):
    examples = make_examples(tokenizer, ["single_number", "vt"], [320], [0.0, 0.5], samples=1)
    assert len({len(e.input_ids) for e in examples}) > 1  # left padding is exercised
    one = evaluate_niah(models[name], tokenizer, examples, batch_tokens=320, progress=False)
    batched = evaluate_niah(models[name], tokenizer, examples, batch_tokens=4 * 320, progress=False)
    assert [r.prediction for r in one] == [r.prediction for r in batched]
