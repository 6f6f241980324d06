"""The attention function scoring runs with: causal SDPA that can record, freeze or detach its pattern.

Why a registered attention implementation rather than hooks on softmax: transformers computes the
pattern inside one fused function (`sdpa`, `eager`, ...). Registering our own ("hydrahead_scoring",
through transformers' `AttentionInterface`, the library's extension point) gives one place that sees
q, k, v after q/k-norm and RoPE, for every supported family alike. Per forward, what it does is told by
an `AttentionControl` passed down as the keyword `hydrahead_attention` (decoder layers forward their
extra keywords to the attention function), so no global state changes between runs.

"Downstream attention frozen to the clean run" (receiver score, Eq. 10) is implemented by recomputing
each layer's softmax from the clean run's q and k while taking v from the current (patched) run:
out = softmax(q_clean k_clean^T / sqrt(d) + causal) v_patched. We store q and k (T x heads x d per layer)
rather than the patterns (T x T x heads per layer), which would not fit at 4K tokens on a real model,
and let SDPA rebuild the pattern. Freezing every layer is the same as freezing only the layers after the
patched one: layers up to the patched one see clean inputs, so their q and k are the clean ones anyway.
The same freezing in the backward ("detach": q and k cut from the graph) makes attribution patching the
linearisation of exactly that receiver score.

Probes are never padded (each probe is one sequence, replicated along the batch), so the function
applies a causal mask (and a sliding window when the layer has one) itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

IMPLEMENTATION = "hydrahead_scoring"
MODES = ("free", "record", "frozen", "detach")


@dataclass
class AttentionControl:
    """What the scoring attention does during one forward.

    mode:       "free" (plain causal attention), "record" (also keep q and k), "frozen" (softmax from the
                recorded clean q and k, values from this run), "detach" (q and k cut from the autograd graph)
    qk:         layer -> (q (1, H, T, D), k (1, KV, T, D)) of the clean run, filled in "record" mode
    probs_last: when > 0, keep the attention probabilities of the last `probs_last` query positions
    probs:      layer -> (B, H, probs_last, T), filled when probs_last > 0
    """

    mode: str = "free"
    qk: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    probs_last: int = 0
    probs: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"attention mode must be one of {MODES}, got {self.mode!r}")


def _mask(T: int, sliding_window: int | None, device: torch.device) -> torch.Tensor | None:
    """Boolean (T, T) mask (True = may attend) when a sliding window cuts the causal mask, else None."""
    if sliding_window is None or sliding_window >= T:
        return None
    i = torch.arange(T, device=device)
    return (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < sliding_window)


def scoring_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # (B, H, T, D)
    key: torch.Tensor,  # (B, KV, T, D)
    value: torch.Tensor,  # (B, KV, T, D)
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    hydrahead_attention: AttentionControl | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    control = hydrahead_attention or AttentionControl()
    layer = module.layer_idx
    B, H, T, D = query.shape
    groups = H // key.shape[1]
    if control.mode == "record":
        control.qk[layer] = (query[:1].detach(), key[:1].detach())
    if control.mode == "frozen":
        q, k = control.qk[layer]
        q, k = q.expand(B, -1, -1, -1), k.expand(B, -1, -1, -1)
    elif control.mode == "detach":
        q, k = query.detach(), key.detach()
    else:
        q, k = query, key
    k = k.repeat_interleave(groups, dim=1)  # (B, H, T, D): query head h reads KV head h // groups
    v = value.repeat_interleave(groups, dim=1)
    mask = _mask(T, sliding_window, query.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=scaling)  # (B, H, T, D)
    if control.probs_last:
        n = min(control.probs_last, T)
        scores = q[:, :, T - n:] @ k.transpose(-1, -2) * (scaling if scaling is not None else D**-0.5)  # (B, H, n, T)
        allowed = _mask(T, sliding_window, query.device)
        allowed = allowed[T - n:] if allowed is not None else torch.ones(T, T, dtype=torch.bool, device=query.device).tril()[T - n:]
        control.probs[layer] = scores.masked_fill(~allowed, float("-inf")).softmax(-1).detach()
    return out.transpose(1, 2).contiguous(), None  # (B, T, H, D)


AttentionInterface.register(IMPLEMENTATION, scoring_attention)


@contextlib.contextmanager
def scoring_attention_enabled(model: torch.nn.Module) -> Iterator[None]:
    """Run `model`'s attention through `scoring_attention` inside the block (restored afterwards)."""
    previous = model.config._attn_implementation
    model.config._attn_implementation = IMPLEMENTATION
    try:
        yield
    finally:
        model.config._attn_implementation = previous
