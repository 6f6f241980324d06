"""What a hybrid costs compared with its teacher: KV-cache bytes per token, recurrent state, parameters."""

from __future__ import annotations

from typing import Any

import torch


def kv_bytes_per_token(config: Any, kv_heads: int, itemsize: int) -> int:
    """K and V bytes one token adds to the cache when `kv_heads` KV heads are cached over all layers."""
    return 2 * config.head_dim * itemsize * kv_heads


def footprint(model: Any) -> dict[str, Any]:
    """Numbers for `hydrahead info` and the benchmarks, from the plan and the model's own dtype."""
    config, plan = model.config, model.hydrahead_plan
    D = config.head_dim
    dtype = next(model.parameters()).dtype
    itemsize = dtype.itemsize
    kv_per_token = kv_bytes_per_token(config, sum(plan.fa_kv_heads_per_layer), itemsize)
    teacher_kv = kv_bytes_per_token(config, plan.num_layers * plan.num_kv_heads, itemsize)
    options = model.hydrahead_options
    conv = options.conv_size
    state_itemsize = max(4, itemsize)  # the recurrent state in fp32, or fp64 for an fp64 model (ops compute_dtype)
    state = 0
    for i in range(plan.num_layers):
        la = plan.gdn_heads(i)
        kv = len({h // plan.group_size for h in la}) if options.gdn_shared_kv else len(la)
        # the recurrent state (D x D per GDN head) plus the last conv_size - 1 inputs of q, k, v in the model dtype
        state += len(la) * D * D * state_itemsize + ((len(la) + 2 * kv) * D * (conv - 1) * itemsize if conv else 0)
    with torch.device("meta"):
        teacher = model.family.causal_lm_class(config)
    teacher_params = sum(p.numel() for p in teacher.parameters())
    params = sum(p.numel() for p in model.parameters())
    return {
        "dtype": str(dtype).removeprefix("torch."),  # the bytes below are the model's in this dtype
        "kv_bytes_per_token": kv_per_token,
        "teacher_kv_bytes_per_token": teacher_kv,
        "kv_cache_fraction": plan.kv_cache_fraction,
        "state_bytes_per_sequence": state,
        "parameters": params,
        "teacher_parameters": teacher_params,
        "parameters_added": params - teacher_params,
        "fa_heads_per_layer": plan.fa_heads_per_layer,
        "fa_kv_heads_per_layer": plan.fa_kv_heads_per_layer,
    }
