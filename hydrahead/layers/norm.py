"""RMSNorm with the same arithmetic as transformers' Llama/Qwen RMSNorm (fp32 statistics), so copies of
the teacher's q/k norms reproduce it bit for bit; and the rotary embedding applied to one tensor.

`rms_norm` takes any weight that broadcasts against x: the FA branch normalises its q and k heads in one
call with a per-head weight table (`head_table`), instead of one call per norm module (fewer kernels per
layer, the same values). `weight_table` keeps such a table, made from weights alone, in the cache for one
generation, so a decode step launches no kernels for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

T = TypeVar("T")
WEIGHT_TABLES = "weight_tables"  # the attribute of a cache layer that holds its tables


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * x / sqrt(mean(x^2) + eps) over the last dim, statistics in fp32, then cast to x's dtype and
    weighted (transformers' order), through torch's rms_norm: fewer Python calls than the ops it stands for,
    bit-equal to transformers' RMSNorm on the CPU (tests/layers/test_norm.py). Under CUDA autocast torch runs
    rms_norm in fp32 (its autocast list), so there the normalised value is not rounded to bf16 before the
    weight multiply as transformers' is: a difference of rounding only."""
    if x.dtype == torch.float64:  # transformers takes fp32 statistics of fp64 input too; torch's would be fp64
        return weight * F.rms_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)
    return weight * F.rms_norm(x, x.shape[-1:], eps=eps)


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


def weight_table(store: object | None, key: tuple, build: Callable[[], T]) -> T:
    """build(): a tensor (or tuple of them) made from weights alone (a per-head table), kept in `store`, the
    layer's cache layer, under `key`: it lives for one generation, through which the weights do not change,
    so a decode step launches no kernels for it; the cache's `reset` drops it (`forget_weight_tables`). `key`
    is a tuple (what, then the dtype the table depends on, if any; not a formatted string, so a decode step
    formats no text): a model cast between two forwards on one cache builds new tables. Built afresh without a
    cache, with autograd on (it belongs to the graph), under torch.compile (which fuses it into the step) and
    while torch.jit traces (a kept table would become a constant). Never
    kept on the module: an optimizer step (fused AdamW's among them), a `.data` edit or a broadcast changes
    weights without a trace a key could check."""
    if store is None or torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return build()
    tables = store.__dict__.setdefault(WEIGHT_TABLES, {})
    if key not in tables:
        tables[key] = build()
    return tables[key]


def forget_weight_tables(store: object) -> None:
    """Drop the tables `weight_table` keeps in `store` (a cache layer being reset for another generation)."""
    store.__dict__.pop(WEIGHT_TABLES, None)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.variance_epsilon)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"
