"""Reference gated delta rule: a plain loop over time, the spec every other mode is tested against.

Per batch b and head h, with state S in R^{Dk x Dv}:

    S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T
    o_t = scale * S_t^T q_t

where a_t = exp(g_t) (g_t <= 0 is a log decay) and b_t = beta_t in (0, 1).

Shapes (layout B, T, H, D):

    q, k            (B, T, H, Dk)
    v               (B, T, H, Dv)
    g, beta         (B, T, H)
    initial_state   (B, H, Dk, Dv)
    o               (B, T, H, Dv)      in v's dtype
    final_state     (B, H, Dk, Dv)     in the compute dtype (fp32, or fp64 for fp64 inputs)

With T == 1 and the previous state as `initial_state`, this is one decode step.
"""

from __future__ import annotations

import math

import torch

from hydrahead.errors import GatedDeltaRuleError


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the recurrence runs in: fp32 for half types and fp32, fp64 kept for fp64 (gradient tests). Plain
    Python, not `torch.promote_types`, which is an ATen op: one more dispatcher call wherever it is used."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def in_compute_dtype(x: torch.Tensor) -> torch.Tensor:
    """`x` in `compute_dtype`: itself (the same object) when it is fp32 or fp64, else an fp32 copy."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule, one token at a time (see the module docstring for shapes)."""
    batch, seq_len, heads, dk = k.shape
    dv = v.shape[-1]
    out_dtype, dtype = v.dtype, compute_dtype(v.dtype)
    scale = dk**-0.5 if scale is None else scale
    q, k, v, g, beta = (x.to(dtype) for x in (q, k, v, g, beta))

    if initial_state is None:
        state = q.new_zeros(batch, heads, dk, dv)  # (B, H, Dk, Dv)
    else:
        state = initial_state.to(dtype)

    # Broadcast-multiply and sum rather than einsum / matmul: at decode sizes this avoids bmm's
    # per-call threading overhead, which dominates a one-token step on CPU.
    outputs = []
    for t in range(seq_len):
        q_t, k_t, v_t = q[:, t, :, :, None], k[:, t, :, :, None], v[:, t]  # (B, H, Dk, 1), (B, H, Dk, 1), (B, H, Dv)
        # a (I - b k k^T) S + b k v^T  ==  S' + b k (v - S'^T k)^T  with S' = a S: decay first, then
        # write only the part of v that the decayed state does not already predict for k.
        state = state * g[:, t, :, None, None].exp()
        predicted = (state * k_t).sum(dim=-2)  # (B, H, Dv): S'^T k
        delta = beta[:, t, :, None] * (v_t - predicted)  # (B, H, Dv)
        state = state + k_t * delta[:, :, None, :]  # (B, H, Dk, Dv)
        outputs.append(scale * (state * q_t).sum(dim=-2))  # (B, H, Dv): S^T q

    o = torch.stack(outputs, dim=1)  # (B, T, H, Dv)
    return o.to(out_dtype), state if output_final_state else None


def gated_delta_rule_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    *,
    scale: float | None = None,
    check_values: bool = True,
) -> torch.Tensor:
    """One decode step (T == 1) that updates `state` (B, H, Dk, Dv) in place and returns o (B, 1, H, Dv).

    The same arithmetic as one iteration of `recurrent_gated_delta_rule`, arranged so that nothing of the
    state's size is allocated: decay in place, two batched matrix-vector products (S^T k, then S^T q)
    and one in-place rank-1 update. The state keeps its address, so a captured decode graph can reuse it.
    Not differentiable (the state is overwritten); for inference only. The inputs are checked as
    `gated_delta_rule` checks them; `check_values=False` skips g <= 0 and beta in [0, 1] (a device sync, skipped
    under torch.compile too), for a step to be captured in a graph. A model's own step, whose inputs hold all
    that by construction, calls `step_in_place`.
    """
    batch, _, heads, dk = k.shape
    if q.shape[1] != 1 or k.shape[1] != 1 or v.shape[1] != 1 or g.shape[1] != 1 or beta.shape[1] != 1:
        raise GatedDeltaRuleError(  # a longer input would silently use its first token only
            f"gated_delta_rule_step takes one token (B, 1, H, D); got q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}, g {tuple(g.shape)}, beta {tuple(beta.shape)}: use gated_delta_rule for more")
    if not v.is_floating_point():  # the output is cast to v's dtype: an integer v would truncate it
        raise GatedDeltaRuleError(f"v must be a floating-point tensor, got {v.dtype}")
    if v.shape[2] != heads:
        raise GatedDeltaRuleError(f"gated_delta_rule_step takes one value head per q/k head; v has {v.shape[2]}, k "
                                  f"{heads}: repeat q and k per value head, or use gated_delta_rule")
    # checked before the state is touched: a q of another width failed in a GEMM after the state had decayed,
    # a g without its head axis was one gate for every head
    for name, x, shape in (("q", q, (batch, 1, heads, dk)), ("g", g, (batch, 1, heads)),
                           ("beta", beta, (batch, 1, heads))):
        if tuple(x.shape) != shape:
            raise GatedDeltaRuleError(f"{name} has shape {tuple(x.shape)} but k {tuple(k.shape)} implies {shape}")
    if tuple(state.shape) != (batch, heads, dk, v.shape[-1]):  # a (B, H, Dv, Dk) state has as many elements
        raise GatedDeltaRuleError(f"state has shape {tuple(state.shape)} but k {tuple(k.shape)} and v "
                                  f"{tuple(v.shape)} imply (B, H, Dk, Dv) = {(batch, heads, dk, v.shape[-1])}")
    if check_values and not torch.compiler.is_compiling():
        check_gates(g, beta)
    return step_in_place(q, k, v, g, beta, state, scale=scale)


def step_in_place(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                  state: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """`gated_delta_rule_step`'s arithmetic without its checks: for a model's decode step, whose inputs have the
    layout and the gate ranges by construction (a check is host work on every layer of every step)."""
    batch, _, heads, dk = k.shape
    dv = v.shape[-1]
    dtype = state.dtype
    scale = dk**-0.5 if scale is None else scale
    q_t, k_t, v_t = (x[:, 0].to(dtype).reshape(batch * heads, 1, -1) for x in (q, k, v))  # (BH, 1, D)
    flat = state.view(batch * heads, dk, dv)  # (BH, Dk, Dv), shares storage with state
    flat.mul_(g[:, 0].to(dtype).exp().reshape(-1, 1, 1))  # S' = a S
    delta = torch.baddbmm(v_t, k_t, flat, alpha=-1).mul_(beta[:, 0].to(dtype).reshape(-1, 1, 1))  # b (v - S'^T k)
    flat.baddbmm_(k_t.transpose(1, 2), delta)  # S = S' + k delta^T
    o = torch.baddbmm(delta, q_t, flat, beta=0, alpha=scale)  # (BH, 1, Dv): scale S^T q (delta only a shape)
    return o.view(batch, 1, heads, dv).to(v.dtype)


def check_gates(g: torch.Tensor, beta: torch.Tensor) -> None:
    """g <= 0 and 0 <= beta <= 1, in one device sync; the error says which, and names a swap."""
    stats = torch.stack([g.detach().float().max(), beta.detach().float().min(), beta.detach().float().max()])
    g_max, beta_min, beta_max = stats.tolist()
    if math.isnan(g_max):  # max propagates NaN
        raise GatedDeltaRuleError("g holds NaN; it must be a log decay (<= 0)")
    if g_max > 0:
        swapped = beta_max <= 0 and 0 <= g_max <= 1
        raise GatedDeltaRuleError(
            f"g must be a log decay (<= 0), got values up to {g_max:.4g}"
            + ("; g and beta look swapped (fla's naive reference takes beta before g; pass g=..., beta=...)"
               if swapped else "; pass the log of the decay, e.g. -softplus(...) or logsigmoid(...)"))
    if not (0 <= beta_min and beta_max <= 1):
        raise GatedDeltaRuleError(f"beta must be in [0, 1], got values in [{beta_min:.4g}, {beta_max:.4g}]")
