"""Gated delta rule (Gated DeltaNet), dispatched to one of three implementations.

Per batch b and head h, with state S in R^{Dk x Dv}, a_t = exp(g_t) (g_t <= 0) and b_t = beta_t in (0, 1):

    S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T,      o_t = scale * S_t^T q_t

This is what fla's `chunk_gated_delta_rule` / `fused_recurrent_gated_delta_rule` compute.

The call follows fla's `chunk_gated_delta_rule`: `gated_delta_rule(q, k, v, g, beta, *, scale=None,
initial_state=None, output_final_state=False, use_qk_l2norm_in_kernel=False, cu_seqlens=None)`, with
everything after beta keyword-only (fla's own positional order has changed between releases).

Shapes (layout B, T, H, D; HV value heads, a multiple of the H query/key heads):

    q, k            (B, T, H, Dk)      used as given, unless use_qk_l2norm_in_kernel (then L2-normalised here)
    v               (B, T, HV, Dv)     HV = H, or grouped values: value head j reads q/k head j // (HV / H)
    g               (B, T, HV)         log decay, <= 0
    beta            (B, T, HV)         in [0, 1]
    initial_state   (N, HV, Dk, Dv)    fp32, optional (zeros when None); N = B, or the number of sequences
    o               (B, T, HV, Dv)     in v's dtype
    final_state     (N, HV, Dk, Dv)    fp32 (fp64 for fp64 inputs), or None unless output_final_state
    cu_seqlens      (N + 1,)           packed variable-length sequences in a batch of one: sequence i is
                                       tokens cu_seqlens[i]:cu_seqlens[i+1], its state starts afresh (or
                                       from initial_state[i]) and ends in final_state[i]

Cheap checks refuse the silent misuses: a positive g (a log decay is <= 0; fla's naive reference takes
beta before g, so swapped arguments are named as such), beta outside [0, 1], head-first (B, H, T, D)
inputs (fewer tokens than heads; pass head_first=False when that is really the shape).

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
from .naive import check_gates, compute_dtype, gated_delta_rule_step, in_compute_dtype, recurrent_gated_delta_rule

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
    "l2_length",
    "l2norm",
    "recurrent_gated_delta_rule",
]


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    head_first: bool | None = None,
    mode: Mode = "auto",
    check_values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the gated delta rule; returns (o, final_state). See the module docstring for shapes and modes.

    `scale` defaults to Dk ** -0.5. Computation is in fp32 (fp64 inputs stay fp64); `o` is cast back to
    v's dtype. `head_first=False` accepts inputs with fewer tokens than heads as (B, T, H, D) (True is
    refused: transpose first). `check_values=False` skips the value checks of g and beta (one reduction
    each; a device sync on CUDA), for callers whose g and beta are right by construction. Raises
    GatedDeltaRuleError naming the argument on bad input, FlaNotInstalledError for mode="fla" without fla.
    """
    _check_inputs(q, k, v, g, beta, initial_state, mode, cu_seqlens, head_first)
    if check_values and not torch.compiler.is_compiling():
        check_gates(g, beta)
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if mode == "auto":
        mode = _auto_mode(q)
    q, k = _expand_groups(q, k, v)
    if mode == "fla":  # fla's kernels take cu_seqlens themselves
        return fla_gated_delta_rule(q, k, v, g, beta, initial_state=initial_state,
                                    output_final_state=output_final_state, scale=scale, cu_seqlens=cu_seqlens)
    implementation = recurrent_gated_delta_rule if mode == "recurrent" else chunk_gated_delta_rule
    if cu_seqlens is None:
        return implementation(q, k, v, g, beta, initial_state=initial_state,
                              output_final_state=output_final_state, scale=scale)
    if mode == "chunk" and initial_state is None and not output_final_state:  # all sequences in one pass
        starts = cu_seqlens[:-1].to(q.device)
        resets = torch.zeros(q.shape[:2], dtype=torch.bool, device=q.device)
        resets[:, starts[starts < q.shape[1]]] = True  # empty sequences at the end start nothing
        return chunk_gated_delta_rule(q, k, v, g, beta, scale=scale, resets=resets)
    outputs, states = [], []  # a state per sequence, in or out: one call per sequence
    bounds = cu_seqlens.tolist()
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0 = initial_state[i : i + 1] if initial_state is not None else None
        if end == start:  # an empty sequence: its state passes through
            states.append(h0 if h0 is not None else q.new_zeros(1, v.shape[2], q.shape[-1], v.shape[-1],
                                                                  dtype=compute_dtype(v.dtype)))
            continue
        o, state = implementation(*(x[:, start:end] for x in (q, k, v, g, beta)), initial_state=h0,
                                  output_final_state=output_final_state, scale=scale)
        outputs.append(o)
        states.append(state)
    o = torch.cat(outputs, dim=1)
    return o, torch.cat(states, dim=0) if output_final_state else None


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim, in fp32 or fp64 for fp64 input (fla's `l2norm`, up to rounding):
    the norm by one reduction and sqrt(norm^2 + eps) by one `hypot`, three kernels and no temporary of x's size."""
    if not x.is_floating_point():  # the result cast back to integers: every entry 0
        raise GatedDeltaRuleError(f"l2norm takes a floating-point tensor, got {x.dtype}")
    x32 = in_compute_dtype(x)
    return (x32 / l2_length(x32, eps)).to(x.dtype)


def l2_length(x: torch.Tensor, eps: float) -> torch.Tensor:
    """sqrt(sum(x^2) + eps) over the last dim, keepdim: one norm reduction and one `hypot`."""
    return torch.hypot(torch.linalg.vector_norm(x, dim=-1, keepdim=True), scalar_constant(eps**0.5, x))


_SCALARS: dict[tuple[float, torch.device, torch.dtype], torch.Tensor] = {}


def scalar_constant(value: float, like: torch.Tensor) -> torch.Tensor:
    """A 0-dim tensor of `value` on `like`'s device and dtype, made once (not in every call); inside a compiled
    region a fresh one (a cached tensor made there would be a graph's output)."""
    if torch.compiler.is_compiling():
        return torch.full((), value, device=like.device, dtype=like.dtype)
    key = (value, like.device, like.dtype)
    if key not in _SCALARS:
        _SCALARS[key] = torch.full((), value, device=like.device, dtype=like.dtype)
    return _SCALARS[key]


def _expand_groups(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k repeated per value head (grouped values: value head j reads q/k head j // (HV / H))."""
    groups = v.shape[2] // q.shape[2]
    if groups == 1:
        return q, k
    return q.repeat_interleave(groups, dim=2), k.repeat_interleave(groups, dim=2)


def _auto_mode(q: torch.Tensor) -> Mode:
    """fla where its kernels apply (CUDA, half precision, installed); otherwise the PyTorch paths."""
    if q.is_cuda and q.dtype in FLA_DTYPES and fla_is_available():
        return "fla"
    return "recurrent" if q.shape[1] == 1 else "chunk"


_LAYOUT = ("layout: q, k (B, T, H, Dk); v (B, T, HV, Dv); g, beta (B, T, HV); initial_state (N, HV, Dk, Dv); "
           "HV a multiple of H")


def _check_inputs(q, k, v, g, beta, initial_state, mode, cu_seqlens, head_first) -> None:
    """Raise GatedDeltaRuleError naming the first argument that does not fit the (B, T, H, D) layout."""
    if mode not in MODES:
        raise GatedDeltaRuleError(f"mode: unknown gated delta rule mode {mode!r}; expected one of {', '.join(MODES)}")
    for name, x in (("q", q), ("k", k), ("v", v), ("g", g), ("beta", beta)):
        if not isinstance(x, torch.Tensor):
            raise GatedDeltaRuleError(f"{name} must be a tensor, got {type(x).__name__} (arguments after beta are "
                                      "keyword-only: scale=, initial_state=, output_final_state=)")
    for name, x in (("q", q), ("k", k), ("v", v), ("g", g), ("beta", beta)):
        if not x.is_floating_point():  # the output is cast to v's dtype: an integer v would truncate it
            raise GatedDeltaRuleError(f"{name} must be a floating-point tensor, got {x.dtype}")
    for name, x, layout in (("q", q, "(B, T, H, Dk)"), ("k", k, "(B, T, H, Dk)"), ("v", v, "(B, T, HV, Dv)")):
        if x.ndim != 4:
            raise GatedDeltaRuleError(f"{name} must have shape {layout}, got {x.ndim} dims {tuple(x.shape)}")
    for name, x in (("g", g), ("beta", beta)):
        if x.ndim != 3:
            raise GatedDeltaRuleError(f"{name} must have shape (B, T, HV), got {x.ndim} dims {tuple(x.shape)}")
    batch, seq_len, heads, dk = q.shape
    value_heads, dv = v.shape[2], v.shape[3]
    if 0 in (batch, heads, dk, value_heads, dv):  # T = 0 is named below
        raise GatedDeltaRuleError(f"q {tuple(q.shape)} and v {tuple(v.shape)} have a size of 0 ({_LAYOUT})")
    if head_first:
        raise GatedDeltaRuleError("head_first=True: the (B, H, T, D) layout is not supported; transpose q, k, v "
                                  "to (B, T, H, D) and g, beta to (B, T, H)")
    if head_first is None and 1 < seq_len < heads:
        raise GatedDeltaRuleError(
            f"q has shape {tuple(q.shape)}: {seq_len} tokens but {heads} heads looks like head-first (B, H, T, D) "
            "input; transpose to (B, T, H, D), or pass head_first=False if the shape is right")
    if value_heads % heads:
        raise GatedDeltaRuleError(f"v has {value_heads} heads, not a multiple of q's {heads} ({_LAYOUT})")
    if cu_seqlens is not None:  # its length counts the sequences below (a number or a 0-d tensor had none)
        _check_cu_seqlens(cu_seqlens, batch, seq_len)
    if initial_state is not None and not isinstance(initial_state, torch.Tensor):
        raise GatedDeltaRuleError(f"initial_state must be a tensor (N, HV, Dk, Dv) or None, got "
                                  f"{type(initial_state).__name__}")
    sequences = batch if cu_seqlens is None else len(cu_seqlens) - 1
    expected = {
        "k": (batch, seq_len, heads, dk),
        "v": (batch, seq_len, value_heads, dv),
        "g": (batch, seq_len, value_heads),
        "beta": (batch, seq_len, value_heads),
    }
    if initial_state is not None:
        expected["initial_state"] = (sequences, value_heads, dk, dv)
    given = {"k": k, "v": v, "g": g, "beta": beta, "initial_state": initial_state}
    for name, shape in expected.items():
        actual = tuple(given[name].shape)  # type: ignore[union-attr]
        if actual != shape:
            raise GatedDeltaRuleError(
                f"{name} has shape {actual} but q {tuple(q.shape)} and v {tuple(v.shape)} imply {shape} ({_LAYOUT})")
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


def _check_cu_seqlens(cu_seqlens, batch: int, seq_len: int) -> None:
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.ndim != 1 or cu_seqlens.is_floating_point():
        raise GatedDeltaRuleError("cu_seqlens must be a 1-D integer tensor of sequence boundaries [0, ..., T]")
    if batch != 1:
        raise GatedDeltaRuleError(f"cu_seqlens packs sequences into a batch of one; q has batch {batch} "
                                  "(flatten to (1, total tokens, H, D))")
    bounds = cu_seqlens.tolist()
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != seq_len or any(b < a for a, b in zip(bounds, bounds[1:])):
        raise GatedDeltaRuleError(f"cu_seqlens must rise from 0 to T = {seq_len}, got {bounds[:8]}"
                                  f"{' ...' if len(bounds) > 8 else ''}")
