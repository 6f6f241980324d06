"""`HybridOptions`: how the two branches of a hybrid layer are built (docs/method.md section 2).

A plain, serialisable dataclass. Two presets:
  "paper": the paper's defaults: NoPE + log-length query scale + output gate on FA heads, RoPE on
           GDN heads, short conv 4, scale-normalised fusion; and GDN heads starting from the teacher
           heads' mean output (ours).
  "exact": FA heads compute exactly what the teacher computed (RoPE kept, no scale, no gate, no
           fusion norm), so a plan with every head FA reproduces the teacher's logits; GDN heads start
           from the teacher heads' mean output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from hydrahead.errors import OptionsError, shown
from hydrahead.utils.units import parse_length

FA_ROPE = ("keep", "none")
FUSIONS = ("scale_norm", "none")


@dataclass(frozen=True)
class HybridOptions:
    fa_rope: str = "keep"
    """RoPE on FA heads: "keep" (as the teacher) or "none" (NoPE, the paper's choice)."""
    fa_log_scale: bool = False
    """Scale FA queries by max(1, log(t+1) / log(train_length)) at position t (length extrapolation)."""
    train_length: int | None = None
    """Sequence length the hybrid is trained at; needed by `fa_log_scale`. A length string ("16k" = 16384,
    utils/units.py) is read as that many tokens."""
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
    gdn_mean_output: bool = False
    """GDN heads start from the teacher heads' mean output (ours): a layer with GDN heads gets an o_proj bias,
    W_o[:, GDN heads] times each head's mean output on the calibration batch, trained from the first stage;
    with scale_norm fusion the GDN gains then start at the heads' RMS around that mean. A GDN head cannot
    return the constant a head attending to the first token (the attention sink) writes; without it a real
    model's residual stream leaves its range at conversion (docs/real_models.md section 7). False in
    checkpoints converted before it existed (they have no such bias), and what a distillation run started
    before it needs to resume (`gdn_mean_output: false` in its recipe's `hybrid:`); on in both presets."""

    def __post_init__(self) -> None:
        # Types are checked, not coerced: the string "False" is truthy and would build the feature it names.
        # The one conversion: train_length takes a length with a suffix ("16k" = 16384), as every length does.
        _choice("fa_rope", self.fa_rope, FA_ROPE)
        _choice("fusion", self.fusion, FUSIONS)
        for name in ("fa_log_scale", "fa_gate", "gdn_rope", "gdn_shared_kv", "gdn_mean_output"):
            if not isinstance(getattr(self, name), bool):
                raise OptionsError(f"{name} must be true or false, got {shown(getattr(self, name))}")
        conv = self.conv_size
        if isinstance(conv, bool) or not isinstance(conv, int) or conv < 0 or conv == 1:
            raise OptionsError(f"conv_size must be an integer, 0 (off) or >= 2, got {shown(self.conv_size)}")
        if self.train_length is not None:
            try:
                length = parse_length(self.train_length)
            except ValueError as err:
                raise OptionsError(f"train_length: {err} (or null for none)") from err
            if length < 2:
                raise OptionsError(f"train_length must be >= 2, got {length}")
            object.__setattr__(self, "train_length", length)  # frozen: set once, here
        if self.fa_log_scale and self.train_length is None:
            raise OptionsError(
                "fa_log_scale=True needs train_length >= 2 (the length the log scale is normalised by); "
                f"got train_length={self.train_length}"
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> HybridOptions:
        """`"paper"` (the paper's choices, docs/method.md section 2.1; train_length 4096 unless given) or
        `"exact"`; keywords override fields."""
        if name == "paper":
            base = cls(fa_rope="none", fa_log_scale=True, train_length=4096, fa_gate=True, fusion="scale_norm",
                       gdn_mean_output=True)
        elif name == "exact":
            base = cls(gdn_mean_output=True)
        else:
            raise OptionsError(f"unknown preset {name!r}; choose 'paper' or 'exact'")
        cls._check_names(overrides)
        return replace(base, **overrides)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HybridOptions:
        cls._check_names(data)
        return cls(**data)

    @classmethod
    def _check_names(cls, data: dict[str, Any]) -> None:
        if not isinstance(data, dict):
            raise OptionsError(f"hybrid options must be a mapping of option to value, got {shown(data)}")
        unknown = sorted(set(data) - set(cls.field_names()), key=str)
        if unknown:
            raise OptionsError(f"unknown hybrid option(s) {unknown}; options are {cls.field_names()}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise OptionsError(f"{name} must be one of {choices}, got {shown(value)}")
