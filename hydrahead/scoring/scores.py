"""`HeadScores`: one importance score per query head, with what produced it.

JSON layout (arrays as nested lists, layers outermost):
  {"method": "patching", "values": [[...heads...], ...layers...], "num_kv_heads": 8,
   "components": {"receiver/single_key": [[...]], ...}, "metadata": {...}}
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hydrahead.models.shape import ModelShape
from hydrahead.scoring.combine import top_heads
from hydrahead.errors import ScoringError, integer, shown
from hydrahead.utils.io import read_json, save_figure, write_json

METHODS = ("patching", "attribution", "retrieval")


@dataclass
class HeadScores:
    """values: (layers, heads), higher = matters more for retrieval.

    method:       "patching", "attribution" or "retrieval" (or any name, for scores made elsewhere)
    num_kv_heads: KV heads per layer of the scored model (query head h is in group h // group_size)
    components:   named arrays behind `values` (receiver/sender/kappa per capability)
    metadata:     probes, model shape, timings, convergence: plain JSON values
    """

    values: np.ndarray
    method: str
    num_kv_heads: int
    components: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 2 or 0 in self.values.shape:
            raise ScoringError(f"head scores must be a non-empty (layers, heads) array, got shape {self.values.shape}")
        if not np.isfinite(self.values).all():
            raise ScoringError("head scores contain NaN or infinite values")
        self.num_kv_heads = integer(self.num_kv_heads, "num_kv_heads", ScoringError)  # 2.0 failed in a reshape
        if self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads:
            raise ScoringError(f"{self.num_heads} query heads are not a multiple of num_kv_heads={self.num_kv_heads}")
        self.components = {k: np.asarray(v, dtype=np.float64) for k, v in self.components.items()}

    @property
    def senders(self) -> bool | None:
        """Whether causal scores (patching, attribution) include the sender term (`--no-senders`: not): the
        `senders` metadata, or whether sender rounds ran in files written before it was recorded; None where
        that is unknown or has no meaning (retrieval)."""
        meta = self.metadata
        if self.method not in ("patching", "attribution"):
            return None
        if isinstance(meta.get("senders"), bool):  # a hand-edited "false" is not taken as true
            return meta["senders"]
        return bool(meta["rounds"]) if "rounds" in meta else None

    # ------------------------------------------------------------------------------------ shape
    @property
    def num_layers(self) -> int:
        return int(self.values.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.values.shape[1])

    @property
    def shape(self) -> ModelShape:
        """The model shape these scores are for (no head_dim: scores do not record it)."""
        return ModelShape(self.num_layers, self.num_heads, self.num_kv_heads)

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    def check_config(self, config: Any, error: type[Exception] = ScoringError) -> HeadScores:
        """Raise `error` if these scores are for another model shape than `config`; return self."""
        shape = ModelShape.from_config(config)
        if not shape.same_heads(self.shape):
            raise error(f"scores are for a model with {self.shape.describe()} but this model has {shape.describe()}")
        return self

    # ------------------------------------------------------------------------------------ rankings
    def top_k(self, k: int) -> list[tuple[int, int]]:
        """The k highest-scoring (layer, head) pairs, best first (ties: lower layer, then lower head)."""
        k = integer(k, "top-k", ScoringError)  # 2.0 failed in a slice
        if not 0 <= k <= self.values.size:
            raise ScoringError(f"top-k must be between 0 and {self.values.size} heads, got {k}")
        return top_heads(self.values, k)

    def kv_group_values(self, reduce: str = "max") -> np.ndarray:
        """Scores per KV group (layers, kv_heads): the max (or mean) over the group's query heads."""
        grouped = self.values.reshape(self.num_layers, self.num_kv_heads, self.group_size)
        if reduce == "max":
            return grouped.max(-1)
        if reduce == "mean":
            return grouped.mean(-1)
        raise ScoringError(f"reduce must be 'max' or 'mean', got {reduce!r}")

    # ------------------------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "values": self.values.tolist(),
            "num_kv_heads": self.num_kv_heads,
            "components": {k: v.tolist() for k, v in self.components.items()},
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadScores:
        missing = [key for key in ("method", "values", "num_kv_heads") if not isinstance(data, dict) or key not in data]
        if missing:
            raise ScoringError(f"not a head-score file: expected a JSON object with keys 'method', 'values', "
                               f"'num_kv_heads' (missing {', '.join(map(repr, missing))})")
        kv = data["num_kv_heads"]
        if isinstance(kv, bool) or not isinstance(kv, int):
            raise ScoringError(f"num_kv_heads must be a whole number, got {shown(kv)}")
        try:
            if not _numbers_only(data["values"]):  # np.asarray would take "0.5" and true as numbers
                raise TypeError
            values = np.asarray(data["values"], dtype=np.float64)
        except (TypeError, ValueError):
            raise ScoringError("values must be a (layers, heads) table of numbers") from None
        for key in ("components", "metadata"):
            if not isinstance(data.get(key, {}), dict):
                raise ScoringError(f"{key} must be a JSON object, got {shown(data[key])}")
        try:
            components = {name: np.asarray(v, dtype=np.float64) for name, v in data.get("components", {}).items()}
        except (TypeError, ValueError):
            raise ScoringError("components must map names to tables of numbers") from None
        return cls(values, str(data["method"]), kv, components, dict(data.get("metadata", {})))

    def to_json(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | Path) -> HeadScores:
        data = read_json(path, ScoringError, "score file")
        try:
            return cls.from_dict(data)
        except ScoringError as err:
            raise ScoringError(f"{path}: {err}") from None

    # ------------------------------------------------------------------------------------ picture
    def plot(self, path: str | Path, title: str | None = None, mark_top: int = 0) -> None:
        """Heatmap (layers down, heads across) saved in the format its suffix names (.png, .pdf, .svg);
        `mark_top` outlines the top-k heads."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        L, H = self.values.shape
        fig = Figure(figsize=(max(4.0, 0.35 * H + 2), max(3.0, 0.25 * L + 1.5)), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        image = ax.imshow(self.values, aspect="auto", cmap="viridis", origin="upper")
        fig.colorbar(image, ax=ax, label="score")
        for layer, head in self.top_k(min(mark_top, self.values.size)):
            ax.add_patch(_rectangle(head, layer))
        ax.set_xlabel("query head")
        ax.set_ylabel("layer")
        ax.set_title(title or f"{self.method} head scores")
        fig.tight_layout()
        save_figure(fig, path)


def _rectangle(head: int, layer: int):
    from matplotlib.patches import Rectangle

    return Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5)


def _numbers_only(table: Any) -> bool:
    """Whether a nested list (or an array) holds only numbers (not strings, not booleans)."""
    if isinstance(table, np.ndarray):
        return table.dtype.kind in "iuf"
    if isinstance(table, (list, tuple)):
        return all(_numbers_only(x) for x in table)
    return isinstance(table, numbers.Real) and not isinstance(table, (bool, np.bool_))  # numpy scalars too
