"""The Gated DeltaNet branch of a hybrid layer: the query heads that are not full attention.

Per head: q, k, v from the teacher's rows of that head (k, v from its KV group: by default a copy per head,
so GQA becomes MHA; with `kv_of_head`, one k/v projection per KV group, shared by its heads as in the teacher),
a short causal conv + SiLU, the teacher's q/k norm where the family has one, RoPE (optional), L2-norm
of q and k, then the gated delta rule with beta = sigmoid(x W_b) and log-decay
g = -exp(A_log) * softplus(x W_a + dt_bias) (the Qwen3-Next / fla parametrisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from hydrahead.layers.norm import RMSNorm
from hydrahead.layers.short_conv import ShortConv
from hydrahead.ops import gated_delta_rule, gated_delta_rule_step, l2norm


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
        self.q_proj = nn.Linear(hidden_size, width, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, kv_width, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, kv_width, bias=qkv_bias)
        self.conv = ShortConv(width + 2 * kv_width, conv_size) if conv_size else None
        self.q_norm = RMSNorm(head_dim, eps) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, eps) if qk_norm else None
        self.a_proj = nn.Linear(hidden_size, num_heads, bias=False)
        self.b_proj = nn.Linear(hidden_size, num_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(num_heads))
        self.dt_bias = nn.Parameter(torch.empty(num_heads))
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
        self.a_proj.weight.zero_()
        self.b_proj.weight.zero_()

    def forward(
        self,
        x: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        cache_layer=None,
        padding_mask: torch.Tensor | None = None,
        documents: Documents | None = None,
    ) -> torch.Tensor:
        """x: (B, T, hidden); padding_mask: (B, T), 1 = real token; `documents`: packed rows (from
        `packed_documents`), whose state and conv window restart at every document. Returns (B, T, H, D)."""
        B, T, _ = x.shape
        H, D = self.num_heads, self.head_dim
        qkv = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)  # (B, T, 3*H*D)
        if padding_mask is not None:
            # Padding must not leak into the conv window (zero it after the projection, whose bias would
            # otherwise survive) nor into the recurrent state (beta = g = 0 below).
            qkv = qkv * padding_mask[..., None].to(qkv.dtype)
        if self.conv is not None:
            qkv = self.conv(qkv, cache_layer, documents.offsets if documents is not None else None)
        Hkv = self.num_kv_heads
        q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
        q, k, v = q.view(B, T, H, D), k.view(B, T, Hkv, D), v.view(B, T, Hkv, D)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:
            cos, sin = position_embeddings
            q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=2)
        q, k = l2norm(q), l2norm(k)
        if self.kv_of_head is not None:  # one k/v per GQA group -> one per head (each head has its own state)
            index = torch.tensor(self.kv_of_head, device=x.device)
            k, v = k.index_select(2, index), v.index_select(2, index)  # (B, T, H, D)

        beta = torch.sigmoid(self.b_proj(x).float())  # (B, T, H)
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias.float())  # (B, T, H)
        if padding_mask is not None:
            keep = padding_mask.to(beta.dtype)[..., None]
            beta, g = beta * keep, g * keep  # pad step: no write, no decay -> state untouched

        state = cache_layer.recurrent_state() if cache_layer is not None else None
        if T == 1 and state is not None and not torch.is_grad_enabled():
            return gated_delta_rule_step(q, k, v, g, beta, state)  # decode: the cached state updated in place
        if documents is not None:  # one packed sequence per document, state reset at each start
            flat = [x.reshape(1, B * T, *x.shape[2:]) for x in (q, k, v, g, beta)]
            o, _ = gated_delta_rule(*flat, cu_seqlens=documents.cu_seqlens, head_first=False, check_values=False)
            return o.view(B, T, *o.shape[2:])
        o, final_state = gated_delta_rule(  # g <= 0 and beta in (0, 1) by construction: no value check
            q, k, v, g, beta, initial_state=state, output_final_state=cache_layer is not None, head_first=False,
            check_values=False,
        )
        if cache_layer is not None:
            cache_layer.store_recurrent_state(final_state)
        return o  # (B, T, H, D)


@dataclass(frozen=True)
class Documents:
    """Where the documents of packed rows start: `cu_seqlens` over the flattened (1, B*T) batch, and each
    token's index inside its document, `offsets` (B, T)."""

    cu_seqlens: torch.Tensor
    offsets: torch.Tensor


_LAST: list = [None, None]  # (position_ids, its Documents): every layer of a forward gets the same tensor


def packed_documents(position_ids: torch.Tensor | None, batch: int, seq_len: int) -> Documents | None:
    """The documents of rows whose position_ids restart (transformers' packed-sequence convention: a new
    document wherever the position does not follow on by one); None when every row is one sequence.
    Worked out once per forward (one host sync), not once per layer."""
    if position_ids is None or seq_len < 2:
        return None
    if _LAST[0] is position_ids:
        return _LAST[1]
    documents = _packed_documents(position_ids, batch, seq_len)
    _LAST[:] = [position_ids, documents]
    return documents


def _packed_documents(position_ids: torch.Tensor, batch: int, seq_len: int) -> Documents | None:
    pos = position_ids.expand(batch, seq_len)
    starts = torch.ones(batch, seq_len, dtype=torch.bool, device=pos.device)
    starts[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    if not bool(starts[:, 1:].any()):
        return None
    ends = torch.tensor([batch * seq_len], device=pos.device)
    return Documents(torch.cat([starts.reshape(-1).nonzero().squeeze(1), ends]), document_offsets(starts))


def document_offsets(starts: torch.Tensor) -> torch.Tensor:
    """(B, T) bool, True where a document starts (column 0 must be) -> each token's index in its document."""
    index = torch.arange(starts.shape[1], device=starts.device).expand_as(starts)
    return index - torch.where(starts, index, 0).cummax(dim=1).values
