"""Activation and path patching invariants on tiny random models."""

import json

import numpy as np
import pytest
import torch

from hydrahead import UnsupportedModelError
from hydrahead.scoring import ProbeConfig, ScoringError, build_probes, score_heads
from hydrahead.models.heads import HeadPatch
from hydrahead.scoring.patching import receiver_effects, sender_effects
from hydrahead.scoring.readout import indirect_effect, logit_margin
from hydrahead.scoring.runner import Runner
from tests.toy_tokenizer import char_tokenizer
from tests.conftest import make_teacher

CONFIG = ProbeConfig(context_length=480, samples=1, capabilities=("single_key",), needle_types=("number", "word"))


@pytest.fixture(scope="module")
def probes():
    return build_probes(char_tokenizer(), CONFIG)


def test_runner_reproduces_the_model(family, probes):
    model = make_teacher(family)
    probe = probes[0]
    with torch.no_grad():
        expected = model(probe.input_ids()).logits[0, probe.readout_positions]
    with Runner(model) as runner:
        record = runner.record(probe)
    torch.testing.assert_close(record.logits[0], expected, rtol=1e-5, atol=1e-5)
    assert model.config._attn_implementation == "sdpa"  # restored


def test_patching_a_head_with_its_own_clean_output_changes_nothing(family, probes):
    model = make_teacher(family)
    probe = probes[0]
    with Runner(model) as runner:
        clean, corrupt = runner.record(probe), runner.record(probe, corrupted=True)
        heads = [(l, h) for l in range(2) for h in range(4)]
        patches = {l: HeadPatch.from_triples([(row, h, clean.heads[l][0, :, h]) for row, (ll, h) in enumerate(heads) if ll == l])
                   for l in range(2)}
        m = runner.patched_readouts(probe, clean, patches, len(heads))
    assert clean.readout != corrupt.readout
    # the readout itself is unchanged (the IE divides by m(x) - m(x'), which a random toy model keeps tiny)
    torch.testing.assert_close(m, torch.full_like(m, clean.readout), atol=1e-6, rtol=0)
    gap = abs(clean.readout - corrupt.readout)
    torch.testing.assert_close(indirect_effect(clean.readout, m, corrupt.readout), torch.zeros(len(heads)),
                               atol=1e-6 / gap, rtol=0)


def test_patching_every_last_layer_head_gives_the_corrupted_readout(probes):
    """With layer 0's attention output cut (o_proj = 0), nothing carries the needle to the readout positions
    before the last layer, and those positions hold the same tokens in both runs; so patching every head of
    the last layer with its corrupted output must reproduce m(x') exactly (IE = 1)."""
    model = make_teacher("llama")
    with torch.no_grad():
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].self_attn.o_proj.bias.zero_()
    for probe in probes:
        with Runner(model) as runner:
            clean, corrupt = runner.record(probe), runner.record(probe, corrupted=True)
            patch = HeadPatch.from_triples([(0, h, corrupt.heads[1][0, :, h]) for h in range(4)])
            m = runner.patched_readouts(probe, clean, {1: patch}, 1)
            assert abs(clean.readout - corrupt.readout) > 1e-5
            assert float(indirect_effect(clean.readout, m, corrupt.readout)[0]) == pytest.approx(1.0, abs=1e-3)
            # one head alone does not: the other heads still read the clean needle
            ie = receiver_effects(runner, probe, clean, corrupt)
            assert not np.allclose(ie[1], 1.0, atol=1e-2)
            np.testing.assert_allclose(ie[0], 0.0, atol=1e-4)  # layer 0 writes nothing


def test_batching_does_not_mix_rows(probes):
    model = make_teacher("qwen3")
    probe = probes[1]
    with Runner(model) as runner:
        clean, corrupt = runner.record(probe), runner.record(probe, corrupted=True)
        one = receiver_effects(runner, probe, clean, corrupt, batch_size=1)
        calls = runner.stats.forward_calls
        many = receiver_effects(runner, probe, clean, corrupt, batch_size=16)
        assert runner.stats.forward_calls - calls == 2  # one batched forward per layer (4 heads each)
    np.testing.assert_allclose(one, many, rtol=1e-4, atol=1e-4)


def test_a_subset_of_heads_scores_as_in_the_full_pass(probes):
    """`heads=` scores those heads exactly as the full pass does, leaves the rest 0, and runs only their layers."""
    model = make_teacher("qwen3", num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2)
    probe = probes[0]
    subset = [(2, 1), (2, 6), (3, 0)]
    with Runner(model) as runner:
        clean, corrupt = runner.record(probe), runner.record(probe, corrupted=True)
        full = receiver_effects(runner, probe, clean, corrupt)
        calls = runner.stats.forward_calls
        part = receiver_effects(runner, probe, clean, corrupt, heads=subset)
        assert runner.stats.forward_calls - calls == 2  # layers 2 and 3 only
        receivers = [(3, h) for h in range(8)]
        full_send = sender_effects(runner, probe, clean, corrupt, receivers)
        part_send = sender_effects(runner, probe, clean, corrupt, receivers, heads=subset)
    rows, cols = zip(*subset)
    np.testing.assert_allclose(part[rows, cols], full[rows, cols], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(part_send[rows, cols], full_send[rows, cols], rtol=1e-4, atol=1e-4)
    others = np.ones_like(full, dtype=bool)
    others[rows, cols] = False
    assert not part[others].any() and not part_send[others].any()
    assert full[rows, cols].any() and full_send[2, [1, 6]].any()  # the compared values are not all zero


def test_sender_effect_matches_a_hand_made_path_patch(family, probes):
    """One-step path patching, sender (0, h) -> every head of layer 1, against a plain forward in which
    only layer 1's attention input gets the sender's change (hook on input_layernorm)."""
    model = make_teacher(family)
    probe = probes[0]
    receivers = [(1, h) for h in range(4)]
    with Runner(model) as runner:
        clean, corrupt = runner.record(probe), runner.record(probe, corrupted=True)
        ie = sender_effects(runner, probe, clean, corrupt, receivers)
    np.testing.assert_array_equal(ie[1], 0.0)  # no receiver after the last layer
    W = model.model.layers[0].self_attn.o_proj.weight  # (d, H*D)
    D = W.shape[1] // 4
    answer, distractor = torch.tensor(probe.answer), torch.tensor(probe.distractor)
    for h in range(4):
        delta = (corrupt.heads[0][0, :, h] - clean.heads[0][0, :, h]) @ W[:, h * D:(h + 1) * D].T  # (T, d)
        handle = model.model.layers[1].input_layernorm.register_forward_pre_hook(lambda m, a: (a[0] + delta,))
        try:
            with torch.no_grad():
                logits = model(probe.input_ids()).logits[:, probe.readout_positions]
        finally:
            handle.remove()
        m = logit_margin(logits, answer, distractor)
        expected = float(indirect_effect(clean.readout, m, corrupt.readout)[0])
        assert ie[0, h] == pytest.approx(expected, rel=1e-3, abs=1e-3)


def test_score_heads_all_methods(family, probes):
    model = make_teacher(family)
    for method in ("patching", "attribution", "retrieval"):
        scores = score_heads(model, method=method, probes=probes, **({"min_delta": 1e-7} if method != "retrieval" else {}))
        assert scores.values.shape == (2, 4) and scores.method == method and scores.num_kv_heads == 2
        assert np.isfinite(scores.values).all()
        meta = scores.metadata
        assert meta["num_probes"] == len(probes) and meta["forward_calls"] > 0
    assert meta["model_type"] == family


def test_patching_costs_far_less_than_a_forward_per_head(probes):
    model = make_teacher("qwen3", num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2)
    probe = probes[0]
    with Runner(model) as runner:
        clean, corrupt = runner.record(probe), runner.record(probe, corrupted=True)
        before = (runner.stats.forward_calls, runner.stats.sequence_forwards)
        receiver_effects(runner, probe, clean, corrupt, batch_size=32)
        calls, work = runner.stats.forward_calls - before[0], runner.stats.sequence_forwards - before[1]
    assert calls == 4  # one batched forward per layer, 8 heads each, instead of 32 forwards
    assert work == 8 * (4 + 3 + 2 + 1) / 4  # each batch starts at its layer: 20 sequence-forwards, not 32
    scores = score_heads(model, method="patching", probes=[probe], min_delta=1e-7, max_rounds=1)
    assert scores.metadata["rounds"] == 1 and scores.metadata["receiver_sets"][0]
    assert set(scores.components) >= {"receiver/single_key", "sender/single_key", "kappa/single_key"}


def test_scoring_errors(probes):
    model = make_teacher("qwen3")
    with pytest.raises(ScoringError, match="method must be one of"):
        score_heads(model, method="probing", probes=probes)
    with pytest.raises(ScoringError, match="needs a tokenizer"):
        score_heads(model)
    with pytest.raises(ScoringError, match="does not tell clean from corrupted"):
        score_heads(model, probes=probes, min_delta=1e6)
    with pytest.raises(UnsupportedModelError, match="head outputs are read on the teacher"):
        score_heads(torch.nn.Linear(2, 2), probes=probes)


@pytest.mark.parametrize("options, message", [
    ({"batch_size": -1}, "batch_size must be >= 1, got -1"),  # gave every head 0
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"threshold": float("nan")}, "threshold must be a finite number >= 0, got nan"),  # gave every head 0
    ({"min_delta": "x"}, "min_delta must be a number, got 'x'"),
    ({"receiver_fraction": 0}, r"receiver_fraction must be in \(0, 1\], got 0"),
    ({"max_rounds": -1}, "max_rounds must be >= 0, got -1"),
])
def test_method_options_out_of_range_are_refused(probes, options, message):
    with pytest.raises(ScoringError, match=message):
        score_heads(make_teacher("qwen3"), probes=probes, **options)


def test_numpy_options_are_saved_as_the_numbers_they_hold(probes, tmp_path):
    """A sweep over np.arange or np.float32 values: the file was refused (TypeError in json) after the scoring."""
    scores = score_heads(make_teacher("qwen3"), probes=probes, method="attribution", threshold=np.float32(0.5),
                         max_rounds=np.int64(1))
    scores.to_json(tmp_path / "s.json")
    saved = json.loads((tmp_path / "s.json").read_text())["metadata"]
    assert saved["threshold"] == 0.5 and saved["senders"] is True


def test_probes_of_another_models_tokenizer_are_refused(probes):
    import dataclasses

    model = make_teacher("qwen3")
    vocab = model.config.vocab_size
    foreign = [dataclasses.replace(p, clean_ids=p.clean_ids[:-1] + (vocab,)) for p in probes]
    with pytest.raises(ScoringError, match=f"token id {vocab} but the model has {vocab} embeddings"):
        score_heads(model, probes=foreign, method="retrieval")  # an IndexError in the embedding before
    bigger = char_tokenizer()  # probes built here: the model ran on them (their answer format) before the check
    bigger.add_tokens(["the", "The", "is", "number"])  # ids above the model's vocabulary, in every prompt
    with pytest.raises(ScoringError, match="token id .* but the model has"):
        score_heads(model, bigger, method="retrieval", probe_config=ProbeConfig(
            context_length=500, samples=1, needle_types=("number",), capabilities=("single_key",),
            haystack="noise"))
