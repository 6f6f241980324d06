"""The hybrid cache: per layer, K/V of the FA branch's KV heads plus the GDN recurrent and conv state.

Built on transformers' own `LinearAttentionAndFullAttentionLayer` (layer type "hybrid"), so
`generate`, beam reordering and offloading keep working. The one thing we add: each layer counts the
tokens it has seen, because a layer may have no FA heads (and so no keys to measure the length by)
and transformers derives positions and mask sizes from layer 0's length.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, LinearAttentionAndFullAttentionLayer


class HybridHeadLayer(LinearAttentionAndFullAttentionLayer):
    def __init__(self) -> None:
        super().__init__(number_of_states=1)
        self.seen_tokens = 0

    def get_seq_length(self) -> int:
        return self.seen_tokens

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen_tokens + query_length, 0

    def reset(self) -> None:
        super().reset()
        self.seen_tokens = 0

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._map_states(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._map_states(lambda t: t[indices])

    def _map_states(self, fn) -> None:
        for i in range(self.number_of_states):
            if self.is_conv_states_initialized[i]:
                self.conv_states[i] = fn(self.conv_states[i])
            if self.is_recurrent_states_initialized[i]:
                self.recurrent_states[i] = fn(self.recurrent_states[i])


class HybridHeadCache(DynamicCache):
    """One `HybridHeadLayer` per decoder layer of `config`."""

    def __init__(self, config) -> None:
        Cache.__init__(self, layers=[HybridHeadLayer() for _ in range(config.num_hidden_layers)])

    def nbytes(self) -> dict[str, int]:
        """Bytes held now: {'kv': ..., 'recurrent': ..., 'conv': ...}."""
        total = {"kv": 0, "recurrent": 0, "conv": 0}
        for layer in self.layers:
            if layer.is_initialized:
                total["kv"] += layer.keys.nbytes + layer.values.nbytes
            for i in range(layer.number_of_states):
                if layer.is_recurrent_states_initialized[i]:
                    total["recurrent"] += layer.recurrent_states[i].nbytes
                if layer.is_conv_states_initialized[i]:
                    total["conv"] += layer.conv_states[i].nbytes
        return total
