"""`convert`: a teacher transformers model + a `HeadPlan` + `HybridOptions` -> a hybrid model.

The teacher is not modified (it is still needed as the distillation teacher). Everything outside
self-attention is copied as is. Inside each layer, the FA branch takes the teacher's q/k/v rows of its
heads, the GDN branch reuses the teacher's q rows of its heads and the k/v rows of their KV groups
(parameter reuse, docs/method.md section 2), `o_proj`'s columns are permuted into execution order, and the
fusion gains start at the teacher's per-head output RMS measured on a short calibration batch; with
`gdn_mean_output`, o_proj's bias carries the GDN heads' mean output on that batch (and their gains the RMS
around it). The calibration batch should be text like the training data (distillation takes its first rows):
a head's mean output on random tokens is not its mean on text, so without a batch the bias starts at zero.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from hydrahead.layers.hybrid_attention import HybridAttention
from hydrahead.models.families import check_not_quantized, family_of
from hydrahead.models.heads import HeadHooks
from hydrahead.models.hybrid import HYBRID_CLASSES
from hydrahead.errors import OptionsError, PlanError, shown
from hydrahead.options import HybridOptions
from hydrahead.plan import HeadPlan

CALIBRATION_SHAPE = (2, 128)  # random tokens used when no calibration batch is given


CALIBRATION_ROWS = (2, 512)  # what `calibration_rows` takes of a text by default: rows x tokens


def calibrated(options: HybridOptions) -> list[str]:
    """What `convert` sets from a calibration batch under `options` (nothing: the batch goes unused)."""
    return [what for what, used in (("the fusion gains", options.fusion == "scale_norm"),
                                    ("the GDN heads' mean output", options.gdn_mean_output)) if used]


def calibration_rows(tokens: Iterable[int], rows: int = CALIBRATION_ROWS[0],
                     length: int = CALIBRATION_ROWS[1]) -> torch.Tensor:
    """A calibration batch for `convert` from a token stream (text like the training data, tokenised; read only
    as far as needed): `rows` rows of `length` tokens, fewer when the stream ends sooner, and one shorter row
    when it holds less than `length` tokens."""
    taken = list(itertools.islice(tokens, rows * length))
    if len(taken) < length:
        return torch.tensor([taken], dtype=torch.long)
    full = len(taken) // length
    return torch.tensor(taken[: full * length], dtype=torch.long).view(full, length)


def check_calibration(calibration: object, vocab_size: int) -> None:
    """OptionsError unless `calibration` is a non-empty (B, T) tensor of token ids below `vocab_size`."""
    if not isinstance(calibration, torch.Tensor):
        raise OptionsError(f"calibration must be a (B, T) tensor of token ids (integers), got {shown(calibration)}")
    if calibration.dtype not in (torch.int64, torch.int32):  # what an embedding takes (bool, int8: torch's error)
        raise OptionsError(f"calibration must hold token ids (torch.long or torch.int32), got a {calibration.dtype} "
                           "tensor")
    if calibration.dim() != 2 or calibration.numel() == 0:
        raise OptionsError(f"calibration must be a non-empty (B, T) tensor of token ids, got shape "
                           f"{tuple(calibration.shape)}")
    low, high = int(calibration.min()), int(calibration.max())
    if low < 0 or high >= vocab_size:
        raise OptionsError(f"calibration holds token id {low if low < 0 else high}, outside the model's vocabulary "
                           f"(0..{vocab_size - 1}): tokenise it with the teacher's tokenizer")


@dataclass(frozen=True)
class HeadStatistics:
    """Per layer and head, the teacher's attention output (the input of o_proj) on a calibration batch:
    `rms` (layers, heads), `mean` (layers, heads, head_dim) over every token, and `centred_rms` (layers, heads),
    the RMS around that mean."""

    rms: torch.Tensor
    mean: torch.Tensor
    centred_rms: torch.Tensor


@torch.no_grad()
def teacher_head_statistics(teacher: nn.Module, input_ids: torch.Tensor) -> HeadStatistics:
    """`HeadStatistics` of the teacher's heads on `input_ids` (B, T)."""
    with HeadHooks(teacher) as hooks:
        hooks.capture = {}
        teacher(input_ids=input_ids.to(teacher.device), use_cache=False)
        outputs = [hooks.capture[i].float() for i in range(len(hooks.attn))]  # (B, T, H, D) each
    mean = torch.stack([o.mean(dim=(0, 1)) for o in outputs])  # (layers, H, D)
    rms = torch.stack([o.pow(2).mean(dim=(0, 1, 3)).sqrt() for o in outputs])
    centred = torch.stack([(o - m).pow(2).mean(dim=(0, 1, 3)).sqrt() for o, m in zip(outputs, mean)])
    return HeadStatistics(rms.cpu(), mean.cpu(), centred.cpu())


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
def _load_layer(dst: HybridAttention, src: nn.Module, statistics: HeadStatistics | None, layer: int,
                group_size: int, text: bool) -> None:
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
    if dst.o_proj.bias is not None:  # the teacher's bias, or zeros for the GDN heads' mean output below
        if src.o_proj.bias is not None:
            dst.o_proj.bias.copy_(src.o_proj.bias)
        else:
            dst.o_proj.bias.zero_()
    if statistics is None:  # no fusion norms, no mean output
        return
    gdn_gains = statistics.rms
    if dst.mean_bias and text:  # the GDN heads' mean output through their o_proj columns (after the FA heads')
        mean = statistics.mean[layer, list(dst.gdn_heads)].reshape(-1).to(dst.o_proj.weight)
        dst.o_proj.bias.add_(dst.o_proj.weight[:, len(dst.fa_heads) * D :] @ mean)
        gdn_gains = statistics.centred_rms  # the GDN branch supplies what varies around the mean
    for norm, heads, gains in ((dst.fa_norm, dst.fa_heads, statistics.rms), (dst.gdn_norm, dst.gdn_heads, gdn_gains)):
        if norm is not None:
            norm.gain.copy_(gains[layer, list(heads)])


def convert(
    model: nn.Module,
    plan: HeadPlan,
    options: HybridOptions | None = None,
    calibration: torch.Tensor | None = None,
) -> nn.Module:
    """Return a hybrid copy of `model` (a transformers Qwen3/Qwen2/Llama/Mistral causal LM).

    options:     defaults to `HybridOptions.preset("paper")`.
    calibration: (B, T) token ids of text like the training data, for the heads' output statistics (fusion
                 gains, the GDN heads' mean output). When omitted, the gains come from random tokens of shape
                 CALIBRATION_SHAPE from a fixed seed and the GDN heads' mean-output bias starts at zero: a
                 head's mean over random tokens is not its mean over text, and starting from it was measured
                 to do harm (docs/real_models.md section 7)."""
    family = family_of(model)
    check_not_quantized(model.config)  # a quantized model's state holds packed weights and their scales
    if not isinstance(plan, HeadPlan):
        raise PlanError(f"plan must be a HeadPlan (HeadPlan.from_json, HeadPlan.from_dict), got {shown(plan)}")
    if options is not None and not isinstance(options, HybridOptions):
        raise OptionsError(f"options must be a HybridOptions (HybridOptions.preset(name)), got {shown(options)}")
    options = options if options is not None else HybridOptions.preset("paper")
    plan.validate(model.config)
    if calibration is not None:
        check_calibration(calibration, model.config.vocab_size)
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
    statistics, calibration_given = None, calibration is not None
    if options.fusion == "scale_norm" or (options.gdn_mean_output and calibration_given):  # `calibrated`
        if calibration is None:
            generator = torch.Generator().manual_seed(0)
            calibration = torch.randint(0, teacher_config.vocab_size, CALIBRATION_SHAPE, generator=generator)
        statistics = teacher_head_statistics(model, calibration)

    with torch.device(param.device):
        student = model_class(config)
    student.to(param.dtype)
    # Everything but self-attention is the teacher's own weights.
    attention_prefixes = tuple(f"model.layers.{i}.self_attn." for i in range(len(model.model.layers)))
    shared = {k: v for k, v in model.state_dict().items() if not k.startswith(attention_prefixes)}
    missing, unexpected = student.load_state_dict(shared, strict=False)
    assert not unexpected, unexpected
    group_size = H // teacher_config.num_key_value_heads
    for i, (dst_layer, src_layer) in enumerate(zip(student.model.layers, model.model.layers)):
        _load_layer(dst_layer.self_attn, src_layer.self_attn, statistics, i, group_size, text=calibration_given)
    student.generation_config = copy.deepcopy(model.generation_config)
    student.train(model.training)
    return student


def hybrid_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters conversion added (GDN branches, FA gates, fusion norms and gains, o_proj's bias where it
    carries the GDN heads' mean output), for stage 1."""
    return [p for m in model.modules() if isinstance(m, HybridAttention) for p in m.hybrid_parameters()]
