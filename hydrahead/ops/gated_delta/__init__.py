"""Gated delta rule (Gated DeltaNet), dispatched to one of three implementations.

Per batch b and head h, with state S in R^{Dk x Dv}, a_t = exp(g_t) (g_t <= 0) and b_t = beta_t in (0, 1):

    S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T,      o_t = scale * S_t^T q_t

This is what fla's `chunk_gated_delta_rule` / `fused_recurrent_gated_delta_rule` compute.

Shapes (layout B, T, H, D):

    q, k            (B, T, H, Dk)      used as given: the caller L2-normalises them
    v               (B, T, H, Dv)
    g               (B, T, H)          log decay, <= 0
    beta            (B, T, H)          in (0, 1)
    initial_state   (B, H, Dk, Dv)     fp32, optional (zeros when None)
    o               (B, T, H, Dv)      in v's dtype
    final_state     (B, H, Dk, Dv)     fp32 (fp64 for fp64 inputs), or None unless output_final_state

Modes:

    "recurrent"  `naive.recurrent_gated_delta_rule`: fp32 loop over time; the spec, and one decode step.
    "chunk"      `chunk.chunk_gated_delta_rule`: chunked PyTorch, autograd forward and backward (CPU, prefill).
    "fla"        `fla.fla_gated_delta_rule`: fla's Triton kernels, CUDA only, bf16/fp16 inputs.
    "auto"       fla on CUDA when it applies and is installed; else recurrent for T == 1, chunk otherwise.

`gated_delta_rule_step` is the decode step of inference: one token, the state updated in place.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from hydrahead.errors import FlaNotInstalledError, GatedDeltaRuleError

from .chunk import chunk_gated_delta_rule
from .fla import FLA_DTYPES, fla_gated_delta_rule, fla_is_available
from .naive import gated_delta_rule_step, recurrent_gated_delta_rule

Mode = Literal["auto", "recurrent", "chunk", "fla"]
MODES: tuple[str, ...] = get_args(Mode)

__all__ = [
    "MODES",
    "FlaNotInstalledError",
    "GatedDeltaRuleError",
    "Mode",
    "chunk_gated_delta_rule",
    "fla_gated_delta_rule",
    "gated_delta_rule",
    "gated_delta_rule_step",
    "recurrent_gated_delta_rule",
]


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    mode: Mode = "auto",
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the gated delta rule; returns (o, final_state). See the module docstring for shapes and modes.

    `scale` defaults to Dk ** -0.5. Computation is in fp32 (fp64 inputs stay fp64); `o` is cast back to
    v's dtype. Raises GatedDeltaRuleError on bad input, FlaNotInstalledError for mode="fla" without fla.
    """
    _check_inputs(q, k, v, g, beta, initial_state, mode)
    if mode == "auto":
        mode = _auto_mode(q)

    implementation = {
        "recurrent": recurrent_gated_delta_rule,
        "chunk": chunk_gated_delta_rule,
        "fla": fla_gated_delta_rule,
    }[mode]
    return implementation(
        q, k, v, g, beta, initial_state=initial_state, output_final_state=output_final_state, scale=scale
    )


def _auto_mode(q: torch.Tensor) -> Mode:
    """fla where its kernels apply (CUDA, half precision, installed); otherwise the PyTorch paths."""
    if q.is_cuda and q.dtype in FLA_DTYPES and fla_is_available():
        return "fla"
    return "recurrent" if q.shape[1] == 1 else "chunk"


def _check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None,
    mode: str,
) -> None:
    """Raise GatedDeltaRuleError naming the first argument that does not fit the (B, T, H, D) layout."""
    if mode not in MODES:
        raise GatedDeltaRuleError(f"unknown gated delta rule mode {mode!r}; expected one of {', '.join(MODES)}")
    for name, x, layout in (("q", q, "(B, T, H, Dk)"), ("k", k, "(B, T, H, Dk)"), ("v", v, "(B, T, H, Dv)")):
        if x.ndim != 4:
            raise GatedDeltaRuleError(f"{name} must have shape {layout}, got {x.ndim} dims {tuple(x.shape)}")
    for name, x in (("g", g), ("beta", beta)):
        if x.ndim != 3:
            raise GatedDeltaRuleError(f"{name} must have shape (B, T, H), got {x.ndim} dims {tuple(x.shape)}")

    batch, seq_len, heads, dk = q.shape
    dv = v.shape[-1]
    expected = {
        "k": (batch, seq_len, heads, dk),
        "v": (batch, seq_len, heads, dv),
        "g": (batch, seq_len, heads),
        "beta": (batch, seq_len, heads),
    }
    if initial_state is not None:
        expected["initial_state"] = (batch, heads, dk, dv)
    given = {"k": k, "v": v, "g": g, "beta": beta, "initial_state": initial_state}
    for name, shape in expected.items():
        actual = tuple(given[name].shape)  # type: ignore[union-attr]
        if actual != shape:
            raise GatedDeltaRuleError(
                f"{name} has shape {actual} but q {tuple(q.shape)} and v {tuple(v.shape)} imply {shape} "
                "(layout: q, k (B, T, H, Dk); v (B, T, H, Dv); g, beta (B, T, H); initial_state (B, H, Dk, Dv))"
            )
    if seq_len == 0:
        raise GatedDeltaRuleError(f"the sequence is empty (T = 0) in q of shape {tuple(q.shape)}")

    if mode == "fla":
        if not q.is_cuda:
            raise GatedDeltaRuleError(
                f"mode='fla' runs fla's Triton kernels on CUDA tensors, got q on {q.device}; "
                "use mode='chunk' or mode='auto' on CPU"
            )
        if q.dtype not in FLA_DTYPES:
            raise GatedDeltaRuleError(
                f"mode='fla' needs bf16 or fp16 q, k, v (fla's chunk kernel rejects fp32), got {q.dtype}; "
                "cast the inputs or use mode='chunk'"
            )
