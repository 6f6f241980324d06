"""Hybrid model classes: each family's own transformers causal-LM class with `HybridAttention` in every layer.

`HydraHeadQwen3ForCausalLM` *is a* `Qwen3ForCausalLM` (same embeddings, MLPs, norms, head, generation
code); only `self_attn` differs. Its config is the teacher's config plus one `hydrahead` entry holding
the plan and the options, with model_type `hydrahead_<family>`, registered with the Auto classes when
`hydrahead` is imported, so `save_pretrained` / `AutoModelForCausalLM.from_pretrained` work as usual.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from hydrahead.errors import CacheError, CheckpointError
from hydrahead.layers.hybrid_attention import HybridAttention
from hydrahead.models.cache import HybridHeadCache
from hydrahead.models.families import FAMILIES, Family, head_dim
from hydrahead.options import HybridOptions
from hydrahead.plan import HeadPlan


def plan_and_options(config: Any) -> tuple[HeadPlan, HybridOptions]:
    spec = getattr(config, "hydrahead", None)
    if not isinstance(spec, dict) or "plan" not in spec or "options" not in spec:
        raise CheckpointError(
            f"config of model_type {getattr(config, 'model_type', '?')!r} has no valid 'hydrahead' entry "
            "(plan and options); was it written by hydrahead?"
        )
    return HeadPlan.from_dict(spec["plan"]), HybridOptions.from_dict(spec["options"])


class HybridCausalLMMixin:
    """Shared behaviour of every hybrid causal-LM class (mixed in before the family's class)."""

    family: Family

    def __init__(self, config) -> None:
        super().__init__(config)
        plan, options = plan_and_options(config)
        plan.validate(config)
        if getattr(config, "head_dim", None) is None:
            config.head_dim = head_dim(config)
        for i, layer in enumerate(self.model.layers):
            layer.self_attn = HybridAttention(
                config, i, plan.fa_heads[i], plan.fa_kv_heads[i], options,
                qkv_bias=self.family.qkv_bias(config), o_bias=self.family.o_bias(config),
                qk_norm=self.family.qk_norm, sliding_window=self.family.sliding_window(config, i),
            )
        self.hydrahead_plan, self.hydrahead_options = plan, options

    # position_ids must stay a named parameter: generate() only derives padding-aware positions for
    # models whose forward() declares it.
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                **kwargs):
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and not isinstance(past_key_values, HybridHeadCache):
            # generate() and plain forward() start from an empty DynamicCache or None: swap in ours.
            if past_key_values is not None and past_key_values.get_seq_length() > 0:
                raise CacheError(
                    f"got a filled {type(past_key_values).__name__}; hydrahead models need a HybridHeadCache"
                )
            past_key_values = HybridHeadCache(self.config)
        padding = attention_mask if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2 else None
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            linear_attention_mask=padding,
            **kwargs,
        )


def _make_classes(family: Family) -> tuple[type, type]:
    name = family.causal_lm_class.__name__.replace("ForCausalLM", "")
    config_class = type(
        f"HydraHead{name}Config",
        (family.config_class,),
        {"model_type": f"hydrahead_{family.key}", "__module__": __name__},
    )
    model_class = type(
        f"HydraHead{name}ForCausalLM",
        (HybridCausalLMMixin, family.causal_lm_class),
        {"config_class": config_class, "family": family, "__module__": __name__,
         "_no_split_modules": getattr(family.causal_lm_class, "_no_split_modules", None)},
    )
    return config_class, model_class


HYBRID_CLASSES: dict[str, tuple[type, type]] = {key: _make_classes(f) for key, f in FAMILIES.items()}
# Module-level names, so the classes pickle and can be imported by name.
HydraHeadQwen3Config, HydraHeadQwen3ForCausalLM = HYBRID_CLASSES["qwen3"]
HydraHeadQwen2Config, HydraHeadQwen2ForCausalLM = HYBRID_CLASSES["qwen2"]
HydraHeadLlamaConfig, HydraHeadLlamaForCausalLM = HYBRID_CLASSES["llama"]
HydraHeadMistralConfig, HydraHeadMistralForCausalLM = HYBRID_CLASSES["mistral"]

for _config_class, _model_class in HYBRID_CLASSES.values():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModelForCausalLM.register(_config_class, _model_class, exist_ok=True)


def is_hybrid(model: Any) -> bool:
    return isinstance(model, HybridCausalLMMixin)
