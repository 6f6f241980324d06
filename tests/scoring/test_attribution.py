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
            assert runner.hooks.patches == {} and not runner.hooks.grad and runner.hooks.leaves == {}
            only_layer_0 = sender_attribution_effects(runner, probe, [(0, 1)])
        largest = np.abs(patched).max()
        assert largest > 0.05
        np.testing.assert_array_equal(attributed[2], 0.0)  # no receiver after the last layer
        np.testing.assert_allclose(attributed, patched, rtol=0, atol=0.01 * largest)
        np.testing.assert_array_equal(only_layer_0, 0.0)  # nothing comes before layer 0
