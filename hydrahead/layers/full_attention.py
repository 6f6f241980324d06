"""The full-attention branch of a hybrid layer: softmax attention for the plan's FA query heads.

Only the KV heads these query heads need are projected and cached. The attention itself goes through
transformers' attention interface (eager / SDPA / flash, whatever the model's `_attn_implementation`
says), so the CPU path and the CUDA path are the same code. When every kept KV head serves the same
number of FA query heads (e.g. whole GQA groups) the call stays GQA; otherwise K/V are gathered per
query head.

One GEMM, `qkv_proj`, gives q | k | v; the q and k heads are normalised (teacher's q/k norms) and rotated
in one call each, as one (B, T, H + Hkv, D) tensor: the teacher's arithmetic, elementwise (RoPE with one fused
multiply-add: equal up to its rounding).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import eager_attention_forward

from hydrahead.layers.context import ForwardContext, HeadIndex
from hydrahead.layers.norm import RMSNorm, head_table, rms_norm, rotary, weight_table
from hydrahead.options import HybridOptions


class FullAttentionBranch(nn.Module):
    is_causal = True  # read by transformers' attention functions

    def __init__(
        self,
        config,
        layer_idx: int,
        heads: tuple[int, ...],
        kv_heads: tuple[int, ...],
        group_size: int,
        options: HybridOptions,
        *,
        qkv_bias: bool,
        qk_norm: bool,
        sliding_window: int | None,
    ) -> None:
        super().__init__()
        self.config = config  # the attention interface reads config._attn_implementation
        self.layer_idx = layer_idx
        self.head_dim = D = config.head_dim
        self.num_heads, self.num_kv_heads = len(heads), len(kv_heads)
        self.scaling = D**-0.5
        self.attention_dropout = float(getattr(config, "attention_dropout", 0.0))
        self.sliding_window = sliding_window
        self.rope = options.fa_rope == "keep"
        self.log_scale_length = options.train_length if options.fa_log_scale else None

        hidden = config.hidden_size
        self.split = (self.num_heads * D, self.num_kv_heads * D, self.num_kv_heads * D)  # qkv_proj's rows
        self.qkv_proj = nn.Linear(hidden, sum(self.split), bias=qkv_bias)
        self.q_norm = RMSNorm(D, config.rms_norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(D, config.rms_norm_eps) if qk_norm else None
        self.gate_proj = nn.Linear(hidden, self.num_heads * D, bias=True) if options.fa_gate else None
        self.reset_gate()

        # Which kept KV head each FA query head reads.
        kv_of_head = [kv_heads.index(h // group_size) for h in heads]
        per_kv = self.num_heads // self.num_kv_heads
        uniform = self.num_heads % self.num_kv_heads == 0 and kv_of_head == [i // per_kv for i in range(self.num_heads)]
        self.num_key_value_groups = per_kv if uniform else 1
        self.kv_of_head: tuple[int, ...] | None = None if uniform else tuple(kv_of_head)
        self.kv_index = HeadIndex(kv_of_head) if self.kv_of_head is not None else None

    @torch.no_grad()
    def reset_gate(self) -> None:
        """Gate starts as a constant sigmoid(1) per channel: W = 0, b = 1 (docs/method.md section 2)."""
        if self.gate_proj is not None:
            self.gate_proj.weight.zero_()
            self.gate_proj.bias.fill_(1.0)

    def forward(
        self,
        x: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        past_key_values=None,
        position_ids: torch.Tensor | None = None,
        context: ForwardContext | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """x: (B, T, hidden) -> (B, T, H_fa, D)."""
        B, T, _ = x.shape
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        projected = self.qkv_proj(x)
        qk = projected[..., : (H + Hkv) * D].unflatten(-1, (H + Hkv, D))  # q heads then k heads
        v = projected[..., (H + Hkv) * D :].unflatten(-1, (Hkv, D)).transpose(1, 2)  # (B, Hkv, T, D)
        if self.q_norm is not None:
            store = past_key_values.layers[self.layer_idx] if past_key_values is not None else None
            table = weight_table(store, ("fa qk_norm", qk.dtype),  # a model cast between generations: a new table
                                 lambda: head_table((self.q_norm.weight, H), (self.k_norm.weight, Hkv)))
            qk = rms_norm(qk, table, self.q_norm.variance_epsilon)
        context = context if context is not None else ForwardContext()
        if self.rope:
            qk = rotary(qk, context.rotary(position_embeddings))
        q, k = qk.transpose(1, 2).split([H, Hkv], dim=1)  # (B, H, T, D), (B, Hkv, T, D)
        if self.log_scale_length is not None:
            # s_t = max(1, log(t + 1) / log(L_train)): unchanged inside the training length, sharper beyond it.
            q = q * context.query_scale(position_ids, T, x.device, self.log_scale_length, q.dtype)  # (B|1, 1, T, 1)

        if past_key_values is not None:
            # only this branch's KV heads are cached (through the layer: the cache's own `update` refuses a
            # plain model's attention, hydrahead.cache.HybridHeadCache.update)
            k, v = past_key_values.layers[self.layer_idx].update(k, v)
        if self.kv_of_head is not None:
            index = self.kv_index.on(k.device)
            k, v = k.index_select(1, index), v.index_select(1, index)  # (B, H, S, D)

        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, _ = attention(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            sliding_window=self.sliding_window,
            # packed rows (no cache): flash attention finds their documents by position_ids, as for the teacher;
            # with a cache there are none, and flash attention's check would sync the host every step
            position_ids=position_ids if past_key_values is None else None,
            **kwargs,
        )  # (B, T, H, D)
        if self.gate_proj is not None:
            out = out * torch.sigmoid(self.gate_proj(x)).view(B, T, -1, D)
        return out
