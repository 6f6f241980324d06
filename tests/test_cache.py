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
    """A dynamic cache keeps a kernel's fresh state tensor itself (no copy; with autograd on, always, so the
    gradient flows back through it); a static cache copies it into the buffer whose address a captured graph
    reads."""
    layer = hydrahead.HybridHeadCache(make_teacher().config, max_cache_len=max_cache_len).layers[0]
    with torch.no_grad():
        layer.store_recurrent_state(torch.randn(2, 3, 4, 4))
    first = layer.recurrent_state()
    new = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        layer.store_recurrent_state(new)
    assert (layer.recurrent_state() is new) == (max_cache_len is None)
    torch.testing.assert_close(layer.recurrent_state(), new, rtol=0, atol=0)
    newer = torch.randn(2, 3, 4, 4).transpose(-1, -2)  # autograd on: a dynamic cache keeps any layout
    layer.store_recurrent_state(newer)
    assert (layer.recurrent_state() is newer) == (max_cache_len is None)
    assert max_cache_len is None or layer.recurrent_state() is first
    torch.testing.assert_close(layer.recurrent_state(), newer, rtol=0, atol=0)
    with torch.no_grad():
        layer.store_recurrent_state(torch.randn(2, 3, 4, 4))
    kept = layer.recurrent_state()
    # a state of another layout or dtype is copied (converted) into the kept one, never kept itself
    for other in (torch.randn(2, 3, 4, 4).transpose(-1, -2), torch.randn(2, 3, 4, 4, dtype=torch.float64)):
        with torch.no_grad():
            layer.store_recurrent_state(other)
        assert layer.recurrent_state() is kept and kept.dtype == torch.float32 and kept.is_contiguous()
        torch.testing.assert_close(kept, other.float(), rtol=0, atol=0)


@pytest.mark.parametrize("max_cache_len", [None, 64])
def test_states_from_a_forward_with_autograd_stay_in_its_graph(max_cache_len):
    """With autograd on, a dynamic cache keeps the new conv inputs and GDN state themselves (the gradient of a
    later forward reaches the earlier one through them, and nothing autograd saved is overwritten); a static
    cache copies them into its fixed buffers, detached."""
    layer = hydrahead.HybridHeadCache(make_teacher().config, max_cache_len=max_cache_len).layers[0]
    x = torch.randn(2, 5, 6, requires_grad=True)
    layer.conv_window(x, 4)
    layer.store_recurrent_state(x[:, :4, :4, None].expand(2, 4, 4, 4) * 2)
    for state in (layer.conv_states[0], layer.recurrent_state()):
        assert state.requires_grad == (max_cache_len is None)
        assert state._base is None  # never a view of the whole input (which it would keep alive)
    window = layer.conv_window(torch.randn(2, 3, 6), 4)
    if max_cache_len is None:
        (window.sum() + layer.recurrent_state().sum()).backward()
        assert x.grad is not None and x.grad[:, 2:].abs().sum() > 0


@pytest.mark.parametrize("op", ["reorder_cache", "batch_repeat_interleave", "batch_select_indices"])
def test_batch_ops_reach_states_and_kv_of_layers_with_and_without_fa_heads(op):
    """Beam search and transformers' batch edits act on every state, and on K/V where a layer has them: layer 0
    here has no FA heads, so no K/V (transformers' own methods would index its missing keys)."""
    from hydrahead import HeadPlan, HybridOptions

    teacher = make_teacher()
    model = hydrahead.convert(teacher, HeadPlan(((), (1, 2)), 4, 2), HybridOptions.preset("paper")).eval()
    ids = torch.randint(0, model.config.vocab_size, (3, 7))
    rows, arg = {"reorder_cache": ([2, 0, 0], torch.tensor([2, 0, 0])),
                 "batch_repeat_interleave": ([0, 0, 1, 1, 2, 2], 2),
                 "batch_select_indices": ([2, 1], torch.tensor([2, 1]))}[op]
    with torch.no_grad():
        cache = hydrahead.HybridHeadCache(model.config)
        model(ids[:, :6], past_key_values=cache, use_cache=True)
        assert cache.layers[0].keys is None and cache.layers[1].keys is not None
        getattr(cache, op)(arg)
        got = model(ids[rows, 6:], past_key_values=cache, use_cache=True).logits
        expected = model(ids[rows], use_cache=False).logits[:, 6:]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_hybrid_cache_refuses_to_roll_back():
    """`crop` (what assisted and prompt-lookup decoding call) cannot undo a GDN state: a CacheError, and the
    cache says it is not croppable."""
    cache = hydrahead.HybridHeadCache(make_teacher().config)
    assert not cache.is_croppable
    with pytest.raises(hydrahead.CacheError, match="cannot be rolled back"):
        cache.crop(-1)


@pytest.mark.parametrize("max_cache_len", [None, 16])
@pytest.mark.parametrize("fa_heads", [((), (1, 2)), ((), ())])
def test_cache_nbytes_counts_the_states_and_kv_the_plan_implies(max_cache_len, fa_heads):
    """`cache_nbytes` (what `generate_text` reports and bench/inference.py's max batch divides by) counts every GDN
    state and conv window, a plan without FA heads included, and a plain cache's K/V."""
    from transformers import DynamicCache, StaticCache

    from hydrahead import HeadPlan, HybridOptions
    from hydrahead.cache import cache_nbytes
    from hydrahead.models.footprint import footprint

    teacher = make_teacher()
    model = hydrahead.convert(teacher, HeadPlan(fa_heads, 4, 2), HybridOptions.preset("paper")).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 7))
    figures = footprint(model)
    tokens = 7 if max_cache_len is None else max_cache_len
    with torch.no_grad():
        cache = hydrahead.HybridHeadCache(model.config, max_cache_len=max_cache_len)
        model(ids, past_key_values=cache, use_cache=True)
        plain = DynamicCache(config=teacher.config) if max_cache_len is None else StaticCache(teacher.config, 16)
        teacher(ids, past_key_values=plain, use_cache=True)
    held = cache_nbytes(cache)
    assert held["recurrent"] > 0 and held["conv"] > 0
    assert sum(held.values()) == figures["kv_bytes_per_token"] * tokens + figures["state_bytes_per_sequence"]
    with torch.no_grad():  # decode steps: the conv state was kept as a view of the step's whole K-input window,
        for _ in range(2):  # which held K inputs' bytes for the K - 1 counted (a view's storage is counted now)
            model(ids[:, :1], past_key_values=cache, use_cache=True)
    positions = 9 if max_cache_len is None else max_cache_len
    held = cache_nbytes(cache)
    assert sum(held.values()) == figures["kv_bytes_per_token"] * positions + figures["state_bytes_per_sequence"]
    windows = [layer.conv_states[0] for layer in cache.layers if layer.is_conv_states_initialized[0]]
    assert held["conv"] == sum(w.untyped_storage().nbytes() for w in windows)  # what the cache keeps alive
    assert cache_nbytes(plain) == {"kv": figures["teacher_kv_bytes_per_token"] * tokens}


def test_a_cache_is_built_from_the_models_config_and_for_its_layers():
    plan = hydrahead.HeadPlan(((0,), (2,)), 4, 2)
    model = hydrahead.convert(make_teacher("qwen3"), plan)
    for args, message in [((None,), r"takes the hybrid's config \(model.config\), got a NoneType"),
                          (({"num_hidden_layers": 2},), "got a dict whose num_hidden_layers is None"),
                          ((model.config, -3), "max_cache_len must be >= 1 position, got -3"),  # failed at a forward
                          ((model.config, 8.5), "max_cache_len must be an integer, got 8.5"),
                          ((model.config, None, "gpu"), "unknown device 'gpu' for the cache; give the model's own"),
                          ((model.config, 8, f"cuda:{torch.cuda.device_count()}"), "is not available here")]:
        with pytest.raises(hydrahead.CacheError, match=message):
            hydrahead.HybridHeadCache(*args)
    deeper = hydrahead.convert(make_teacher("qwen3", num_hidden_layers=3), hydrahead.HeadPlan(((0,), (2,), (1,)), 4, 2))
    with pytest.raises(hydrahead.CacheError, match="the cache has 3 layers and the model 2"):  # an IndexError before
        model(torch.randint(1, 90, (1, 5)), past_key_values=hydrahead.HybridHeadCache(deeper.config))
