"""CUDA (fla kernels + SDPA) against the CPU fp32 reference, in bf16. Skipped without a GPU."""

import pytest
import torch

import hydrahead
from hydrahead import HeadPlan, HybridOptions
from tests.conftest import make_teacher

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref.float()).norm() / ref.float().norm()).item()


@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_cuda_bf16_matches_cpu_fp32(family):
    pytest.importorskip("fla")
    teacher = make_teacher(family, hidden_size=128, head_dim=64, num_attention_heads=4, num_key_value_heads=2)
    model = hydrahead.convert(teacher, HeadPlan(((0,), (3,)), 4, 2), HybridOptions.preset("paper")).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 300))
    with torch.no_grad():
        ref = model(ids, use_cache=False).logits
        gpu = model.to("cuda", torch.bfloat16)
        got = gpu(ids.cuda(), use_cache=False).logits.cpu()
    assert rel_err(got, ref) < 2e-2


def test_cuda_generate_matches_recomputation():
    pytest.importorskip("fla")
    teacher = make_teacher("qwen3", hidden_size=128, head_dim=64)
    model = hydrahead.convert(teacher, HeadPlan(((0, 3), (2,)), 4, 2)).eval().cuda()
    model.generation_config.eos_token_id = None
    ids = torch.randint(0, model.config.vocab_size, (1, 64), device="cuda")
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    seq = ids
    for _ in range(8):
        with torch.no_grad():
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


def test_cuda_graph_decode_gives_the_eager_tokens():
    """On CUDA, a plain generate compiles the decode step with a static cache (transformers' default
    "reduce-overhead": CUDA graphs); the tokens must be those of eager decoding with the dynamic cache (fp32:
    the PyTorch ops on both sides; bf16 and fla's kernels: the tests below)."""
    pytest.importorskip("fla")
    teacher = make_teacher("qwen3", hidden_size=128, head_dim=64)
    model = hydrahead.convert(teacher, HeadPlan(((0, 3), (2,)), 4, 2)).eval().cuda()
    model.generation_config.eos_token_id = None
    ids = torch.randint(1, model.config.vocab_size, (2, 64), device="cuda")
    mask = torch.ones_like(ids)
    mask[0, :10] = 0
    eager = model.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False,
                           cache_implementation="dynamic")
    graphed = model.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False)
    assert torch.equal(graphed, eager)


def test_cuda_bf16_decode_steps_match_the_prefill():
    """bf16 with fla: a prompt without padding and each eager one-token step take fla's kernels with the L2
    norm, gate and beta inside them (chunk for the prompt, fused recurrent for the steps); the step's logits
    must be those of a prefill of the same tokens (chunk kernel alone)."""
    pytest.importorskip("fla")
    teacher = make_teacher("qwen3", hidden_size=128, head_dim=64)
    model = hydrahead.convert(teacher, HeadPlan(((0,), (3,)), 4, 2), HybridOptions.preset("paper")).eval()
    model = model.to("cuda", torch.bfloat16)
    ids = torch.randint(0, model.config.vocab_size, (2, 100), device="cuda")
    cache = hydrahead.HybridHeadCache(model.config)
    with torch.no_grad():
        model(ids[:, :96], past_key_values=cache, use_cache=True)
        steps = [model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits[:, -1] for t in range(96, 100)]
        whole = model(ids, use_cache=False).logits[:, 96:]
    for t, step in enumerate(steps):
        assert rel_err(step, whole[:, t]) < 2e-2, t


def test_cuda_bf16_packed_documents_match_the_cpu():
    """Packed rows (position_ids restarting) on CUDA pass cu_seqlens to fla's chunk kernel, gate and L2 norm
    inside it; against the CPU fp32 reference of the same rows."""
    pytest.importorskip("fla")
    teacher = make_teacher("qwen3", hidden_size=128, head_dim=64)
    model = hydrahead.convert(teacher, HeadPlan(((0,), (3,)), 4, 2), HybridOptions.preset("paper")).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 120))
    position_ids = torch.cat([torch.arange(50), torch.arange(70)])[None].expand(2, -1)
    with torch.no_grad():
        ref = model(ids, position_ids=position_ids, use_cache=False).logits
        gpu = model.to("cuda", torch.bfloat16)
        got = gpu(ids.cuda(), position_ids=position_ids.cuda(), use_cache=False).logits.cpu()
    assert rel_err(got, ref) < 2e-2
