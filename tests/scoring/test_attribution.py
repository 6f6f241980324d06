"""Attribution patching is the linearisation of the (frozen-attention) receiver score, and sender attribution
that of the one-step path patch (the sender score)."""

import numpy as np
import pytest
import torch

from hydrahead.scoring import ProbeConfig, build_probes
from hydrahead.scoring.attribution import attribution_effects, sender_attribution_effects
from hydrahead.scoring.patching import receiver_effects, sender_effects
from hydrahead.scoring.runner import Runner
from tests.toy_tokenizer import char_tokenizer
from tests.conftest import make_teacher


@pytest.fixture(scope="module")
def probes():
    return build_probes(char_tokenizer(), ProbeConfig(context_length=480, samples=1, capabilities=("single_key",),
                                                      needle_types=("number", "word")))


def linear_readout_model(family: str):
    """The last layer's MLP outputs zero and the final norm is removed: the logits at the readout positions
    are then an affine function of the last layer's head outputs, and so is m. In float64, so that what the
    comparison measures is linearity, not fp32 rounding summed over a long prompt and answer."""
    model = make_teacher(family)
    with torch.no_grad():
        model.model.layers[-1].mlp.down_proj.weight.zero_()
    model.model.norm = torch.nn.Identity()
    return model.double()


@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_attribution_equals_patching_when_the_readout_is_linear(family, probes):
    model = linear_readout_model(family)
    for probe in probes:
        with Runner(model) as runner:
            clean, corrupt = runner.record(probe), runner.record(probe, corrupted=True)
            patched = receiver_effects(runner, probe, clean, corrupt)
            attributed, m_clean, m_corrupt = attribution_effects(runner, probe)
        assert m_clean == pytest.approx(clean.readout, abs=1e-5)
        assert m_corrupt == pytest.approx(corrupt.readout, abs=1e-6)
        assert np.abs(patched[-1]).max() > 0.01  # the last layer's heads do matter here
        np.testing.assert_allclose(attributed[-1], patched[-1], rtol=1e-3, atol=2e-3)
        # earlier layers go through the last layer's attention: only approximately linear
        assert np.isfinite(attributed[0]).all()


def test_attribution_without_the_linear_readout_differs(probes):
    model = make_teacher("qwen3")
    probe = probes[0]
    with Runner(model) as runner:
        clean, corrupt = runner.record(probe), runner.record(probe, corrupted=True)
        patched = receiver_effects(runner, probe, clean, corrupt)
        attributed, _, _ = attribution_effects(runner, probe)
        assert runner.stats.backwards == 1
    assert not np.allclose(attributed, patched, atol=1e-3)  # a first-order approximation, not an identity
    assert np.corrcoef(attributed.ravel(), patched.ravel())[0, 1] > 0.5  # but a good one on a tiny model


@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_sender_attribution_is_the_linearised_path_patch(family, probes):
    """Receivers in two layers, so the patched run overwrites a receiver that an earlier receiver's change would
    otherwise flow through: the gradient must hold the receivers' outputs fixed, as the patched run does. q and k
    are scaled up so that attention is peaked and a sender acts through its receivers' patterns. On this tiny
    model path patching is still close to linear in the sender's change, so its full effect and the first-order
    one agree to within 1% of the largest (0.1-0.7% measured; without the receiver cut 3-6%, with the receiver
    layers' attention frozen in the backward 1.05-4%)."""
    model = make_teacher(family, num_hidden_layers=3).double()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(4.0)
            layer.self_attn.k_proj.weight.mul_(4.0)
    receivers = [(1, 0), (1, 2), (2, 1), (2, 3)]
    for probe in probes:
        with Runner(model) as runner:
            clean, corrupt = runner.record(probe), runner.record(probe, corrupted=True)
            patched = sender_effects(runner, probe, clean, corrupt, receivers)
            backwards = runner.stats.backwards
            attributed = sender_attribution_effects(runner, probe, receivers)
            assert runner.stats.backwards - backwards == 3  # the clean run's, and one per receiver layer
            assert runner.hooks.cuts == {} and not runner.hooks.grad and runner.hooks.leaves == {}
            only_layer_0 = sender_attribution_effects(runner, probe, [(0, 1)])
        largest = np.abs(patched).max()
        assert largest > 0.05
        np.testing.assert_array_equal(attributed[2], 0.0)  # no receiver after the last layer
        np.testing.assert_allclose(attributed, patched, rtol=0, atol=0.01 * largest)
        np.testing.assert_array_equal(only_layer_0, 0.0)  # nothing comes before layer 0


def test_kept_sender_inputs_are_those_of_the_two_runs(probes):
    """What the receiver pass keeps for the sender rounds (its clean residual stream and the heads' corrupted
    minus clean outputs) equals what the two recorded runs give, and so do the sender effects from it."""
    from hydrahead.scoring.attribution import SenderInputs, _receiver_pass

    model = make_teacher("qwen3", num_hidden_layers=3).double()
    receivers = [(1, 0), (1, 2), (2, 1), (2, 3)]
    for probe in probes:
        with Runner(model) as runner:
            kept = _receiver_pass(runner, probe, True, keep=True)[3]
            recorded = SenderInputs.from_runs(runner.record(probe), runner.record(probe, corrupted=True))
            from_kept = sender_attribution_effects(runner, probe, receivers, kept)
            from_runs = sender_attribution_effects(runner, probe, receivers)
        assert len(kept.hidden) == len(kept.change) == 3
        for a, b in zip(kept.hidden + kept.change, recorded.hidden + recorded.change):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
        assert (kept.clean, kept.corrupt) == pytest.approx((recorded.clean, recorded.corrupt), abs=1e-12)
        assert np.abs(from_runs).max() > 1e-3
        np.testing.assert_allclose(from_kept, from_runs, rtol=0, atol=1e-12)


def test_attribution_scores_keep_sender_inputs_within_the_budget(probes):
    """With none, one or all probes' inputs kept: the same scores, and the kept probes' runs not repeated."""
    from hydrahead.scoring.attribution import _receiver_pass, attribution_scores

    model = make_teacher("qwen3", num_hidden_layers=3).double()
    with Runner(model) as runner:
        one = _receiver_pass(runner, probes[0], True, keep=True)[3].nbytes  # room for exactly one probe
    options = dict(receiver_fraction=0.25, max_rounds=2, min_delta=1e-7)
    results = {}
    for budget, kept in ((0, 0), (one, 1), (None, len(probes))):  # None: the default, half the free memory
        with Runner(model) as runner:
            values, components, meta = attribution_scores(runner, probes, keep_bytes=budget, **options)
            results[kept] = values, components, meta, runner.stats.sequence_forwards
        assert meta["probes_kept"] == kept
    base_values, base_components, base_meta, base_forwards = results[0]
    for kept in (1, len(probes)):
        values, components, meta, forwards = results[kept]
        np.testing.assert_allclose(values, base_values, rtol=0, atol=1e-12)
        for name in base_components:
            np.testing.assert_allclose(components[name], base_components[name], rtol=0, atol=1e-12)
        assert meta["receiver_sets"] == base_meta["receiver_sets"]
        # both runs, every round whose receivers are not all in layer 0 (those return zeros without a run)
        runs = sum(max(l for l, _ in r) > 0 for r in base_meta["receiver_sets"][:base_meta["rounds"]])
        assert runs >= 1 and base_forwards - forwards == pytest.approx(2 * kept * runs)
