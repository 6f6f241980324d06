"""`HybridOptions`: how the two branches of a hybrid layer are built (docs/method.md section 2).

A plain, serialisable dataclass. Two presets:
  "paper": the paper's defaults: NoPE + log-length query scale + output gate on FA heads, RoPE on
           GDN heads, short conv 4, scale-normalised fusion.
  "exact": FA heads compute exactly what the teacher computed (RoPE kept, no scale, no gate, no
           fusion norm), so a plan with every head FA reproduces the teacher's logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from hydrahead.errors import OptionsError

FA_ROPE = ("keep", "none")
FUSIONS = ("scale_norm", "none")


@dataclass(frozen=True)
class HybridOptions:
    fa_rope: str = "keep"
    """RoPE on FA heads: "keep" (as the teacher) or "none" (NoPE, the paper's choice)."""
    fa_log_scale: bool = False
    """Scale FA queries by max(1, log(t+1) / log(train_length)) at position t (length extrapolation)."""
    train_length: int | None = None
    """Sequence length the hybrid is trained at; needed by `fa_log_scale`."""
    fa_gate: bool = False
    """Elementwise output gate sigmoid(x W_g + b) on FA heads (W_g = 0, b = 1 at init)."""
    gdn_rope: bool = True
    """RoPE on the q, k of GDN heads."""
    conv_size: int = 4
    """Depthwise causal short-conv kernel on GDN q, k, v (0 = off); starts as identity."""
    gdn_shared_kv: bool = False
    """GDN heads of one GQA group share that group's k/v projection, as the teacher's heads did (fewer
    parameters and projection FLOPs); False: every GDN head gets its own copy of its group's k/v rows."""
    fusion: str = "none"
    """"scale_norm": per-branch RMSNorm then a learnable gain per head (paper Eq. 13-14); "none": plain concat."""

    def __post_init__(self) -> None:
        if self.fa_rope not in FA_ROPE:
            raise OptionsError(f"fa_rope must be one of {FA_ROPE}, got {self.fa_rope!r}")
        if self.fusion not in FUSIONS:
            raise OptionsError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.conv_size < 0 or self.conv_size == 1:
            raise OptionsError(f"conv_size must be 0 (off) or >= 2, got {self.conv_size}")
        if self.fa_log_scale and (self.train_length is None or self.train_length < 2):
            raise OptionsError(
                "fa_log_scale=True needs train_length >= 2 (the length the log scale is normalised by); "
                f"got train_length={self.train_length}"
            )
        if self.train_length is not None and self.train_length < 2:
            raise OptionsError(f"train_length must be >= 2, got {self.train_length}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> HybridOptions:
        """`"paper"` (the paper's choices, docs/method.md section 2.1; train_length 4096 unless given) or
        `"exact"`; keywords override fields."""
        if name == "paper":
            base = cls(fa_rope="none", fa_log_scale=True, train_length=4096, fa_gate=True, fusion="scale_norm")
        elif name == "exact":
            base = cls()
        else:
            raise OptionsError(f"unknown preset {name!r}; choose 'paper' or 'exact'")
        try:
            return replace(base, **overrides)
        except TypeError as err:
            raise OptionsError(f"unknown option in {sorted(overrides)}; options are {cls.field_names()}") from err

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HybridOptions:
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise OptionsError(f"unknown hybrid option(s) {unknown}; options are {cls.field_names()}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
