"""`HeadPlan`: which query heads of each layer keep softmax full attention (FA).

Every query head not listed is converted to Gated DeltaNet linear attention (GDN). With grouped-query
attention a KV head is still needed (and cached) when any query head of its group is FA, so the
KV-cache saving depends on how FA heads fall into groups; the plan reports it exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydrahead.errors import PlanError
from hydrahead.utils.io import atomic_write_text


def _model_shape(config: Any) -> tuple[int, int, int]:
    """(layers, query heads, KV heads) of a transformers config."""
    layers = int(config.num_hidden_layers)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    return layers, heads, kv_heads


@dataclass(frozen=True)
class HeadPlan:
    """Per layer, the sorted query-head indices that stay full attention.

    fa_heads:     one tuple per layer, e.g. ((0, 5), (3,), ...)
    num_heads:    query heads per layer of the model the plan is for
    num_kv_heads: KV heads per layer (GQA groups); query head h belongs to group h // (num_heads // num_kv_heads)
    """

    fa_heads: tuple[tuple[int, ...], ...]
    num_heads: int
    num_kv_heads: int
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.num_heads <= 0 or self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads:
            raise PlanError(
                f"num_heads={self.num_heads} must be a positive multiple of num_kv_heads={self.num_kv_heads}"
            )
        normalised = []
        for layer, heads in enumerate(self.fa_heads):
            heads = tuple(int(h) for h in heads)
            if len(set(heads)) != len(heads):
                raise PlanError(f"layer {layer}: head listed twice in {list(heads)}")
            bad = [h for h in heads if not 0 <= h < self.num_heads]
            if bad:
                raise PlanError(f"layer {layer}: head index {bad[0]} out of range 0..{self.num_heads - 1}")
            normalised.append(tuple(sorted(heads)))
        object.__setattr__(self, "fa_heads", tuple(normalised))

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def full(cls, config: Any) -> HeadPlan:
        """Every head keeps full attention (the teacher, as a plan)."""
        layers, heads, kv = _model_shape(config)
        return cls(tuple(tuple(range(heads)) for _ in range(layers)), heads, kv)

    @classmethod
    def none(cls, config: Any) -> HeadPlan:
        """No head keeps full attention (all-GDN)."""
        layers, heads, kv = _model_shape(config)
        return cls(tuple(() for _ in range(layers)), heads, kv)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadPlan:
        try:
            return cls(
                fa_heads=tuple(tuple(layer) for layer in data["fa_heads"]),
                num_heads=int(data["num_heads"]),
                num_kv_heads=int(data["num_kv_heads"]),
                meta=dict(data.get("meta", {})),
            )
        except (KeyError, TypeError) as err:
            raise PlanError(
                f"not a head plan: expected keys 'fa_heads', 'num_heads', 'num_kv_heads' ({err!r})"
            ) from err

    def to_dict(self) -> dict[str, Any]:
        return {
            "fa_heads": [list(layer) for layer in self.fa_heads],
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_json(cls, path: str | Path) -> HeadPlan:
        path = Path(path)
        if not path.is_file():
            raise PlanError(f"plan file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise PlanError(f"plan file {path} is not valid JSON: {err}") from err
        return cls.from_dict(data)

    def to_json(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    # ----------------------------------------------------------------------------- checks
    def validate(self, config: Any) -> HeadPlan:
        """Raise `PlanError` naming what does not fit `config`; return self so calls chain."""
        layers, heads, kv = _model_shape(config)
        if len(self.fa_heads) != layers:
            raise PlanError(f"plan has {len(self.fa_heads)} layers but the model has {layers}")
        if self.num_heads != heads:
            raise PlanError(f"plan is for {self.num_heads} query heads per layer but the model has {heads}")
        if self.num_kv_heads != kv:
            raise PlanError(f"plan is for {self.num_kv_heads} KV heads per layer but the model has {kv}")
        return self

    # ----------------------------------------------------------------------------- derived
    @property
    def num_layers(self) -> int:
        return len(self.fa_heads)

    @property
    def group_size(self) -> int:
        """Query heads per KV head."""
        return self.num_heads // self.num_kv_heads

    def la_heads(self, layer: int) -> tuple[int, ...]:
        """The GDN (linear-attention) query heads of `layer`, sorted."""
        fa = set(self.fa_heads[layer])
        return tuple(h for h in range(self.num_heads) if h not in fa)

    @property
    def fa_heads_per_layer(self) -> list[int]:
        return [len(layer) for layer in self.fa_heads]

    @property
    def fa_kv_heads(self) -> tuple[tuple[int, ...], ...]:
        """Per layer, the KV heads the FA query heads need (these are the only ones cached)."""
        g = self.group_size
        return tuple(tuple(sorted({h // g for h in layer})) for layer in self.fa_heads)

    @property
    def fa_kv_heads_per_layer(self) -> list[int]:
        return [len(layer) for layer in self.fa_kv_heads]

    @property
    def num_fa(self) -> int:
        return sum(self.fa_heads_per_layer)

    @property
    def num_la(self) -> int:
        return self.num_layers * self.num_heads - self.num_fa

    @property
    def la_fa_ratio(self) -> float:
        """Linear-attention heads per full-attention head (inf when no head is FA)."""
        return self.num_la / self.num_fa if self.num_fa else float("inf")

    @property
    def kv_cache_fraction(self) -> float:
        """KV-cache bytes per token relative to the teacher (which caches every KV head of every layer)."""
        return sum(self.fa_kv_heads_per_layer) / (self.num_layers * self.num_kv_heads)

    def summary(self) -> str:
        """A short human-readable table: FA heads and FA KV heads per layer, ratio, KV-cache fraction."""
        ratio = "inf" if self.num_fa == 0 else f"{self.la_fa_ratio:.2f}:1"
        lines = [
            f"HeadPlan: {self.num_layers} layers x {self.num_heads} heads ({self.num_kv_heads} KV heads); "
            f"FA heads {self.num_fa}, GDN heads {self.num_la} (LA:FA {ratio}); "
            f"KV cache {100 * self.kv_cache_fraction:.1f}% of the teacher",
            "layer  FA  FA-KV  FA heads",
        ]
        for layer, heads in enumerate(self.fa_heads):
            lines.append(f"{layer:5d} {len(heads):3d} {len(self.fa_kv_heads[layer]):6d}  {list(heads)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
