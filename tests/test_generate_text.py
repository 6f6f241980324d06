"""`hydrahead.generate_text` and `hydrahead generate`: the text is the model's own greedy `generate`, streamed as
it comes; the cache's bytes are the plan's; sampling follows its seed; the chat template is used when there
is one; bad input is refused before any work."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

import hydrahead
from hydrahead.cli import main
from tests.eval.conftest import bpe_tokenizer, tiny_models

PROMPT = "The key is 7261. Remember it. The key is"
CHAT = "{% for message in messages %}<chat>{{ message['content'] }}{% endfor %}"


@pytest.fixture(scope="module")
def tokenizer():
    return bpe_tokenizer()


@pytest.fixture(scope="module")
def models(tokenizer):
    return tiny_models(tokenizer)


def reference(model, tokenizer, ids, max_new_tokens):
    """The greedy text of a plain `generate` call."""
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True), out.shape[1] - ids.shape[1]


@pytest.mark.parametrize("name", ["teacher", "hybrid"])
def test_the_text_is_greedy_generate_streamed(models, tokenizer, name):
    model, pieces = models[name], []
    result = hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=12, stream=pieces.append)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    text, new = reference(model, tokenizer, ids, 12)
    assert result.text == text and "".join(pieces) == text
    assert (result.prompt_tokens, result.new_tokens, result.chat) == (ids.shape[1], new, False)
    assert result.first_token_s > 0 and result.decode_tokens_per_s > 0
    assert result.stopped == "length" and new == 12
    assert "prompt:" in result.summary() and json.dumps(result.to_dict())


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_the_cache_holds_the_plans_bytes(models, tokenizer, cache):
    hybrid = hydrahead.generate_text(models["hybrid"], tokenizer, PROMPT, max_new_tokens=6, cache=cache)
    teacher = hydrahead.generate_text(models["teacher"], tokenizer, PROMPT, max_new_tokens=6, cache=cache)
    assert hybrid.cache.endswith(cache) and teacher.cache.endswith(cache)
    assert set(hybrid.cache_bytes) == {"kv", "recurrent", "conv"} and hybrid.cache_bytes["recurrent"] > 0
    assert sum(hybrid.cache_bytes.values()) == hybrid.plan_cache_bytes
    assert "as the plan implies" in hybrid.summary()
    # the teacher's K/V, measured in its own cache, per position, is what the hybrid's report compares with
    config = models["teacher"].config
    per_position = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4
    assert teacher.cache_bytes == {"kv": per_position * teacher.cache_positions}
    assert hybrid.teacher_kv_bytes == per_position * hybrid.cache_positions
    if cache == "dynamic":  # the last new token is not in the cache
        assert hybrid.cache_positions == hybrid.prompt_tokens + hybrid.new_tokens - 1
    else:
        assert hybrid.cache_positions >= hybrid.prompt_tokens + 6 - 1


def test_a_cache_larger_than_the_teachers_says_from_where_it_is_the_smaller(models, tokenizer):
    import dataclasses
    import re

    result = hydrahead.generate_text(models["hybrid"], tokenizer, PROMPT, max_new_tokens=2)
    assert "the smaller from" not in result.summary() or sum(result.cache_bytes.values()) > result.teacher_kv_bytes
    # a short context: 100 bytes of K/V per position against the teacher's 400, and 5,000 bytes of state
    short = dataclasses.replace(result, cache_positions=10, cache_bytes={"kv": 1000, "recurrent": 4000, "conv": 1000},
                                plan_cache_bytes=6000, teacher_kv_bytes=4000)
    found = re.search(r"\(150\.0%\): the GDN state has a fixed size, and the hybrid's cache is the smaller from "
                      r"(\d+) positions on", short.summary())
    assert found, short.summary()
    positions = int(found[1])
    assert 5000 + 100 * positions <= 400 * positions and 5000 + 100 * (positions - 1) > 400 * (positions - 1)


def test_sampling_follows_its_seed(models, tokenizer):
    model = models["hybrid"]
    first, again, other = (hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=12, temperature=5.0, seed=s)
                           for s in (1, 1, 2))
    greedy = hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=12)
    assert first.text == again.text
    assert len({first.text, other.text, greedy.text}) == 3  # 12 tokens of a nearly flat distribution


def test_the_models_end_of_text_stops_it(models, tokenizer):
    model = models["teacher"]
    greedy = hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=4)
    first = tokenizer(greedy.text, add_special_tokens=False).input_ids[0]
    model.generation_config.eos_token_id = first
    try:
        result = hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=4)
    finally:
        model.generation_config.eos_token_id = None
    assert (result.stopped, result.new_tokens) == ("eos", 1)
    assert (result.first_step_s, result.decode_tokens_per_s) == (None, None)
    assert "end of text" in result.summary()


def test_the_checkpoints_stop_strings_stop_it(models, tokenizer):
    """A generation config with stop strings: transformers' generate needs the tokenizer for them (it refused
    every call without it)."""
    model = models["teacher"]
    greedy = hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=8)
    model.generation_config.stop_strings = [greedy.text[:3]]
    try:
        result = hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=8)
    finally:
        model.generation_config.stop_strings = None
    assert result.stopped == "other" and result.new_tokens < 8
    assert greedy.token_ids[:result.new_tokens] == result.token_ids


def test_the_chat_template_when_there_is_one(models):
    plain, chat = bpe_tokenizer(), bpe_tokenizer()
    chat.chat_template = CHAT
    model = models["hybrid"]
    result = hydrahead.generate_text(model, chat, PROMPT, max_new_tokens=3)
    assert result.chat and result.prompt_tokens == len(chat("<chat>" + PROMPT).input_ids)
    assert not hydrahead.generate_text(model, chat, PROMPT, max_new_tokens=3, chat=False).chat
    with pytest.raises(hydrahead.GenerationError, match="no chat template"):
        hydrahead.generate_text(model, plain, PROMPT, chat=True)
    with pytest.raises(hydrahead.GenerationError, match="the prompt is empty"):
        hydrahead.generate_text(model, plain, " \n")
    with pytest.raises(hydrahead.GenerationError, match="unknown cache 'paged'"):
        hydrahead.generate_text(model, plain, PROMPT, cache="paged")
    # refused before generate runs: a float max_new_tokens (nan, inf) never stopped it
    for kwargs, message in [({"max_new_tokens": float("nan")}, "max_new_tokens must be an integer, got nan"),
                            ({"max_new_tokens": float("inf")}, "max_new_tokens must be an integer, got inf"),
                            ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer"),
                            ({"max_new_tokens": True}, "max_new_tokens must be an integer, got True"),
                            ({"temperature": None}, "temperature must be a number, got None"),
                            ({"temperature": "0.5"}, "temperature must be a number, got '0.5'"),
                            ({"temperature": 1.0, "top_k": 1.5}, "top_k must be an integer"),
                            ({"chat": "no"}, "chat must be None, True or False, got 'no'"),
                            ({"chat": 1}, "chat must be None, True or False, got 1"),
                            ({"stream": "out.txt"}, "stream must be a function of the new text"),
                            ({"temperature": 1.0, "seed": 1.5}, "seed must be an integer, got 1.5"),  # seeded 1
                            ({"temperature": 1.0, "seed": 2**64}, r"seed must be a whole number from 0 to 2\*\*64"),
                            ({"seed": -1}, "seed must be a whole number from 0"),
                            ({"warmup": "yes"}, "warmup must be True or False, got 'yes'")]:
        with pytest.raises(hydrahead.GenerationError, match=message):
            hydrahead.generate_text(model, plain, PROMPT, **kwargs)
    with pytest.raises(hydrahead.GenerationError, match="the prompt must be a string, got None"):
        hydrahead.generate_text(model, plain, None)
    with pytest.raises(hydrahead.GenerationError, match="model must be a transformers causal LM .*got 'hybrid/'"):
        hydrahead.generate_text("hybrid/", plain, PROMPT)  # AttributeError: 'str' object has no attribute 'config'
    with pytest.raises(hydrahead.GenerationError, match="tokenizer must be a transformers tokenizer .*got None"):
        hydrahead.generate_text(model, None, PROMPT)


def test_the_command_prints_the_text_and_writes_the_figures(models, tokenizer, tmp_path, capsys):
    hydrahead.save_hybrid(models["hybrid"], tmp_path / "hybrid", tokenizer)
    (tmp_path / "prompt.txt").write_text(PROMPT + "\n")
    out = tmp_path / "figures.json"
    assert main(["generate", str(tmp_path / "hybrid"), "--prompt-file", str(tmp_path / "prompt.txt"),
                 "--max-new-tokens", "5", "--json", str(out)]) == 0
    printed = capsys.readouterr()
    figures = json.loads(out.read_text())
    assert printed.out == figures["text"] + "\n"
    assert figures["prompt_tokens"] == len(tokenizer(PROMPT).input_ids)  # the file's final newline dropped
    assert figures["new_tokens"] == 5 and figures["dtype"] == "float32"
    assert "as the plan implies" in printed.err and f"figures to {out}" in printed.err


def test_quiet_prints_the_text_alone(models, tokenizer, tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    hydrahead.save_hybrid(models["hybrid"], tmp_path / "hybrid", tokenizer)
    hf_logging.enable_progress_bar()
    capsys.readouterr()  # the save's own bar
    assert main(["generate", str(tmp_path / "hybrid"), "-p", PROMPT, "--max-new-tokens", "3", "--quiet"]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() and printed.err == ""  # no figures, no "Loading weights" bar
    assert hf_logging.is_progress_bar_enabled()  # turned off for the load alone


def test_a_prompt_files_last_line_end_is_dropped_crlf_too(models, tokenizer, tmp_path, capsys):
    hydrahead.save_hybrid(models["hybrid"], tmp_path / "hybrid", tokenizer)
    for ending in ("\n", "\r\n"):
        (tmp_path / "prompt.txt").write_bytes((PROMPT + ending).encode())
        capsys.readouterr()
        assert main(["generate", str(tmp_path / "hybrid"), "--prompt-file", str(tmp_path / "prompt.txt"),
                     "--max-new-tokens", "2"]) == 0
        assert f"prompt: {len(tokenizer(PROMPT).input_ids)} tokens" in capsys.readouterr().err


def test_the_prompt_file_may_be_a_pipe(models, tokenizer, tmp_path, capsys):
    """`--prompt-file <(...)` in a shell is a pipe, not a regular file: it was refused as "not found"."""
    import os
    import threading

    hydrahead.save_hybrid(models["hybrid"], tmp_path / "hybrid", tokenizer)
    fifo = tmp_path / "prompt"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=(PROMPT,))
    writer.start()
    try:
        assert main(["generate", str(tmp_path / "hybrid"), "--prompt-file", str(fifo), "--max-new-tokens", "2"]) == 0
    finally:
        if writer.is_alive():  # nothing read the pipe: open it for reading so that the writer ends
            fifo.read_text()
        writer.join()
    assert f"prompt: {len(tokenizer(PROMPT).input_ids)} tokens" in capsys.readouterr().err


def test_every_eos_stops_it_and_times_are_one_per_token(models, tokenizer):
    """The tokenizer's EOS stops it as well as the config's (an instruct tokenizer's end-of-turn token is often not
    in the config); each new token has its arrival time, the decode rate is the median step after the first."""
    model = models["teacher"]
    greedy = hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=6)
    assert len(greedy.token_times_s) == 6 and greedy.token_times_s == sorted(greedy.token_times_s)
    gaps = [b - a for a, b in zip(greedy.token_times_s[1:], greedy.token_times_s[2:])]
    assert greedy.decode_step_s == statistics.median(gaps)
    sampled = dict(max_new_tokens=6, temperature=5.0, seed=0)  # varied tokens (greedy repeats one here)
    new = hydrahead.generate_text(model, tokenizer, PROMPT, **sampled).token_ids
    j = next(j for j in range(1, len(new)) if new[j] not in new[:j])  # a token first written at step j + 1
    model.generation_config.eos_token_id = [new[j]]
    try:
        stops = hydrahead.generate_text(model, tokenizer, PROMPT, **sampled)
        assert (stops.stopped, stops.token_ids) == ("eos", new[: j + 1])
        assert hydrahead.generation.eos_ids(model, tokenizer) == sorted({new[j], tokenizer.eos_token_id})
    finally:
        model.generation_config.eos_token_id = None


def test_decoding_is_what_was_asked(models, tokenizer):
    """Sampling uses the top_p and top_k given (0: off), not the checkpoint's; they are refused without a temperature;
    a warm-up run leaves the figures' text unchanged."""
    model = models["hybrid"]
    model.generation_config.top_k = 1  # a checkpoint's setting that would make sampling greedy
    try:
        sampled = {hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=8, temperature=5.0, seed=s).text
                   for s in range(3)}
        assert len(sampled) == 3
        kept = hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=8, temperature=5.0, top_k=1, seed=0)
        assert kept.text == hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=8).text
        assert kept.decoding == {"do_sample": True, "temperature": 5.0, "top_p": 1.0, "top_k": 1}
    finally:
        model.generation_config.top_k = None
    with pytest.raises(hydrahead.GenerationError, match="apply when sampling"):
        hydrahead.generate_text(model, tokenizer, PROMPT, top_p=0.5)
    warm = hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=4, warmup=True)
    assert warm.warmed_up and "warm-up" in warm.summary()
    assert warm.text == hydrahead.generate_text(model, tokenizer, PROMPT, max_new_tokens=4).text


def test_standard_input_is_checked_as_a_file_is(models, tokenizer, tmp_path, monkeypatch, capsys):
    import io
    import sys

    hydrahead.save_hybrid(models["hybrid"], tmp_path / "hybrid", tokenizer)
    capsys.readouterr()  # the save's progress bar
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("caf\xe9".encode("latin-1"))))
    assert main(["generate", str(tmp_path / "hybrid"), "-p", "-"]) == 2
    assert capsys.readouterr().err.strip() == ("hydrahead generate: error: standard input is not UTF-8 text "
                                               "(byte 3: b'\\xe9')")
