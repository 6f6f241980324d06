"""`HeadPlan`: which query heads of each layer keep softmax full attention (FA).

Every query head not listed is converted to Gated DeltaNet linear attention (GDN). With grouped-query
attention a KV head is still needed (and cached) when any query head of its group is FA, so the
KV-cache saving depends on how FA heads fall into groups; the plan reports it exactly.
"""

from __future__ import annotations

import math
import random as _random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydrahead.errors import PlanError, integer, items, shown
from hydrahead.models.shape import ModelShape
from hydrahead.utils.io import read_json, write_json


GRANULARITIES = ("query_head", "kv_group")


def parse_ratio(ratio: str) -> tuple[int, int]:
    """"a:b" (linear-attention : full-attention) -> (a, b); PlanError on anything else."""
    parts = str(ratio).split(":")
    try:
        a, b = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        a = b = None
    if a is None or b is None or a < 0 or b < 0 or a + b == 0:
        raise PlanError(f"ratio must be 'LA:FA' with non-negative integers, e.g. '7:1' or '3:1', got {ratio!r}")
    return a, b


def _share(total: int, ratio: str) -> int:
    """How many of `total` units are FA under LA:FA = a:b: total * b / (a + b), rounded half up."""
    a, b = parse_ratio(ratio)
    return math.floor(total * b / (a + b) + 0.5)


def _select(scores: list[list[float]], count: int, min_per_layer: int) -> tuple[list[list[int]], int]:
    """Constrained global screening: the best `min_per_layer` units of every layer, then the best of the
    rest over all layers until `count` are chosen. Ties go to the lower layer, then the lower index.
    Returns the chosen units per layer and how many of them were picked by that rule: chosen with the same score
    as a unit left out of the same pick (a layer's own for its minimum, any layer's for the rest)."""
    chosen = [sorted(range(len(row)), key=lambda u: (-row[u], u))[:min_per_layer] for row in scores]
    minimum = {(layer, u) for layer, units in enumerate(chosen) for u in units}
    rest = sorted(((layer, u) for layer, row in enumerate(scores) for u in range(len(row)) if (layer, u) not in minimum),
                  key=lambda lu: (-scores[lu[0]][lu[1]], lu))
    picked, left = rest[: count - len(minimum)], rest[count - len(minimum):]
    for layer, u in picked:
        chosen[layer].append(u)
    # a pick the scores did not decide: a unit left out in the end has its score (in its layer, for the minimum)
    best_left = max((scores[layer][u] for layer, u in left), default=None)
    tied = sum(scores[layer][u] == best_left for layer, u in picked)
    tied += sum(any(scores[layer][u] == scores[layer][w] for lw, w in left if lw == layer) for layer, u in minimum)
    return chosen, tied


def _score_rows(scores: Any) -> list[list[float]]:
    """(layers, heads) scores of a `HeadScores` (or anything with `.values`) as nested lists of floats."""
    values = getattr(scores, "values", scores)
    values = scores if callable(values) else values  # a tensor's (and a dict's) .values is a method
    values = values.tolist() if hasattr(values, "tolist") else values
    rows = [[float(v) for v in row] for row in values]
    if not rows or any(len(r) != len(rows[0]) or not r for r in rows):
        raise PlanError("scores must be a non-empty (layers, heads) array")
    if any(math.isnan(v) for r in rows for v in r):
        raise PlanError("scores contain NaN")
    return rows


def _checked_scores(scores: Any, config: Any | None) -> tuple[list[list[float]], int]:
    """(rows, num_kv_heads) of scores a plan may be made from: their shape fits `config` (when given) and they
    rank the heads."""
    rows = _score_rows(scores)
    if hasattr(scores, "num_kv_heads"):  # a HeadScores
        kv = integer(scores.num_kv_heads, "num_kv_heads", PlanError)
    elif config is not None:  # plain (layers, heads) values: the model's own grouping
        kv = ModelShape.from_config(config).kv_heads
    else:  # nothing says how heads share K/V: one KV head per query head, as convert will check
        kv = len(rows[0])
    _check_scores_shape(rows, kv, config)
    _check_ranked(rows)
    return rows, kv


def _check_ranked(rows: list[list[float]]) -> None:
    """PlanError when every head has one score (probes the model cannot solve give every effect 0): such scores
    rank nothing, and the plan would be the heads' index order."""
    flat = {v for r in rows for v in r}
    if len(flat) == 1 and sum(map(len, rows)) > 1:
        raise PlanError(f"every head scores {flat.pop()}: the scores rank no head above another, and a plan from them "
                        "would pick heads by their index; score on probes the model solves (a context length "
                        "inside its window), or plan with --baseline random")


def _check_scores_shape(rows: list[list[float]], num_kv_heads: int, config: Any | None) -> None:
    layers, heads = len(rows), len(rows[0])
    if num_kv_heads <= 0 or heads % num_kv_heads:
        raise PlanError(f"scores have {heads} heads per layer, not a multiple of num_kv_heads={num_kv_heads}")
    if config is not None:
        ours, model = ModelShape(layers, heads, num_kv_heads), ModelShape.from_config(config)
        if not ours.same_heads(model):
            raise PlanError(f"scores are for a model with {ours.describe()} but the model has {model.describe()}")


def _model_shape(config: Any) -> tuple[int, int, int]:
    """(layers, query heads, KV heads) of a config, a config.json dict or a `ModelShape`."""
    shape = ModelShape.from_config(config)
    return shape.layers, shape.heads, shape.kv_heads


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
        # integers (numpy ones too, stored as int so that the plan saves as JSON), never a float or a bool
        object.__setattr__(self, "num_heads", integer(self.num_heads, "num_heads", PlanError))
        object.__setattr__(self, "num_kv_heads", integer(self.num_kv_heads, "num_kv_heads", PlanError))
        if self.num_heads <= 0 or self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads:
            raise PlanError(
                f"num_heads={self.num_heads} must be a positive multiple of num_kv_heads={self.num_kv_heads}"
            )
        if not isinstance(self.meta, dict):
            raise PlanError(f"meta must be a dict, got {shown(self.meta)}")
        layers = items(self.fa_heads)
        if layers is None:
            raise PlanError(f"fa_heads must be one list of FA heads per decoder layer, got {shown(self.fa_heads)}")
        if not layers:
            raise PlanError("the plan has no layers: fa_heads needs one list of FA heads per decoder layer")
        normalised = []
        for layer, given in enumerate(layers):
            if (heads := items(given)) is None:
                raise PlanError(f"fa_heads holds one list of head indices per layer; layer {layer} is {shown(given)}")
            heads = tuple(integer(h, f"layer {layer}: a head index", PlanError) for h in heads)
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
    def from_scores(cls, scores: Any, ratio: str = "7:1", min_per_layer: int = 1, granularity: str = "query_head",
                    config: Any | None = None) -> HeadPlan:
        """Constrained global screening (docs/method.md section 3): the global top heads by score, with at least
        `min_per_layer` FA heads in every layer.

        scores:      a `HeadScores` ((layers, heads) `values`, `num_kv_heads`, `method`), or plain (layers, heads)
                     values (an array, a tensor, nested lists), whose KV grouping comes from `config`
        ratio:       "LA:FA"; FA heads = round(total * FA / (LA + FA)), half up
        granularity: "query_head", or "kv_group": whole GQA groups are chosen, a group scored by the max of its
                     query heads (its KV cache is kept as soon as one of them is FA), FA groups =
                     round(groups * FA / (LA + FA)), and min_per_layer heads become ceil(min_per_layer / group
                     size) groups, so the KV-cache fraction is exactly FA groups / all groups
        config:      when given, scores for another model shape raise PlanError; plain values take its KV
                     heads (without it, one KV head per query head, and kv_group is refused)
        """
        rows, kv = _checked_scores(scores, config)
        if granularity == "kv_group" and config is None and not hasattr(scores, "num_kv_heads"):
            raise PlanError("plain score values do not say which heads share K/V, which kv_group needs: give "
                            "config=model.config, or HeadScores(values, method, num_kv_heads=...)")
        return cls._screen(rows, kv, ratio, min_per_layer, granularity, getattr(scores, "method", "scores"))

    @classmethod
    def _screen(cls, rows: list[list[float]], kv: int, ratio: str, min_per_layer: int, granularity: str,
                method: str) -> HeadPlan:
        layers, heads = len(rows), len(rows[0])
        if granularity not in GRANULARITIES:
            raise PlanError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        min_per_layer = integer(min_per_layer, "min_per_layer", PlanError)  # 1.5 took 2 per layer
        if min_per_layer < 0 or min_per_layer > heads:
            raise PlanError(f"min_per_layer must be between 0 and {heads} heads, got {min_per_layer}")
        group = heads // kv if granularity == "kv_group" else 1
        units = [[max(row[g * group:(g + 1) * group]) for g in range(heads // group)] for row in rows]
        unit_min = math.ceil(min_per_layer / group)
        count = _share(layers * len(units[0]), ratio)
        what = "KV groups" if granularity == "kv_group" else "heads"
        if count == 0:
            raise PlanError(f"ratio {ratio} leaves no full-attention {what} out of {layers * len(units[0])}")
        if count < layers * unit_min:
            raise PlanError(f"ratio {ratio} gives {count} full-attention {what}, fewer than min_per_layer={min_per_layer} "
                            f"per layer needs ({layers * unit_min} over {layers} layers): lower min_per_layer "
                            f"(--min-per-layer 0 lets a layer keep none) or ask for a smaller ratio")
        chosen, tied = _select(units, count, unit_min)
        fa = [[u * group + i for u in layer for i in range(group)] for layer in chosen]
        meta = {"method": method, "ratio": ratio, "min_per_layer": min_per_layer, "granularity": granularity}
        if tied:  # the scores do not rank them: the lower layer and index decided (scores of exactly 0, say)
            meta["tied_picks"] = tied
        return cls(tuple(tuple(layer) for layer in fa), heads, kv, meta=meta)

    @classmethod
    def random(cls, config: Any, ratio: str = "7:1", seed: int = 0, min_per_layer: int = 1,
               granularity: str = "query_head") -> HeadPlan:
        """The global-random baseline: `from_scores` with scores drawn uniformly at random (seeded)."""
        layers, heads, kv = _model_shape(config)
        seed = integer(seed, "seed", PlanError)  # None: another plan at every call
        rng = _random.Random(seed)
        rows = [[rng.random() for _ in range(heads)] for _ in range(layers)]
        plan = cls._screen(rows, kv, ratio, min_per_layer, granularity, "random")
        return cls(plan.fa_heads, heads, kv, meta={**plan.meta, "seed": seed})

    @classmethod
    def fixed_per_layer(cls, scores: Any, k: int, config: Any | None = None) -> HeadPlan:
        """The fixed per-layer allocation baseline: the k best heads of every layer (7:1 with 16 heads: k=2)."""
        rows, kv = _checked_scores(scores, config)
        heads = len(rows[0])
        k = integer(k, "k", PlanError)  # 2.0: a slice's TypeError; True: taken as 1
        if not 1 <= k <= heads:
            raise PlanError(f"k must be between 1 and {heads} heads per layer, got {k}")
        fa, tied = _select(rows, len(rows) * k, k)
        meta = {"method": getattr(scores, "method", "scores"), "allocation": "fixed_per_layer", "k": k}
        if tied:
            meta["tied_picks"] = tied
        return cls(tuple(tuple(layer) for layer in fa), heads, kv, meta=meta)

    @classmethod
    def layerwise(cls, config: Any, ratio: str = "3:1", layers: list[int] | None = None) -> HeadPlan:
        """The layer-wise hybrid baseline: every head FA in some layers, none in the others.

        Without `layers`, round(L * FA / (LA + FA)) FA layers evenly spaced, each closing a block of
        LA layers (3:1 on 28 layers: 3, 7, ..., 27).
        """
        L, heads, kv = _model_shape(config)
        if layers is None:
            n = _share(L, ratio)
            if n == 0:
                raise PlanError(f"ratio {ratio} leaves no full-attention layer out of {L}")
            layers = [math.floor((i + 1) * L / n) - 1 for i in range(n)]
            meta = {"method": "layerwise", "ratio": ratio, "layers": layers}
        else:
            if (given := items(layers)) is None:
                raise PlanError(f"layers must be a list of layer indices, got {shown(layers)}")
            layers = [integer(layer, "a layer index", PlanError) for layer in given]
            bad = [layer for layer in layers if not 0 <= layer < L]
            if bad or len(set(layers)) != len(layers) or not layers:
                raise PlanError(f"layers must be distinct indices in 0..{L - 1}, got {layers}")
            meta = {"method": "layerwise", "layers": sorted(layers)}
        fa = [tuple(range(heads)) if layer in set(layers) else () for layer in range(L)]
        return cls(tuple(fa), heads, kv, meta=meta)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadPlan:
        """A plan from its JSON form; PlanError naming the field that is missing or of the wrong type
        (head indices and counts must be integers: 0.5 or "four" are refused, never rounded)."""
        if not isinstance(data, dict) or not {"fa_heads", "num_heads", "num_kv_heads"} <= set(data):
            raise PlanError("not a head plan: expected a JSON object with keys 'fa_heads', 'num_heads', 'num_kv_heads'")

        layers = data["fa_heads"]
        if not isinstance(layers, list) or not all(isinstance(layer, list) for layer in layers):
            raise PlanError(f"plan field fa_heads must be a list of lists of head indices, got {layers!r:.80}")
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise PlanError(f"plan field meta must be an object, got {meta!r:.80}")
        return cls(
            fa_heads=tuple(tuple(integer(h, f"plan field fa_heads[{i}]", PlanError) for h in layer)
                           for i, layer in enumerate(layers)),
            num_heads=integer(data["num_heads"], "plan field num_heads", PlanError),
            num_kv_heads=integer(data["num_kv_heads"], "plan field num_kv_heads", PlanError),
            meta=dict(meta),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fa_heads": [list(layer) for layer in self.fa_heads],
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_json(cls, path: str | Path) -> HeadPlan:
        return cls.from_dict(read_json(path, PlanError, "plan file"))

    def to_json(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    # ----------------------------------------------------------------------------- checks
    def validate(self, config: Any) -> HeadPlan:
        """Raise `PlanError` naming what does not fit `config`; return self so calls chain."""
        layers, heads, kv = _model_shape(config)
        if len(self.fa_heads) != layers:
            raise PlanError(f"plan has {len(self.fa_heads)} layers but the model has {layers}")
        if self.num_heads != heads:
            raise PlanError(f"plan is for {self.num_heads} query heads per layer but the model has {heads}")
        if self.num_kv_heads != kv:
            plain = (" (a plan from plain score values without config= takes one KV head per query head: pass "
                     "config=model.config to HeadPlan.from_scores)") if self.num_kv_heads == self.num_heads else ""
            raise PlanError(f"plan is for {self.num_kv_heads} KV heads per layer but the model has {kv}{plain}")
        return self

    # ----------------------------------------------------------------------------- derived
    @property
    def num_layers(self) -> int:
        return len(self.fa_heads)

    @property
    def group_size(self) -> int:
        """Query heads per KV head."""
        return self.num_heads // self.num_kv_heads

    def gdn_heads(self, layer: int) -> tuple[int, ...]:
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
