"""`HybridAttention`: one layer's attention, split along the head axis into FA and GDN branches.

Drop-in for the self-attention module of a transformers decoder layer (same call signature, returns
`(output, None)`). Both branches read the same input. The execution layout puts the FA heads first and
the GDN heads after them; `o_proj`'s input columns are permuted to match at conversion, so no
activation is gathered or scattered at run time and the layer computes the same function as it would
in the teacher's head order.
"""

from __future__ import annotations

import torch
from torch import nn

from hydrahead.errors import CacheError
from hydrahead.layers.full_attention import FullAttentionBranch
from hydrahead.layers.context import ForwardContext
from hydrahead.layers.fusion import BranchNorm, fuse
from hydrahead.layers.gdn import GatedDeltaNetBranch
from hydrahead.cache import HybridStateMixin
from hydrahead.options import HybridOptions


class HybridAttention(nn.Module):
    def __init__(
        self,
        config,
        layer_idx: int,
        fa_heads: tuple[int, ...],
        kv_heads: tuple[int, ...],
        options: HybridOptions,
        *,
        qkv_bias: bool,
        o_bias: bool,
        qk_norm: bool,
        sliding_window: int | None,
    ) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        H, D = config.num_attention_heads, config.head_dim
        group_size = H // config.num_key_value_heads
        self.fa_heads = tuple(fa_heads)
        self.gdn_heads = tuple(h for h in range(H) if h not in set(fa_heads))
        self.head_dim = D
        eps = config.rms_norm_eps

        self.fa = (
            FullAttentionBranch(
                config, layer_idx, self.fa_heads, tuple(kv_heads), group_size, options,
                qkv_bias=qkv_bias, qk_norm=qk_norm, sliding_window=sliding_window,
            )
            if self.fa_heads
            else None
        )
        self.gdn = (
            GatedDeltaNetBranch(
                config.hidden_size, len(self.gdn_heads), D,
                qkv_bias=qkv_bias, qk_norm=qk_norm, eps=eps, conv_size=options.conv_size, rope=options.gdn_rope,
                kv_of_head=self.gdn_kv_of_head(group_size) if options.gdn_shared_kv else None,
            )
            if self.gdn_heads
            else None
        )
        scale_norm = options.fusion == "scale_norm"
        self.fa_norm = BranchNorm(len(self.fa_heads), D, eps) if scale_norm and self.fa_heads else None
        self.gdn_norm = BranchNorm(len(self.gdn_heads), D, eps) if scale_norm and self.gdn_heads else None
        # gdn_mean_output: the GDN heads' mean output, through o_proj, as its bias (set at conversion)
        self.mean_bias = options.gdn_mean_output and bool(self.gdn_heads)
        self.o_proj = nn.Linear(H * D, config.hidden_size, bias=o_bias or self.mean_bias)

    def gdn_kv_of_head(self, group_size: int) -> tuple[int, ...]:
        """For each GDN head, its index among the GDN branch's shared KV heads (its GQA groups, sorted)."""
        groups = sorted({h // group_size for h in self.gdn_heads})
        return tuple(groups.index(h // group_size) for h in self.gdn_heads)

    @property
    def head_order(self) -> tuple[int, ...]:
        """Teacher head index of each execution slot: FA heads first, then GDN heads."""
        return self.fa_heads + self.gdn_heads

    def hybrid_parameters(self) -> list[nn.Parameter]:
        """Parameters the teacher did not have: the GDN branch, the FA gate, the fusion norms and gains; and
        o_proj's bias where it carries the GDN heads' mean output (new, or the teacher's own bias where its
        o_proj had one, which then holds the mean too)."""
        modules = [self.gdn, self.fa.gate_proj if self.fa is not None else None, self.fa_norm, self.gdn_norm]
        mean = [self.o_proj.bias] if self.mean_bias else []
        return [p for m in modules if m is not None for p in m.parameters()] + mean

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        position_ids: torch.Tensor | None = None,
        linear_attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        hydrahead_context: ForwardContext | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        B, T, _ = hidden_states.shape
        context = hydrahead_context if hydrahead_context is not None else ForwardContext()
        cache_layer = None
        if past_key_values is not None:
            cache_layer = past_key_values.layers[self.layer_idx]
            if not isinstance(cache_layer, HybridStateMixin):
                # the causal-LM model refuses a foreign cache itself; this is its inner model called directly,
                # which makes a DynamicCache when use_cache is on
                raise CacheError(
                    f"a hydrahead model needs a HybridHeadCache, got {type(past_key_values).__name__}; call the "
                    "causal-LM model itself, or pass past_key_values=hydrahead.HybridHeadCache(model.config)"
                )
        padding = context.padding(linear_attention_mask, T)  # (B, T) or None: no padded token

        outputs, norms = [], []
        if self.fa is not None:
            outputs.append(self.fa(hidden_states, position_embeddings, attention_mask, past_key_values, position_ids,
                                   context, **kwargs))
            norms.append(self.fa_norm)
        if self.gdn is not None:
            # packed rows (position_ids restarting, no cache, no padding mask): transformers gives the FA heads
            # a block-diagonal mask from the same position_ids; the GDN heads restart per document
            documents = (context.documents(position_ids, B, T) if cache_layer is None and linear_attention_mask is None
                         else None)
            outputs.append(self.gdn(hidden_states, position_embeddings, cache_layer, padding, documents, context))
            norms.append(self.gdn_norm)
        if cache_layer is not None:
            cache_layer.advance(T)
        out = fuse(outputs, norms, cache_layer)  # (B, T, H, D) in head_order
        return self.o_proj(out.reshape(B, T, -1)), None
