"""Per-head attention outputs of a teacher: one forward pre-hook on each layer's `self_attn.o_proj`.

A head's output is its slice of o_proj's input, (B, T, H*D) viewed as (B, T, H, D): the value-weighted
sum the head writes before the output projection mixes heads. `HeadHooks` is the one hook every user of
head outputs goes through: conversion's calibration (`convert.teacher_head_statistics`), patching and
attribution (`scoring`), ablation (`scoring.ablate`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hydrahead.errors import UnsupportedModelError
from hydrahead.models.families import FAMILIES
from hydrahead.models.shape import ModelShape


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """The `self_attn` modules of a supported teacher (Qwen3, Qwen2, Llama, Mistral causal LMs)."""
    if not any(type(model) is f.causal_lm_class for f in FAMILIES.values()):
        supported = ", ".join(f.causal_lm_class.__name__ for f in FAMILIES.values())
        raise UnsupportedModelError(
            f"cannot hook the heads of {type(model).__name__}: head outputs are read on the teacher, one of "
            f"{supported} (a converted hybrid has no softmax head outputs left to patch)"
        )
    return [layer.self_attn for layer in model.model.layers]


@dataclass
class HeadPatch:
    """Head outputs to write into one layer's o_proj input: x[rows[i], :, heads[i]] = values[i].

    rows, heads: (n,) long; values: (n, T, D)
    """

    rows: torch.Tensor
    heads: torch.Tensor
    values: torch.Tensor

    @classmethod
    def from_triples(cls, triples: Iterable[tuple[int, int, torch.Tensor]]) -> HeadPatch:
        """From (row, head, value (T, D)) triples."""
        triples = list(triples)
        device = triples[0][2].device
        rows = torch.tensor([t[0] for t in triples], dtype=torch.long, device=device)
        heads = torch.tensor([t[1] for t in triples], dtype=torch.long, device=device)
        return cls(rows, heads, torch.stack([t[2] for t in triples]))


class HeadHooks:
    """Pre-hooks on every o_proj, active inside `with HeadHooks(model) as hooks:`.

    hooks.capture:    None, or a dict that receives layer -> head outputs (B, T, H, D) of each forward
    hooks.patches:    layer -> HeadPatch applied before o_proj (cleared by the caller)
    hooks.overwrites: layer -> (head indices (k,), values (k, D)): those heads output the constant value
                      at every row and position (ablation; any T, so also token by token with a cache)
    hooks.cuts:       layer -> head indices whose outputs keep their values but are cut from the autograd
                      graph (nothing below them is differentiated through them)
    hooks.grad:       when True, each layer's head outputs get a zero leaf added; hooks.leaves[layer] then
                      holds it, and d(readout)/d(leaf) is d(readout)/d(head outputs)
    """

    def __init__(self, model: nn.Module):
        self.attn = attention_layers(model)
        self.shape = ModelShape.from_config(model.config)
        self.num_heads, self.head_dim = self.shape.heads, self.shape.head_dim
        self.capture: dict[int, torch.Tensor] | None = None
        self.patches: dict[int, HeadPatch] = {}
        self.overwrites: dict[int, tuple[list[int], torch.Tensor]] = {}
        self.cuts: dict[int, list[int]] = {}
        self.grad = False
        self.leaves: dict[int, torch.Tensor] = {}
        self._handles: list[Any] = []

    def _hook(self, layer: int):
        def pre_hook(module: nn.Module, args: tuple[torch.Tensor, ...]):
            x = args[0]
            B, T, _ = x.shape
            heads = x.view(B, T, self.num_heads, self.head_dim)  # (B, T, H, D)
            patch, overwrite, cut = self.patches.get(layer), self.overwrites.get(layer), self.cuts.get(layer)
            changed = patch is not None or overwrite is not None or cut is not None
            if changed:
                heads = heads.clone()
            if cut is not None:
                heads[:, :, cut] = heads[:, :, cut].detach()
            if overwrite is not None:
                idx, values = overwrite
                heads[:, :, idx] = values.to(heads.dtype)  # (k, D) broadcast over (B, T)
            if patch is not None:
                heads[patch.rows, :, patch.heads] = patch.values.to(heads.dtype)  # (n, T, D) slices
            if self.grad:
                leaf = torch.zeros_like(heads, requires_grad=True)
                self.leaves[layer] = leaf
                heads = heads + leaf
            if self.capture is not None:
                self.capture[layer] = heads if self.grad else heads.detach()
            if not changed and not self.grad:
                return None
            return (heads.reshape(B, T, self.num_heads * self.head_dim), *args[1:])

        return pre_hook

    def __enter__(self) -> HeadHooks:
        self._handles = [a.o_proj.register_forward_pre_hook(self._hook(i)) for i, a in enumerate(self.attn)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.patches, self.overwrites, self.cuts, self.leaves, self.capture, self.grad = {}, {}, {}, {}, None, False
