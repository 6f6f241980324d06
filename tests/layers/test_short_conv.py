"""The short conv: its decode step (one token over the cached window) equals the convolution of the whole
sequence (the cache's side of it, the left context handed to fla's conv: tests/test_cache.py)."""

import torch

import hydrahead
from hydrahead.layers.short_conv import ShortConv
from tests.conftest import make_teacher


def test_token_by_token_with_a_cache_equals_one_call():
    conv = ShortConv(6, 4)
    with torch.no_grad():
        conv.weight.normal_()
    x = torch.randn(2, 11, 6)
    full = conv(x)
    cache = hydrahead.HybridHeadCache(make_teacher().config).layers[0]
    pieces = [conv(x[:, :3], cache)] + [conv(x[:, t : t + 1], cache) for t in range(3, 11)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-6, atol=1e-6)
    assert cache.conv_states[0].shape == (2, 3, 6)  # the last K - 1 inputs


def test_a_prompt_shorter_than_the_kernel_pads_with_zeros():
    conv = ShortConv(4, 4)
    with torch.no_grad():
        conv.weight.normal_()
    x = torch.randn(1, 5, 4)
    cache = hydrahead.HybridHeadCache(make_teacher().config).layers[0]
    pieces = [conv(x[:, :1], cache)] + [conv(x[:, t : t + 1], cache) for t in range(1, 5)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), conv(x), rtol=1e-6, atol=1e-6)


def test_matches_a_depthwise_conv1d_with_gradients():
    """The shifted multiply-adds compute torch's depthwise causal conv1d, values and gradients (fp64)."""
    conv = ShortConv(5, 4).double()
    with torch.no_grad():
        conv.weight.normal_()
    x = torch.randn(2, 9, 5, dtype=torch.float64, requires_grad=True)
    ours = conv(x)
    reference = torch.nn.functional.silu(
        torch.nn.functional.conv1d(torch.nn.functional.pad(x.transpose(1, 2), (3, 0)), conv.weight.unsqueeze(1), groups=5)
    ).transpose(1, 2)
    torch.testing.assert_close(ours, reference)
    grad = torch.randn_like(ours)
    ours_grads = torch.autograd.grad(ours, (x, conv.weight), grad)
    reference_grads = torch.autograd.grad(reference, (x, conv.weight), grad)
    for a, b in zip(ours_grads, reference_grads):
        torch.testing.assert_close(a, b)
