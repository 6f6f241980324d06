"""`ablate`: knock out chosen attention heads inside a `with` block.

A head is knocked out by overwriting its output (its slice of o_proj's input) at every position:
- mode="mean" (default): with the head's mean output over a reference set (every position of every
  reference sequence), the standard choice in interpretability work: it removes what the head computes
  for this input while keeping the average signal later layers expect.
- mode="zero": with zeros (simpler, but moves the residual stream off its usual distribution).
Means are computed once when the block is entered (from `reference`) or passed in (`head_means`), so
the ablation is the same at every forward, also when generating token by token with a cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from hydrahead import errors
from hydrahead.errors import ScoringError
from hydrahead.models.heads import HeadHooks
from hydrahead.models.shape import ModelShape
from hydrahead.scoring.probes import Probe, batches_by_length
from hydrahead.utils.units import counted

ABLATION_MODES = ("mean", "zero")


def _sequences(reference: torch.Tensor | Sequence[torch.Tensor] | Sequence[Probe]) -> list[torch.Tensor]:
    """Reference inputs as a list of (B, T) id tensors (probes: their clean prompts)."""
    if isinstance(reference, torch.Tensor):
        return [reference if reference.dim() == 2 else reference[None]]
    items = list(reference)
    if items and all(isinstance(item, Probe) for item in items):
        return [torch.tensor([p.clean_ids for p in batch]) for batch in batches_by_length(items)]
    out = []
    for item in items:
        if isinstance(item, Probe):
            out.append(item.input_ids())
        else:
            item = torch.as_tensor(item)
            out.append(item if item.dim() == 2 else item[None])
    if not out:
        raise ScoringError("mean ablation needs at least one reference sequence")
    return out


@torch.no_grad()
def head_means(model: nn.Module, reference: torch.Tensor | Sequence[torch.Tensor] | Sequence[Probe]) -> list[torch.Tensor]:
    """Per layer, every head's mean output over all positions of the reference inputs: (H, D) each."""
    device = next(model.parameters()).device
    sums: list[torch.Tensor] | None = None
    count = 0
    with HeadHooks(model) as hooks:
        for ids in _sequences(reference):
            hooks.capture = {}
            model(input_ids=ids.to(device), use_cache=False)
            layer_sums = [hooks.capture[layer].float().sum(dim=(0, 1)) for layer in range(len(hooks.attn))]  # (H, D)
            sums = layer_sums if sums is None else [a + b for a, b in zip(sums, layer_sums)]
            count += ids.shape[0] * ids.shape[1]
    assert sums is not None
    return [s / count for s in sums]


def _check_heads(model: nn.Module, heads: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    shape = ModelShape.from_config(model.config)
    by_layer: dict[int, list[int]] = {}
    pairs = errors.items(heads)
    if pairs is None:
        raise ScoringError(f"heads must be a list of (layer, head) pairs, got {errors.shown(heads)}")
    for pair in pairs:
        if len(values := errors.items(pair) or ()) != 2:
            raise ScoringError(f"heads must be (layer, head) pairs, got {errors.shown(pair)}")
        layer, head = (errors.integer(x, f"head {values}: each number", ScoringError) for x in values)
        if not (0 <= layer < shape.layers and 0 <= head < shape.heads):
            raise ScoringError(f"head ({layer}, {head}) does not exist: the model has {shape.layers} layers x "
                               f"{shape.heads} heads")
        by_layer.setdefault(layer, []).append(head)
    return by_layer


def _check_means(means: object, layers: int, heads: int, head_dim: int) -> None:
    """ScoringError unless `means` are this model's (`head_means` of it): per layer, (heads, head_dim). Another
    model's means ablated with whatever they held, or failed deep inside with an IndexError."""
    shapes = [tuple(getattr(m, "shape", ())) for m in errors.items(means) or ()]
    if len(shapes) != layers or any(shape != (heads, head_dim) for shape in shapes):
        got = f"{counted(len(shapes), 'layer')} of shapes {sorted(set(shapes))}" if shapes else errors.shown(means)
        raise ScoringError(f"means are not this model's: it needs {layers} layers of ({heads} heads, {head_dim}) "
                           f"means, got {got}; compute them with head_means(model, reference)")


@contextlib.contextmanager
def ablate(
    model: nn.Module,
    heads: Iterable[tuple[int, int]],
    mode: str = "mean",
    reference: torch.Tensor | Sequence[torch.Tensor] | Sequence[Probe] | None = None,
    means: Sequence[torch.Tensor] | None = None,
) -> Iterator[nn.Module]:
    """Inside the block, `model`'s (layer, head) pairs in `heads` output their mean (or zero).

    reference: inputs the means are taken over (ids, a list of ids or probes); or pass `means`
               (from `head_means`) to reuse them across blocks.
    """
    if mode not in ABLATION_MODES:
        raise ScoringError(f"ablation mode must be one of {ABLATION_MODES}, got {mode!r}")
    by_layer = _check_heads(model, heads)
    if by_layer and mode == "mean" and means is None:
        if reference is None:
            raise ScoringError("mean ablation needs `reference` inputs (or precomputed `means`); use mode='zero' otherwise")
        means = head_means(model, reference)
    with HeadHooks(model) as hooks:
        if by_layer and mode == "mean":
            _check_means(means, len(hooks.attn), hooks.num_heads, hooks.head_dim)
        for layer, idx in by_layer.items():
            idx = sorted(set(idx))
            values = means[layer][idx] if mode == "mean" else torch.zeros(len(idx), hooks.head_dim)
            hooks.overwrites[layer] = (idx, values.to(next(model.parameters()).device))
        yield model
