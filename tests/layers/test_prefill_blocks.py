"""A long CPU inference prefill runs the GDN branch one block of tokens at a time (block-sized temporaries):
the same logits, cache and next tokens as one block over the whole prompt."""

import pytest
import torch

import hydrahead
from hydrahead import HeadPlan, HybridHeadCache, HybridOptions
from hydrahead.layers.gdn import GatedDeltaNetBranch
from tests.conftest import make_teacher


@pytest.fixture(scope="module")
def model():
    teacher = make_teacher("qwen2")  # q/k/v biases: padding must zero them before the conv
    return hydrahead.convert(teacher, HeadPlan(((0,), (1, 3)), 4, 2), HybridOptions.preset("paper")).eval()


def run(model, ids, mask, block, monkeypatch, before=0):
    monkeypatch.setattr(GatedDeltaNetBranch, "block_tokens", lambda self, x: block)
    cache = HybridHeadCache(model.config)
    with torch.no_grad():
        if before:  # a first forward fills the cache; the long one continues it (conv window, state carried)
            model(ids[:, :before], attention_mask=mask[:, :before], past_key_values=cache, use_cache=True)
        logits = model(ids[:, before:], attention_mask=mask, past_key_values=cache, use_cache=True).logits
        step = model(ids[:, :1], attention_mask=torch.cat([mask, mask[:, :1]], 1), past_key_values=cache,
                     use_cache=True, position_ids=mask.sum(1, keepdim=True)).logits
    return logits, step, cache


@pytest.mark.parametrize("before", [0, 5])
def test_blocks_give_the_same_logits_cache_and_next_step(model, monkeypatch, before):
    ids = torch.randint(0, model.config.vocab_size, (2, 150))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # left padding in one row
    whole = run(model, ids, mask, 10**6, monkeypatch, before)
    blocks = run(model, ids, mask, 64, monkeypatch, before)
    for a, b in zip(whole[:2], blocks[:2]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for la, lb in zip(whole[2].layers, blocks[2].layers):
        torch.testing.assert_close(lb.recurrent_states[0], la.recurrent_states[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lb.conv_states[0], la.conv_states[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shared_kv", [False, True])
def test_a_block_keeps_its_largest_temporary_within_the_piece_budget(shared_kv):
    """The block's q | k | v projection (B, block, sum(split)) fp32 is its largest temporary: within PIECE_BYTES,
    and the block as long as that allows (a multiple of the GDN chunk)."""
    from hydrahead.utils.memory import PIECE_BYTES

    branch = GatedDeltaNetBranch(2048, 14, 128, qkv_bias=False, qk_norm=True, eps=1e-6, conv_size=4, rope=False,
                                 kv_of_head=tuple(h // 2 for h in range(14)) if shared_kv else None)
    x = torch.empty(1, 1, 2048)
    block = branch.block_tokens(x)
    per_token = sum(branch.split) * 4
    assert block % 64 == 0 and block * per_token <= PIECE_BYTES < (block + 64) * per_token
