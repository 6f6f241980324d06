"""`convert`: a teacher transformers model + a `HeadPlan` + `HybridOptions` -> a hybrid model.

The teacher is not modified (it is still needed as the distillation teacher). Everything outside
self-attention is copied as is. Inside each layer, the FA branch takes the teacher's q/k/v rows of its
heads, the GDN branch reuses the teacher's q rows of its heads and the k/v rows of their KV groups
(parameter reuse, docs/method.md section 2), `o_proj`'s columns are permuted into execution order, and the
fusion gains start at the teacher's per-head output RMS measured on a short calibration batch.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from hydrahead.layers.hybrid_attention import HybridAttention
from hydrahead.models.families import family_of
from hydrahead.models.heads import HeadHooks
from hydrahead.models.hybrid import HYBRID_CLASSES
from hydrahead.options import HybridOptions
from hydrahead.plan import HeadPlan

CALIBRATION_SHAPE = (2, 128)  # random tokens used when no calibration batch is given


@torch.no_grad()
def teacher_head_rms(teacher: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-layer, per-head RMS of the teacher's attention output (the input of o_proj): (layers, heads)."""
    with HeadHooks(teacher) as hooks:
        hooks.capture = {}
        teacher(input_ids=input_ids.to(teacher.device), use_cache=False)
        return torch.stack([hooks.capture[i].float().pow(2).mean(dim=(0, 1, 3)).sqrt().cpu()
                            for i in range(len(hooks.attn))])


def _rows(weight: torch.Tensor | None, heads: list[int], D: int) -> torch.Tensor | None:
    """Rows of a (heads*D, ...) projection weight or bias for the given heads, in that order."""
    if weight is None:
        return None
    return torch.cat([weight[h * D : (h + 1) * D] for h in heads], dim=0)


def _load_rows(dst: nn.Linear, start: int, src: nn.Linear, heads: list[int], D: int) -> int:
    """Copy `src`'s rows of `heads` into `dst`'s rows from `start` on (a fused projection); the next free row."""
    rows = len(heads) * D
    dst.weight[start : start + rows].copy_(_rows(src.weight, heads, D))
    if dst.bias is not None:
        dst.bias[start : start + rows].copy_(_rows(src.bias, heads, D))
    return start + rows


@torch.no_grad()
def _load_layer(dst: HybridAttention, src: nn.Module, head_rms: torch.Tensor, group_size: int) -> None:
    D = dst.head_dim
    branches = [(dst.fa, list(dst.fa_heads)), (dst.gdn, list(dst.gdn_heads))]
    for branch, heads in branches:
        if branch is None:
            continue
        shared = branch is dst.fa or branch.kv_of_head is not None  # one k/v per KV group, else one per head
        kv_rows = sorted({h // group_size for h in heads}) if shared else [h // group_size for h in heads]
        row = _load_rows(branch.qkv_proj, 0, src.q_proj, heads, D)  # rows q | k | v
        row = _load_rows(branch.qkv_proj, row, src.k_proj, kv_rows, D)
        _load_rows(branch.qkv_proj, row, src.v_proj, kv_rows, D)
        if branch.q_norm is not None:
            branch.q_norm.load_state_dict(src.q_norm.state_dict())
            branch.k_norm.load_state_dict(src.k_norm.state_dict())
    order = list(dst.head_order)
    dst.o_proj.weight.copy_(_rows(src.o_proj.weight.T, order, D).T)  # permute input columns
    if dst.o_proj.bias is not None:
        dst.o_proj.bias.copy_(src.o_proj.bias)
    for norm, heads in ((dst.fa_norm, dst.fa_heads), (dst.gdn_norm, dst.gdn_heads)):
        if norm is not None:
            norm.gain.copy_(head_rms[list(heads)])


def convert(
    model: nn.Module,
    plan: HeadPlan,
    options: HybridOptions | None = None,
    calibration: torch.Tensor | None = None,
) -> nn.Module:
    """Return a hybrid copy of `model` (a transformers Qwen3/Qwen2/Llama/Mistral causal LM).

    options:     defaults to `HybridOptions.preset("paper")`.
    calibration: (B, T) token ids for the fusion-gain statistics; random tokens of shape
                 CALIBRATION_SHAPE from a fixed seed when omitted (only used with fusion="scale_norm").
    """
    family = family_of(model)
    options = options if options is not None else HybridOptions.preset("paper")
    plan.validate(model.config)
    teacher_config = model.config
    param = next(model.parameters())

    config_dict = teacher_config.to_dict()
    for key in ("model_type", "architectures", "transformers_version"):
        config_dict.pop(key, None)
    config_class, model_class = HYBRID_CLASSES[family.key]
    config = config_class(**config_dict)
    config.hydrahead = {"plan": plan.to_dict(), "options": options.to_dict()}
    config.architectures = [model_class.__name__]
    config._attn_implementation = teacher_config._attn_implementation

    H = teacher_config.num_attention_heads
    head_rms = torch.ones(teacher_config.num_hidden_layers, H)
    if options.fusion == "scale_norm":
        if calibration is None:
            generator = torch.Generator().manual_seed(0)
            calibration = torch.randint(0, teacher_config.vocab_size, CALIBRATION_SHAPE, generator=generator)
        head_rms = teacher_head_rms(model, calibration)

    with torch.device(param.device):
        student = model_class(config)
    student.to(param.dtype)
    # Everything but self-attention is the teacher's own weights.
    attention_prefixes = tuple(f"model.layers.{i}.self_attn." for i in range(len(model.model.layers)))
    shared = {k: v for k, v in model.state_dict().items() if not k.startswith(attention_prefixes)}
    missing, unexpected = student.load_state_dict(shared, strict=False)
    assert not unexpected, unexpected
    group_size = H // teacher_config.num_key_value_heads
    for dst_layer, src_layer, rms in zip(student.model.layers, model.model.layers, head_rms):
        _load_layer(dst_layer.self_attn, src_layer.self_attn, rms, group_size)
    student.generation_config = copy.deepcopy(model.generation_config)
    student.train(model.training)
    return student


def hybrid_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters conversion added (GDN branches, FA gates, fusion norms and gains), for stage 1."""
    return [p for m in model.modules() if isinstance(m, HybridAttention) for p in m.hybrid_parameters()]
