"""`ModelShape`: layers, query heads, KV heads and head_dim of a model, read from its config in one place.

Plans, head scores, the scoring runner, ablation and distillation's pre-load check all compare shapes
through this class; it reads a transformers config, a config.json dict, or another ModelShape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydrahead.errors import UnsupportedModelError


def head_dim(config: Any) -> int:
    """A config's head_dim (its own field, else hidden_size // num_attention_heads)."""
    return ModelShape.from_config(config).head_dim


@dataclass(frozen=True)
class ModelShape:
    layers: int
    heads: int  # query heads per layer
    kv_heads: int  # KV heads (GQA groups) per layer
    head_dim: int | None = None

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """From a transformers config, a config.json dict or a ModelShape; a config without the decoder
        fields (num_hidden_layers, num_attention_heads) raises UnsupportedModelError."""
        if isinstance(config, ModelShape):
            return config
        get = config.get if isinstance(config, dict) else (lambda key: getattr(config, key, None))
        model_type = get("model_type") or type(config).__name__
        try:
            layers, heads = int(get("num_hidden_layers")), int(get("num_attention_heads"))
            kv_heads = int(get("num_key_value_heads") or heads)
            dim = get("head_dim") or (int(get("hidden_size")) // heads if get("hidden_size") else None)
        except (TypeError, ValueError) as err:
            raise UnsupportedModelError(
                f"a {model_type} config has no usable num_hidden_layers / num_attention_heads / "
                "num_key_value_heads; hydrahead works on decoder LLMs (Qwen3, Qwen2, Llama, Mistral)"
            ) from err
        if layers < 1 or heads < 1 or kv_heads < 1 or heads % kv_heads:
            raise UnsupportedModelError(
                f"a {model_type} config with {layers} layers, {heads} heads and {kv_heads} KV heads is not a "
                "decoder shape hydrahead supports (positive counts, query heads a multiple of KV heads)"
            )
        return cls(layers, heads, kv_heads, int(dim) if dim else None)

    @property
    def group_size(self) -> int:
        """Query heads per KV head."""
        return self.heads // self.kv_heads

    def describe(self) -> str:
        return f"{self.layers} layers x {self.heads} heads ({self.kv_heads} KV heads)"

    def same_heads(self, other: ModelShape) -> bool:
        """Same layers, query heads and KV heads (head_dim aside: plans and scores do not record it)."""
        return (self.layers, self.heads, self.kv_heads) == (other.layers, other.heads, other.kv_heads)
