"""Chunked gated delta rule in plain PyTorch (WY / UT representation), differentiable by autograd.

Same result as `naive.recurrent_gated_delta_rule`, but the sequence is cut into chunks of C tokens:
everything inside a chunk is a few batched matmuls and one triangular solve for all chunks at once,
and only the state hand-off between chunks is a Python loop (two `baddbmm` and one multiply per chunk).

For one chunk starting from state S0, with G_i = sum_{j<=i} g_j the log decay from the chunk start
to position i (inclusive), and Dec_ij = exp(G_i - G_j) for j <= i, 0 otherwise:

    (I + A) [u | w] = [beta * v | beta * exp(G) * k]      A = strict_lower(beta k k^T * Dec)   (UT transform)
    v_new = u - w S0                                       what each token writes, minus what S0 predicts
    o     = scale * (exp(G) q) S0 + (scale q k^T * Dec) v_new
    S1    = exp(G_C) S0 + (exp(G_C - G) k)^T v_new

Shapes (layout B, T, H, D):

    q, k            (B, T, H, Dk)
    v               (B, T, H, Dv)
    g, beta         (B, T, H)
    initial_state   (B, H, Dk, Dv)
    o               (B, T, H, Dv)      in v's dtype
    final_state     (B, H, Dk, Dv)     in the compute dtype (fp32, or fp64 for fp64 inputs)

Internally tensors are laid out chunk-first, (N, B*H, C, D) with N = ceil(T / C), so that the
per-chunk slices used by the sequential loop are contiguous 3-D batches for `bmm`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .naive import compute_dtype


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    scale: float | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule over chunks of `chunk_size` tokens (see the module docstring for shapes)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    batch, seq_len, heads, dk = k.shape
    dv = v.shape[-1]
    out_dtype, dtype = v.dtype, compute_dtype(v.dtype)
    scale = dk**-0.5 if scale is None else scale

    # A sequence shorter than one chunk is one chunk of its own length: no padding work for short prompts.
    chunk = min(chunk_size, seq_len)
    num_chunks = -(-seq_len // chunk)
    pad = num_chunks * chunk - seq_len

    def to_chunks(x: torch.Tensor) -> torch.Tensor:
        """(B, T, H, *D) -> (N, B*H, C, *D) in the compute dtype.

        Padding tokens have g = 0 (no decay), beta = 0 and k = v = 0, so they leave the state untouched
        and their outputs are dropped at the end.
        """
        x = x.to(dtype)
        if pad:
            x = F.pad(x, (0, 0) * (x.ndim - 2) + (0, pad))  # (B, N*C, H, *D)
        feature = x.shape[3:]
        x = x.reshape(batch, num_chunks, chunk, heads, *feature)  # (B, N, C, H, *D)
        x = x.movedim(3, 1)  # (B, H, N, C, *D)
        x = x.movedim(2, 0)  # (N, B, H, C, *D)
        return x.reshape(num_chunks, batch * heads, chunk, *feature)  # (N, B*H, C, *D)

    q, k, v, g, beta = (to_chunks(x) for x in (q, k, v, g, beta))
    q = q * scale

    # ---- Chunk-local quantities, all chunks at once --------------------------------------------------
    g_cum = g.cumsum(dim=-1)  # (N, BH, C): log decay from the chunk start to position i, inclusive
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()  # (C, C), j <= i
    # Mask before exp: G_i - G_j > 0 above the diagonal can overflow, and inf * 0 would poison gradients.
    pair_decay = (g_cum[..., :, None] - g_cum[..., None, :]).masked_fill(~causal, float("-inf")).exp()  # (N, BH, C, C)

    k_beta = k * beta[..., None]  # (N, BH, C, Dk)
    kk = (k_beta @ k.transpose(-1, -2)) * pair_decay  # (N, BH, C, C); only the strict lower part is read
    qk = (q @ k.transpose(-1, -2)) * pair_decay  # (N, BH, C, C); causal, diagonal included

    # One unitriangular solve for both right-hand sides: (I + A)^{-1} [beta v | beta exp(G) k].
    rhs = torch.cat([v * beta[..., None], k_beta * g_cum.exp()[..., None]], dim=-1)  # (N, BH, C, Dv + Dk)
    u, w = torch.linalg.solve_triangular(kk, rhs, upper=False, unitriangular=True).split([dv, dk], dim=-1)

    q_decayed = q * g_cum.exp()[..., None]  # (N, BH, C, Dk): reads S0 decayed up to each position
    k_decayed_t = (k * (g_cum[..., -1:] - g_cum).exp()[..., None]).transpose(-1, -2)  # (N, BH, Dk, C)
    chunk_decay = g_cum[..., -1].exp()[..., None, None]  # (N, BH, 1, 1): decay over the whole chunk

    # ---- Sequential hand-off of the state between chunks ---------------------------------------------
    if initial_state is None:
        state = q.new_zeros(batch * heads, dk, dv)  # (BH, Dk, Dv)
    else:
        state = initial_state.to(dtype).reshape(batch * heads, dk, dv)  # (BH, Dk, Dv)

    chunk_start_states: list[torch.Tensor] = []
    new_values: list[torch.Tensor] = []
    for n in range(num_chunks):
        chunk_start_states.append(state)
        v_new = torch.baddbmm(u[n], w[n], state, alpha=-1.0)  # (BH, C, Dv): u - w S0
        state = torch.baddbmm(state * chunk_decay[n], k_decayed_t[n], v_new)  # (BH, Dk, Dv)
        new_values.append(v_new)

    # ---- Outputs, all chunks at once -----------------------------------------------------------------
    o = q_decayed @ torch.stack(chunk_start_states) + qk @ torch.stack(new_values)  # (N, BH, C, Dv)
    o = o.reshape(num_chunks, batch, heads, chunk, dv)  # (N, B, H, C, Dv)
    o = o.permute(1, 0, 3, 2, 4).reshape(batch, num_chunks * chunk, heads, dv)  # (B, N*C, H, Dv)
    o = o[:, :seq_len].to(out_dtype)  # (B, T, H, Dv)

    final_state = state.reshape(batch, heads, dk, dv) if output_final_state else None  # (B, H, Dk, Dv)
    return o, final_state
