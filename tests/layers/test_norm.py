"""`rms_norm` with a per-head weight table gives, head by head, what transformers' RMSNorm gives: bit for bit
in the dtypes a model runs in, and with fp32 statistics for fp64 input as transformers takes them."""

import pytest
import torch
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

from hydrahead.layers.norm import head_table, rms_norm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_one_call_with_a_head_table_equals_transformers_norm_per_head(dtype):
    torch.manual_seed(0)
    D, eps = 32, 1e-6
    q_norm, k_norm = Qwen3RMSNorm(D, eps), Qwen3RMSNorm(D, eps)
    with torch.no_grad():
        q_norm.weight.normal_()
        k_norm.weight.normal_()
    q_norm, k_norm = q_norm.to(dtype), k_norm.to(dtype)
    q, k = 3.0 * torch.randn(2, 5, 3, D, dtype=dtype), 0.1 * torch.randn(2, 5, 2, D, dtype=dtype)
    with torch.no_grad():
        got = rms_norm(torch.cat([q, k], dim=2), head_table((q_norm.weight, 3), (k_norm.weight, 2)), eps)
        expected = torch.cat([q_norm(q), k_norm(k)], dim=2)
    assert got.dtype == dtype
    assert torch.equal(got, expected)


def test_gradients_equal_transformers_norm():
    """Distillation trains through the FA branch's q/k norm weights: the same gradients as transformers' RMSNorm."""
    torch.manual_seed(0)
    D, eps = 16, 1e-6
    norm = Qwen3RMSNorm(D, eps)
    with torch.no_grad():
        norm.weight.normal_()
    x, upstream = 2.0 * torch.randn(3, 9, 4, D), torch.randn(3, 9, 4, D)
    x_ours, weight = x.clone().requires_grad_(), norm.weight.detach().clone().requires_grad_()
    rms_norm(x_ours, weight, eps).backward(upstream)
    x_theirs = x.clone().requires_grad_()
    norm(x_theirs).backward(upstream)
    assert torch.equal(x_ours.grad, x_theirs.grad)
    assert torch.equal(weight.grad, norm.weight.grad)
