"""Hybrid cache and generation: greedy decode with the cache equals recomputation; padding does not leak."""

import pytest
import torch

import hydrahead
from hydrahead import HeadPlan, HybridOptions
from tests.conftest import make_teacher

PLANS = {
    "mixed": ((0, 3), (2,)),
    "no-fa-in-layer0": ((), (1, 2)),
    "all-gdn": ((), ()),
}


def hybrid(family="qwen3", plan="mixed", preset="paper"):
    teacher = make_teacher(family)
    cfg = teacher.config
    model = hydrahead.convert(teacher, HeadPlan(PLANS[plan], cfg.num_attention_heads, cfg.num_key_value_heads),
                              HybridOptions.preset(preset, train_length=8)).eval()
    # Random weights emit any token; an EOS would end generation early and hide the comparison.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def greedy_by_recomputation(model, ids, steps):
    for _ in range(steps):
        with torch.no_grad():
            logits = model(ids, use_cache=False).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("plan", list(PLANS))
def test_generate_equals_recomputation(plan):
    # train_length=8 puts the log-length scale to work inside this short test.
    model = hybrid(plan=plan)
    ids = torch.randint(0, model.config.vocab_size, (1, 11))
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(out, greedy_by_recomputation(model, ids, 8))


def test_generate_equals_recomputation_each_family(family):
    model = hybrid(family=family)
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(out, greedy_by_recomputation(model, ids, 6))


def test_cached_logits_match_full_forward():
    """Prefill + one-token steps with the cache give the logits of a single full forward."""
    model = hybrid()
    ids = torch.randint(0, model.config.vocab_size, (2, 14))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = hydrahead.HybridHeadCache(model.config)
        pieces = [model(ids[:, :9], past_key_values=cache, use_cache=True).logits]
        for t in range(9, 14):
            pieces.append(model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-4, atol=1e-5)


def test_batched_left_padding_equals_one_by_one():
    model = hybrid()
    lengths = [5, 12, 8]
    prompts = [torch.randint(1, model.config.vocab_size, (n,)) for n in lengths]
    width = max(lengths)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=7, do_sample=False)
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], max_new_tokens=7, do_sample=False)
        assert torch.equal(batched[i, width:], alone[0, len(p):]), f"prompt {i} differs"


def test_cache_holds_only_fa_kv_heads():
    model = hybrid()
    ids = torch.randint(0, model.config.vocab_size, (2, 10))
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
    assert isinstance(cache, hydrahead.HybridHeadCache)
    plan = model.hydrahead_plan
    for i, layer in enumerate(cache.layers):
        assert layer.keys.shape == (2, plan.fa_kv_heads_per_layer[i], 10, model.config.head_dim)
        assert layer.recurrent_states[0].shape[1] == len(plan.la_heads(i))
    D = model.config.head_dim
    assert cache.nbytes()["kv"] == 2 * 2 * 10 * D * 4 * sum(plan.fa_kv_heads_per_layer)


def test_filled_foreign_cache_is_rejected():
    from transformers import DynamicCache

    model = hybrid()
    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, 3, model.config.head_dim), torch.zeros(1, 2, 3, model.config.head_dim), 0)
    with pytest.raises(hydrahead.CacheError, match="HybridHeadCache"):
        model(torch.ones(1, 1, dtype=torch.long), past_key_values=cache, use_cache=True)
