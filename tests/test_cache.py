"""The cache protocol of a hybrid layer (`HybridStateMixin` in hydrahead/cache.py): the conv's left context
and the GDN state, on the dynamic and the static cache."""

import pytest
import torch

import hydrahead
from tests.conftest import make_teacher


@pytest.mark.parametrize("max_cache_len", [None, 64])
def test_conv_inputs_before_hands_over_the_left_context(max_cache_len):
    """What fla's conv is given on CUDA (`conv_inputs_before`): the K - 1 inputs before each piece (None at the
    start), the same last inputs kept as `conv_window` keeps, for pieces longer and shorter than the kernel."""
    x = torch.randn(2, 40, 6)
    config = make_teacher().config
    window_cache = hydrahead.HybridHeadCache(config, max_cache_len=max_cache_len).layers[0]
    inputs_cache = hydrahead.HybridHeadCache(config, max_cache_len=max_cache_len).layers[0]
    bounds = [0, 2, 20, 21, 23, 40]
    for a, b in zip(bounds, bounds[1:]):
        window = window_cache.conv_window(x[:, a:b], 4)  # (B, 3 + T, C), zeros before the first token
        before = inputs_cache.conv_inputs_before(x[:, a:b], 4)
        if a == 0:
            assert before is None
        else:
            torch.testing.assert_close(before, window[:, :3], rtol=0, atol=0)
        torch.testing.assert_close(inputs_cache.conv_states[0], window_cache.conv_states[0], rtol=0, atol=0)


@pytest.mark.parametrize("max_cache_len", [None, 64])
def test_store_recurrent_state_keeps_a_new_state_or_copies_into_a_fixed_address(max_cache_len):
    """A dynamic cache keeps a kernel's fresh state tensor itself (no copy, outside autograd); a static cache
    copies it into the buffer whose address a captured graph reads; with autograd on, both copy."""
    layer = hydrahead.HybridHeadCache(make_teacher().config, max_cache_len=max_cache_len).layers[0]
    layer.store_recurrent_state(torch.randn(2, 3, 4, 4))
    first = layer.recurrent_state()
    new = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        layer.store_recurrent_state(new)
    assert (layer.recurrent_state() is new) == (max_cache_len is None)
    torch.testing.assert_close(layer.recurrent_state(), new, rtol=0, atol=0)
    kept, newer = layer.recurrent_state(), torch.randn(2, 3, 4, 4)
    layer.store_recurrent_state(newer)  # autograd on: copied in place
    assert layer.recurrent_state() is kept and (max_cache_len is None or kept is first)
    torch.testing.assert_close(layer.recurrent_state(), newer, rtol=0, atol=0)
    # a state of another layout or dtype is copied (converted) into the kept one, never kept itself
    for other in (torch.randn(2, 3, 4, 4).transpose(-1, -2), torch.randn(2, 3, 4, 4, dtype=torch.float64)):
        with torch.no_grad():
            layer.store_recurrent_state(other)
        assert layer.recurrent_state() is kept and kept.dtype == torch.float32 and kept.is_contiguous()
        torch.testing.assert_close(kept, other.float(), rtol=0, atol=0)
