"""The FA branch's log-length query scale (paper preset): a query at position t is sharpened by
s_t = max(1, log(t + 1) / log(L_train)), which equals attending with the softmax scale times s_t."""

import math

import torch

import hydrahead
from hydrahead import HeadPlan, HybridOptions
from hydrahead.layers.context import ForwardContext
from tests.conftest import make_teacher


def test_query_scale_values_shape_and_dtype():
    context = ForwardContext()
    positions = torch.tensor([[0, 7, 8, 63]])
    scale = context.query_scale(positions, 4, positions.device, 8, torch.bfloat16)
    assert scale.shape == (1, 1, 4, 1) and scale.dtype == torch.bfloat16
    expected = torch.tensor([1.0, 1.0, math.log(9) / math.log(8), math.log(64) / math.log(8)])
    torch.testing.assert_close(scale.flatten().float(), expected, rtol=1e-2, atol=0)  # bf16
    assert context.query_scale(positions, 4, positions.device, 8, torch.bfloat16) is scale  # once per forward
    assert context.query_scale(positions, 4, positions.device, 8).dtype == torch.float32


def test_scaled_queries_equal_a_sharper_softmax_per_position():
    hybrid = hydrahead.convert(make_teacher(), HeadPlan(((0, 1), (3,)), 4, 2),
                               HybridOptions.preset("paper", train_length=4))
    fa = hybrid.model.layers[0].self_attn.fa
    x = torch.randn(1, 12, hybrid.config.hidden_size)
    position_ids = torch.arange(12)[None]
    embeddings = hybrid.model.rotary_emb(x, position_ids)
    with torch.no_grad():
        got = fa(x, embeddings, None, position_ids=position_ids)  # (1, T, H, D)
        base, fa.log_scale_length = fa.scaling, None
        for t in range(12):  # row t alone, its scale moved into the softmax's
            fa.scaling = base * max(1.0, math.log(t + 1) / math.log(4))
            torch.testing.assert_close(got[:, t], fa(x, embeddings, None, position_ids=position_ids)[:, t])
        fa.scaling = base
        assert not torch.allclose(got[:, 11], fa(x, embeddings, None, position_ids=position_ids)[:, 11])


def test_the_attention_function_gets_position_ids_as_the_teachers_does():
    """transformers' flash attention separates packed documents by `position_ids`, which it reads from the
    attention function's keyword arguments: the FA branch passes them on, as the teacher's attention does,
    where rows can be packed (no cache); with a cache it does not (flash attention's packed-rows check would
    sync the host in every decode step)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    seen = []

    def probe(module, query, key, value, attention_mask, **kwargs):
        seen.append(kwargs.get("position_ids"))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    teacher = make_teacher()
    hybrid = hydrahead.convert(teacher, HeadPlan(((0, 3), (2,)), 4, 2), HybridOptions.preset("paper", train_length=8))
    ids = torch.randint(0, teacher.config.vocab_size, (1, 8))
    position_ids = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]])  # two packed documents
    AttentionInterface.register("hydrahead_test_probe", probe)
    try:
        for model in (teacher, hybrid):
            model.config._attn_implementation = "hydrahead_test_probe"
            seen.clear()
            with torch.no_grad():
                model(ids, position_ids=position_ids, use_cache=False)
            assert len(seen) == model.config.num_hidden_layers
            assert all(p is not None and torch.equal(p, position_ids) for p in seen)
        hybrid.config._attn_implementation = "hydrahead_test_probe"
        seen.clear()
        with torch.no_grad():
            hybrid(ids, use_cache=True)
        assert seen == [None] * hybrid.config.num_hidden_layers
    finally:
        AttentionInterface._global_mapping.pop("hydrahead_test_probe", None)
