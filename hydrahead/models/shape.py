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
        """From a transformers config (or the model holding it), a config.json dict or a ModelShape; a config
        without the decoder fields (num_hidden_layers, num_attention_heads) raises UnsupportedModelError."""
        if isinstance(config, ModelShape):
            return config
        if hasattr(config, "parameters") and hasattr(config, "config"):  # a model given for its config
            config = config.config
        get = config.get if isinstance(config, dict) else (lambda key: getattr(config, key, None))
        model_type = get("model_type") or type(config).__name__
        try:
            layers, heads = int(get("num_hidden_layers")), int(get("num_attention_heads"))
            kv = get("num_key_value_heads")
            kv_heads = heads if kv is None else int(kv)  # absent: multi-head attention; 0 is refused below
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


# Config keys of rotary position encodings: a model with one of them runs past its trained length (extrapolation).
ROTARY_KEYS = ("rope_theta", "rope_parameters", "rope_scaling", "rotary_dim", "rotary_pct", "partial_rotary_factor")
# Families whose positions index a learned table of `max_position_embeddings` rows (GPT-2's is `n_positions`).
LEARNED_TABLE_TYPES = {"opt", "gpt_neo", "biogpt"}


def _field(config: Any, key: str) -> Any:
    """A field of a transformers config or of a config.json dict (None when absent)."""
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)


def positions(config: Any) -> tuple[int | None, bool]:
    """(how many positions the model was built for, whether that is a hard limit). A hard limit is a learned
    position table (GPT-2's `n_positions`, OPT's `max_position_embeddings`): a longer input indexes past it.
    Rotary models have a soft one (`max_position_embeddings`): beyond it is an extrapolation test. Families
    not named here with a learned table count as soft (the check then lets the model's own error through)."""
    rotary = any(_field(config, key) is not None for key in ROTARY_KEYS)
    if _field(config, "n_positions") is not None and not rotary:
        return int(_field(config, "n_positions")), True
    limit = _field(config, "max_position_embeddings")
    if limit is None:
        return None, False
    return int(limit), _field(config, "model_type") in LEARNED_TABLE_TYPES and not rotary


def check_positions(config: Any, length: int, what: str, name: str = "the model") -> None:
    """UnsupportedModelError when `length` tokens do not fit a learned position table (before any work)."""
    limit, hard = positions(config)
    if hard and limit is not None and length > limit:
        raise UnsupportedModelError(
            f"{name} (a {_field(config, 'model_type')} model) has a learned position table of {limit} positions: "
            f"{what} {length} is beyond it; use at most {limit}")


def check_counts(config: dict[str, Any]) -> None:
    """UnsupportedModelError when a config states decoder counts no decoder has (-1 layers, KV heads that do not
    divide the heads: counts transformers lets through for some families and for GGUF metadata); nothing for a
    config without num_hidden_layers and num_attention_heads (GPT-2's names, an encoder-decoder's)."""
    if "num_hidden_layers" in config and "num_attention_heads" in config:
        ModelShape.from_config(config)
