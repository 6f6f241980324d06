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
    "reduce-overhead": CUDA graphs); the tokens must be those of eager decoding with the dynamic cache (fla's
    fused recurrent kernel, gate and L2 norm in the kernel)."""
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
