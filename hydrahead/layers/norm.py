"""RMSNorm with the same arithmetic as transformers' Llama/Qwen RMSNorm (fp32 statistics), so copies of
the teacher's q/k norms reproduce it bit for bit; and the rotary embedding applied to one tensor.

`rms_norm` takes any weight that broadcasts against x: the FA branch normalises its q and k heads in one
call with a per-head weight table (`head_table`), instead of one call per norm module (fewer kernels per
layer, the same values). `weight_table` keeps such a table, made from weights alone, between inference
forwards, so a decode step launches no kernels for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * x / sqrt(mean(x^2) + eps) over the last dim, statistics in fp32 (transformers' order)."""
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def rotary_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' (cos, sin) (B, T, D) -> the tables `rotary` takes: (B, T, 1, D) each, sin with its first
    half negated (rotate_half(x) * sin == roll(x, D / 2) * that)."""
    half = sin.shape[-1] // 2
    return cos.unsqueeze(2), torch.cat([-sin[..., :half], sin[..., half:]], dim=-1).unsqueeze(2)


def rotary(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """RoPE on x (B, T, H, D), transformers' x * cos + rotate_half(x) * sin, in three kernels (one fused
    multiply-add: equal to transformers' result up to its rounding)."""
    cos, signed_sin = tables
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


def head_table(*parts: tuple[torch.Tensor, int]) -> torch.Tensor:
    """(sum of heads, D): each (weight (D,) or (heads, D), heads) part repeated over its heads, stacked."""
    rows = [w.expand(heads, w.shape[-1]) for w, heads in parts if heads]
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)


def weight_table(owner: nn.Module, name: str, build: Callable[[], T], *weights: torch.Tensor) -> T:
    """build(): a tensor (or tuple of them) made from `weights` alone (a per-head table), kept on `owner` under `name` for
    inference forwards while the weights stay the same tensors, unchanged (storage, dtype, device and
    in-place version: an optimizer step, `load_state_dict` or `.to()` makes a new one). Built afresh with
    autograd on (it belongs to the graph), under torch.compile (which fuses it into the step) and for weights
    made in inference mode (they keep no version to check)."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling() or any(w.is_inference() for w in weights):
        return build()
    key = tuple((w.data_ptr(), w._version, w.dtype, w.device) for w in weights)
    kept = owner.__dict__.setdefault("_weight_tables", {})
    if name not in kept or kept[name][0] != key:
        kept[name] = (key, build())
    return kept[name][1]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.variance_epsilon)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"
