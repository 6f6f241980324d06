"""The Gated DeltaNet branch of a hybrid layer: the query heads that are not full attention.

Per head: q, k, v from the teacher's rows of that head (k, v from its KV group: by default a copy per head,
so GQA becomes MHA; with `kv_of_head`, one k/v projection per KV group, shared by its heads as in the teacher),
a short causal conv + SiLU, the teacher's q/k norm weight, RoPE (optional), L2-norm of q and k, then the
gated delta rule with beta = sigmoid(x W_b) and log-decay g = -exp(A_log) * softplus(x W_a + dt_bias)
(the Qwen3-Next / fla parametrisation).

Two GEMMs give the inputs, as in Qwen3-Next and mlx-lm's qwen3_next (`in_proj_qkvz`, `in_proj_ba`): `qkv_proj`
(q | k | v, with the family's q/k/v bias) and `ab_proj` (the gate and beta inputs a | b). One GEMM for all
five is an odd width (H * (3 D) + 2 H rows) that runs 37% slower per FLOP in torch's CPU GEMM than the
aligned q | k | v one (measured at 8K tokens, hidden 2048, 14 heads). The teacher's q/k RMSNorm
is kept as its weight only: its normalisation is redundant before the L2 norm, which is scale-invariant
(L2(w * x / rms(x)) = L2(w * x), up to the two epsilons), and RoPE, a rotation, commutes with both. On
CUDA with fla installed, for prompts without padding and eager decode steps, the L2 norm, the gate and
beta are computed inside fla's kernels (as fla's own GatedDeltaNet layer does; an inference prompt normalises q
and k heads in one launch of fla's L2 norm kernel before the call); elsewhere (padded prompts,
compiled decode, the CPU) by the PyTorch ops in `hydrahead.ops`. On CUDA a prompt's short conv is fla's,
padded or not (`ShortConv`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hydrahead.layers.context import Documents, ForwardContext, HeadIndex
from hydrahead.layers.norm import RMSNorm, head_table, rotary, weight_table
from hydrahead.layers.short_conv import ShortConv
from hydrahead.ops import gated_delta_rule, l2norm
from hydrahead.ops.gated_delta.naive import step_in_place
from hydrahead.ops.gated_delta.fla import fla_applies, fla_gated_delta_net, fla_l2norm


class GatedDeltaNetBranch(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_dim: int,
        *,
        qkv_bias: bool,
        qk_norm: bool,
        eps: float,
        conv_size: int,
        rope: bool,
        kv_of_head: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.rope = num_heads, head_dim, rope
        # kv_of_head[h]: the shared k/v head that GDN head h reads; None: each head has its own k/v.
        self.kv_of_head = tuple(kv_of_head) if kv_of_head is not None else None
        self.num_kv_heads = num_heads if kv_of_head is None else max(kv_of_head) + 1
        width, kv_width = num_heads * head_dim, self.num_kv_heads * head_dim
        self.split = (width, kv_width, kv_width)  # qkv_proj's rows: q | k | v
        self.qkv_proj = nn.Linear(hidden_size, sum(self.split), bias=qkv_bias)
        self.ab_proj = nn.Linear(hidden_size, 2 * num_heads, bias=False)  # rows: a | b
        self.conv = ShortConv(width + 2 * kv_width, conv_size) if conv_size else None
        self.q_norm = RMSNorm(head_dim, eps) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, eps) if qk_norm else None
        self.A_log = nn.Parameter(torch.empty(num_heads))
        self.dt_bias = nn.Parameter(torch.empty(num_heads))
        self.kv_index = HeadIndex(kv_of_head) if kv_of_head is not None else None
        self.reset_gates()

    @torch.no_grad()
    def reset_gates(self) -> None:
        """Deterministic decay init spanning slow to fast heads (A in [1, 16], dt in [1e-3, 1e-1] as in fla),
        zero input dependence at the start (beta = 0.5), no RNG so conversion is reproducible."""
        n = self.num_heads
        A = torch.linspace(1.0, 16.0, n) if n > 1 else torch.tensor([1.0])
        dt = torch.exp(torch.linspace(math.log(1e-3), math.log(1e-1), n)) if n > 1 else torch.tensor([1e-2])
        self.A_log.copy_(A.log())
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.ab_proj.weight.zero_()

    def forward(
        self,
        x: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        cache_layer=None,
        padding_mask: torch.Tensor | None = None,
        documents: Documents | None = None,
        context: ForwardContext | None = None,
    ) -> torch.Tensor:
        """x: (B, T, hidden); padding_mask: (B, T), 1 = real token; `documents`: packed rows (from
        `ForwardContext.documents`), whose state and conv window restart at every document. Returns (B, T, H, D)."""
        B, T, _ = x.shape
        state = cache_layer.recurrent_state() if cache_layer is not None else None
        decode = T == 1 and state is not None and not torch.is_grad_enabled()
        if decode:
            padding_mask = None  # a generated token is never padding (left padding lives in the prompt)
        context = context if context is not None else ForwardContext()
        tables = context.rotary(position_embeddings) if self.rope else None
        qkv, a, b = self._project(x, padding_mask)
        if self.conv is not None:
            qkv = self.conv(qkv, cache_layer, documents)
        o, final_state = self._rule(qkv, a, b, tables, padding_mask, state, decode, cache_layer, documents)
        if cache_layer is not None and final_state is not None:
            cache_layer.store_recurrent_state(final_state)
        return o  # (B, T, H, D)

    def _project(self, x: torch.Tensor, padding_mask: torch.Tensor | None):
        """x (B, T, hidden) -> the conv's input q | k | v (B, T, C) and the gate inputs a, b (B, T, H)."""
        qkv = self.qkv_proj(x)  # (B, T, q | k | v)
        a, b = self.ab_proj(x).chunk(2, dim=-1)  # (B, T, H) each
        if padding_mask is not None:
            # Padding must not leak into the conv window (zero it after the projection, whose bias would
            # otherwise survive) nor into the recurrent state (beta = g = 0 below).
            qkv = qkv * padding_mask[..., None].to(qkv.dtype)
        return qkv, a, b

    def gates(self, a: torch.Tensor, b: torch.Tensor, cache_layer=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The gate inputs a, b (B, T, H) -> (g, beta), fp32: g = -exp(A_log) * softplus(a + dt_bias), the log
        decay, and beta = sigmoid(b). (A freshly converted branch has a = b = 0: `reset_gates`.)"""
        beta = torch.sigmoid(b.float())  # (B, T, H)
        decay, dt_bias = weight_table(cache_layer, ("gdn gate",),  # fp32 whatever the weights' dtype
                                      lambda: (-self.A_log.float().exp(), self.dt_bias.float()))
        return decay * F.softplus(a.float() + dt_bias), beta  # (B, T, H) each

    def _rule(self, qkv, a, b, tables, padding_mask, state, decode: bool, cache_layer, documents):
        """From the conv's output (B, T, q | k | v) and the gate inputs a, b (B, T, H): the q/k norm weight,
        RoPE, L2 norm, gates and the gated delta rule. Returns (o (B, T, H, D), the final state when there is a
        cache, else None)."""
        final = cache_layer is not None
        B, T, _ = qkv.shape
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        qk = qkv[..., : (H + Hkv) * D].unflatten(-1, (H + Hkv, D))  # q heads then k heads
        v = qkv[..., (H + Hkv) * D :].unflatten(-1, (Hkv, D))
        if self.q_norm is not None:
            qk = qk * weight_table(cache_layer, ("gdn qk_norm", qk.dtype),
                                   lambda: head_table((self.q_norm.weight, H), (self.k_norm.weight, Hkv)).to(qk.dtype))
        if tables is not None:
            qk = rotary(qk, tables)
        fused = padding_mask is None and not (decode and torch.compiler.is_compiling()) and fla_applies(qk)
        normalized = False  # on fla's path: q and k L2-normalised already (else in fla's kernels)
        if not fused:
            qk = l2norm(qk)  # q and k heads in one call
        elif T > 1 and (joint := fla_l2norm(qk)) is not None:  # an inference prompt: one fla launch, not two
            qk, normalized = joint, True
        q, k = qk.split([H, Hkv], dim=2)
        if self.kv_of_head is not None:  # one k/v per GQA group -> one per head (each head has its own state)
            index = self.kv_index.on(qkv.device)
            k, v = k.index_select(2, index), v.index_select(2, index)  # (B, T, H, D)

        if fused:  # fla: L2 norm, gate and beta inside the kernels
            return fla_gated_delta_net(q, k, v, a, b, self.A_log, self.dt_bias, initial_state=state,
                                       output_final_state=final, state_in_place=decode,  # as the PyTorch step
                                       cu_seqlens=documents.cu_seqlens if documents is not None else None,
                                       normalized=normalized)
        g, beta = self.gates(a, b, cache_layer)
        if padding_mask is not None:
            keep = padding_mask.to(beta.dtype)[..., None]
            beta, g = beta * keep, g * keep  # pad step: no write, no decay -> state untouched
        if decode:
            return step_in_place(q, k, v, g, beta, state), None  # the cached state updated in place
        if documents is not None:  # one packed sequence per document, state reset at each start
            flat = [t.reshape(1, B * T, *t.shape[2:]) for t in (q, k, v, g, beta)]
            o, _ = gated_delta_rule(*flat, cu_seqlens=documents.cu_seqlens, head_first=False, check_values=False)
            return o.view(B, T, *o.shape[2:]), None
        # g <= 0 and beta in (0, 1) by construction: no value check
        return gated_delta_rule(q, k, v, g, beta, initial_state=state, output_final_state=final, head_first=False,
                                check_values=False)
