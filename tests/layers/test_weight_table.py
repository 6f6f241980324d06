"""Tables made from weights alone (the q/k norm tables of both branches, the fusion's gains, the GDN decay rate)
are kept in the cache for one generation, so a decode step launches no kernels for them, and never on the
module: weights change between generations in ways no key could see (fused AdamW and `.data` edits leave the
version counter alone). The reference is the same forward with autograd on, which always builds them."""

import pytest
import torch

import hydrahead
from hydrahead import HeadPlan, HybridOptions
from tests.conftest import make_teacher


def hybrid():
    # layer 0: FA and GDN heads (both q/k norm tables and the fusion's); layer 1: GDN only
    teacher = make_teacher("qwen3")
    return hydrahead.convert(teacher, HeadPlan(((0,), ()), 4, 2), HybridOptions.preset("paper")).eval()


def tables(cache):
    return {(i, name): t for i, layer in enumerate(cache.layers)
            for name, t in layer.__dict__.get("weight_tables", {}).items()}


def prefill_and_steps(model, ids, grad: bool, steps: int = 3):
    """Logits of a prefill of all but `steps` tokens and of one-token steps through one cache; the cache."""
    cache = hydrahead.HybridHeadCache(model.config)
    with torch.set_grad_enabled(grad):
        out = [model(ids[:, : ids.shape[1] - steps], past_key_values=cache, use_cache=True).logits]
        for t in range(ids.shape[1] - steps, ids.shape[1]):
            out.append(model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits)
    return torch.cat(out, 1).detach(), cache


def test_tables_live_in_the_cache_for_one_generation():
    model = hybrid()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    cache = hydrahead.HybridHeadCache(model.config)
    with torch.no_grad():
        model(ids[:, :10], past_key_values=cache, use_cache=True)
        first = tables(cache)
        assert {name for _, name in first} == {("fa qk_norm", torch.float32), ("gdn qk_norm", torch.float32),
                                               ("fusion", torch.float32), ("gdn gate",)}
        model(ids[:, 10:11], past_key_values=cache, use_cache=True)
    assert tables(cache).keys() == first.keys()
    assert all(tables(cache)[k] is t for k, t in first.items())  # a step reuses them
    assert tables(hydrahead.HybridHeadCache(model.config)) == {}  # a new generation builds its own
    assert not any("weight_tables" in m.__dict__ or "_weight_tables" in m.__dict__ for m in model.modules())


def test_no_tables_kept_without_a_cache_or_with_autograd():
    model = hybrid()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    _, cache = prefill_and_steps(model, ids, grad=True)
    assert tables(cache) == {}


@pytest.mark.parametrize("change", ["in place", ".data edit", "optimizer step", "load_state_dict"])
def test_a_new_generation_sees_changed_weights(change):
    model = hybrid()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    before, _ = prefill_and_steps(model, ids, grad=False)
    targets = [p for name, p in model.named_parameters() if name.endswith(("gain", "norm.weight", "A_log", "dt_bias"))]
    if change == "in place":
        with torch.no_grad():
            for p in targets:
                p.mul_(torch.rand_like(p) + 0.5)
    elif change == ".data edit":  # as fused AdamW, EMA updates and broadcasts do: no version bump
        for p in targets:
            p.data.mul_(torch.rand_like(p) + 0.5)
    elif change == "optimizer step":
        model.train()
        model(ids, labels=ids, use_cache=False).loss.backward()
        torch.optim.AdamW(targets, lr=0.3, fused=True).step()  # the trainer's on CUDA
        model.eval()
    else:
        other = hybrid()
        with torch.no_grad():
            for name, p in other.named_parameters():
                if name.endswith(("gain", "norm.weight", "A_log", "dt_bias")):
                    p.mul_(torch.rand_like(p) + 0.5)
        model.load_state_dict(other.state_dict())
    after, _ = prefill_and_steps(model, ids, grad=False)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, prefill_and_steps(model, ids, grad=True)[0])


@pytest.mark.parametrize("max_cache_len", [None, 32])
def test_a_reset_cache_drops_its_tables(max_cache_len):
    """A cache reused for another generation (reset) sees weights changed in between, and a dtype cast (the
    dynamic cache, whose buffers are made afresh): it gives what a fresh cache gives."""
    model = hybrid()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    cache = hydrahead.HybridHeadCache(model.config, max_cache_len=max_cache_len)
    with torch.no_grad():
        model(ids, past_key_values=cache, use_cache=True)
        assert tables(cache)
        cache.reset()
        assert tables(cache) == {}
        for name, p in model.named_parameters():
            if name.endswith(("gain", "norm.weight", "A_log", "dt_bias")):
                p.mul_(torch.rand_like(p) + 0.5)
        if max_cache_len is None:
            model.to(torch.float64)
        got = model(ids, past_key_values=cache, use_cache=True).logits
        fresh = model(ids, past_key_values=hydrahead.HybridHeadCache(model.config, max_cache_len=max_cache_len),
                      use_cache=True).logits
    torch.testing.assert_close(got, fresh, rtol=0, atol=0)
