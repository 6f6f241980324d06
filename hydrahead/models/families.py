"""The model families hydrahead converts, and the few facts about each that the conversion needs.

Weight names (`model.layers[i].self_attn.{q,k,v,o}_proj`, `q_norm`, `k_norm`) are the same in all four,
so the per-family differences are only: which projections have a bias, whether q/k are RMS-normed per
head, and which layers use a sliding window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from hydrahead.errors import UnsupportedModelError


def _layer_sliding_window(config: Any, layer_idx: int) -> int | None:
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and layer_types[layer_idx] == "sliding_attention":
        return config.sliding_window
    return None


@dataclass(frozen=True)
class Family:
    key: str  # "qwen3": hybrid model_type is "hydrahead_qwen3"
    config_class: type
    causal_lm_class: type
    qk_norm: bool
    qkv_bias: Callable[[Any], bool]
    o_bias: Callable[[Any], bool]
    sliding_window: Callable[[Any, int], int | None]


FAMILIES: dict[str, Family] = {
    f.key: f
    for f in (
        Family("qwen3", Qwen3Config, Qwen3ForCausalLM, True,
               lambda c: c.attention_bias, lambda c: c.attention_bias, _layer_sliding_window),
        Family("qwen2", Qwen2Config, Qwen2ForCausalLM, False,
               lambda c: True, lambda c: False, _layer_sliding_window),
        Family("llama", LlamaConfig, LlamaForCausalLM, False,
               lambda c: c.attention_bias, lambda c: c.attention_bias, lambda c, i: None),
        Family("mistral", MistralConfig, MistralForCausalLM, False,
               lambda c: False, lambda c: False, lambda c, i: getattr(c, "sliding_window", None)),
    )
}


def family_of_config(config: Any, what: str = "the model") -> Family:
    """The family of a config (object or config.json dict; a hybrid's counts as its teacher's), or
    `UnsupportedModelError` naming its model_type and what is supported: the one architecture check,
    made on the config before any weights are read."""
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    key = str(model_type).removeprefix("hydrahead_")
    if model_type is None:
        raise UnsupportedModelError(f"{what} has no model_type in its config, so its architecture is unknown; "
                                    "hydrahead works on Qwen3, Qwen2, Llama and Mistral decoder LLMs")
    if key not in FAMILIES:
        raise UnsupportedModelError(
            f"{what} is a {model_type!r} model; hydrahead works on Qwen3, Qwen2, Llama and Mistral decoder LLMs "
            f"(model_type {', '.join(FAMILIES)})"
        )
    check_not_quantized(config, what)
    return FAMILIES[key]


def check_not_quantized(config: Any, what: str = "the model") -> None:
    """UnsupportedModelError for a pre-quantized checkpoint (bitsandbytes, GPTQ, AWQ, FP8): its weights are
    packed or scaled, and conversion copies (and distillation trains) full-precision ones."""
    quantized = config.get("quantization_config") if isinstance(config, dict) else getattr(
        config, "quantization_config", None)
    if quantized:
        method = (quantized.get("quant_method") if isinstance(quantized, dict)
                  else getattr(quantized, "quant_method", None))
        raise UnsupportedModelError(f"{what} is quantized ({method or 'quantization_config'}): conversion copies "
                                    "full-precision weights; give the original (bf16, fp16 or fp32) checkpoint")


def family_of(model: Any) -> Family:
    """The family of a teacher model, or `UnsupportedModelError` naming the class and the supported list."""
    for family in FAMILIES.values():
        if type(model) is family.causal_lm_class:
            return family
    from hydrahead.models.hybrid import is_hybrid  # hybrid imports this module

    if is_hybrid(model):
        raise UnsupportedModelError(f"cannot convert {type(model).__name__}: it is already a hydrahead hybrid; "
                                    "convert its teacher (the model it was made from) with the new plan")
    supported = ", ".join(f.causal_lm_class.__name__ for f in FAMILIES.values())
    raise UnsupportedModelError(
        f"cannot convert {type(model).__name__}: hydrahead supports {supported} "
        "(load the model with AutoModelForCausalLM so it gets one of these classes)"
    )


