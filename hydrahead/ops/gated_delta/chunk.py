"""Chunked gated delta rule in plain PyTorch (WY / UT representation), differentiable by autograd.

Same result as `naive.recurrent_gated_delta_rule`, but the sequence is cut into N chunks of C tokens.
Everything inside a chunk is batched over all chunks at once (a few matmuls and one unitriangular
solve); only the hand-off of the state from one chunk to the next is a Python loop, of three
`baddbmm` and one multiply per chunk.

For one chunk starting from state S0, with G_i = sum_{j<=i} g_j the log decay from the chunk start
to position i (inclusive), Dec_ij = exp(G_i - G_j) for j <= i and 0 otherwise, and q already scaled:

    A     = strict_lower((beta k) k^T * Dec)                (C, C)    the UT transform system
    u     = (I + A)^{-1} (beta v)                           (C, Dv)   what each token writes ...
    w     = (I + A)^{-1} (beta exp(G) k)                    (C, Dk)   ... and how it reads S0
    v_new = u - w S0                                        (C, Dv)   writes minus what S0 predicts
    o     = exp(G) q S0 + (q k^T * Dec) v_new
          = (exp(G) q - (q k^T * Dec) w) S0 + (q k^T * Dec) u    -> q_eff S0 + o_intra
    S1    = exp(G_C) S0 + (exp(G_C - G) k)^T v_new          (Dk, Dv)

q_eff and o_intra do not depend on S0, so they are computed for all chunks before the loop, and the
loop only does o = o_intra + q_eff S0, v_new = u - w S0 and the state update.

Shapes (layout B, T, H, D):

    q, k            (B, T, H, Dk)
    v               (B, T, H, Dv)
    g, beta         (B, T, H)
    initial_state   (B, H, Dk, Dv)
    o               (B, T, H, Dv)      in v's dtype
    final_state     (B, H, Dk, Dv)     in the compute dtype (fp32, or fp64 for fp64 inputs)

Packed sequences (`resets`, 1 where a sequence starts: the state before that token counts as zero) run in the
same batched pass: a chunk's positions are grouped by the number of starts up to them (r_i), and the decays
that would carry anything across a start are zeroed, Dec_ij where r_i != r_j, exp(G_i) where r_i > 0 (S0 is
read only before the chunk's first start), exp(G_C - G_j) where r_j != r_C and exp(G_C) where r_C > 0. That is
the recurrence with a_t = 0 at every start, without a -inf in the cumulative sums.

Internally tensors are laid out chunk-first, (N, B*H, C, D), so that the per-chunk slices the loop
reads are contiguous 3-D batches for `baddbmm`.
"""

from __future__ import annotations

import math

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
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule over chunks of `chunk_size` tokens (see the module docstring for shapes). `resets`
    (B, T), true where a packed sequence starts: the state before that token counts as zero."""
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
    floor = decay_floor(dtype)
    # A log decay below the floor (-inf, a decay of exactly 0, included) is the floor: every span holding it is
    # below the floor either way (a decay of 0, no gradient), and the spans that do not hold it are differences
    # of prefix sums, which a huge term (-1e7) would leave with no precision (-inf: with NaN).
    g = g.clamp(min=floor)
    g_cum = g.cumsum(dim=-1)  # (N, BH, C): log decay from the chunk start to position i, inclusive
    to_end = g_cum[..., -1:] - g_cum  # (N, BH, C)
    over_chunk = g_cum[..., -1]  # (N, BH)
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()  # (C, C), j <= i
    # Masked before exp: G_i - G_j > 0 above the diagonal can overflow, and inf * 0 would poison gradients.
    pair_decay = (g_cum[..., :, None] - g_cum[..., None, :]).masked_fill(~causal, float("-inf"))
    if resets is not None:  # packed sequences: nothing decays across a start (module docstring)
        starts = to_chunks(resets[..., None].expand(batch, seq_len, heads)).cumsum(dim=-1)  # (N, BH, C): r_i
        g_cum = g_cum.masked_fill(starts > 0, float("-inf"))
        to_end = to_end.masked_fill(starts != starts[..., -1:], float("-inf"))
        over_chunk = over_chunk.masked_fill(starts[..., -1] > 0, float("-inf"))
        pair_decay = pair_decay.masked_fill(starts[..., :, None] != starts[..., None, :], float("-inf"))
    decay_from_start = decay(g_cum, floor)[..., None]  # (N, BH, C, 1)
    decay_to_end = decay(to_end, floor)[..., None]  # (N, BH, C, 1)
    chunk_decay = decay(over_chunk, floor)[..., None, None]  # (N, BH, 1, 1): decay over the whole chunk
    pair_decay = decay(pair_decay, floor)  # (N, BH, C, C): Dec in the module docstring

    k_beta = k * beta[..., None]  # (N, BH, C, Dk)
    kk = (k_beta @ k.transpose(-1, -2)) * pair_decay  # (N, BH, C, C): A, only its strict lower part is read
    qk = (q @ k.transpose(-1, -2)) * pair_decay  # (N, BH, C, C); causal, diagonal included

    # (I + A)^{-1} by one unitriangular solve against the identity (C right-hand sides), then plain
    # matmuls: on CPU this is several times faster than solving against Dk + Dv right-hand sides.
    eye = torch.eye(chunk, dtype=dtype, device=q.device).expand_as(kk)
    ut_inverse = flush_tiny(torch.linalg.solve_triangular(kk, eye, upper=False, unitriangular=True))  # (N, BH, C, C)
    u = ut_inverse @ (v * beta[..., None])  # (N, BH, C, Dv)
    w = flush_tiny(ut_inverse @ (k_beta * decay_from_start))  # (N, BH, C, Dk)
    o_intra = qk @ u  # (N, BH, C, Dv)
    q_eff = q * decay_from_start - qk @ w  # (N, BH, C, Dk)
    k_decayed_t = (k * decay_to_end).transpose(-1, -2)  # (N, BH, Dk, C)

    # ---- Sequential hand-off of the state between chunks ---------------------------------------------
    if initial_state is None:
        state = q.new_zeros(batch * heads, dk, dv)  # (BH, Dk, Dv)
    else:
        state = initial_state.to(dtype).reshape(batch * heads, dk, dv)  # (BH, Dk, Dv)

    # unbind, not indexing: the backward of x[n] scatters into a zero tensor of x's full size, once per
    # chunk (quadratic in N); unbind's backward is a single stack.
    outputs: list[torch.Tensor] = []
    per_chunk = (x.unbind(0) for x in (o_intra, q_eff, u, w, chunk_decay, k_decayed_t))
    for o_intra_n, q_eff_n, u_n, w_n, decay_n, k_decayed_t_n in zip(*per_chunk):
        outputs.append(torch.baddbmm(o_intra_n, q_eff_n, state))  # (BH, C, Dv)
        v_new = torch.baddbmm(u_n, w_n, state, alpha=-1.0)  # (BH, C, Dv): u - w S0
        state = torch.baddbmm(state * decay_n, k_decayed_t_n, v_new)  # (BH, Dk, Dv)

    # ---- Back to (B, T, H, Dv) -------------------------------------------------------------------------
    o = torch.stack(outputs)  # (N, BH, C, Dv)
    o = o.reshape(num_chunks, batch, heads, chunk, dv)  # (N, B, H, C, Dv)
    o = o.permute(1, 0, 3, 2, 4).reshape(batch, num_chunks * chunk, heads, dv)  # (B, N*C, H, Dv)
    o = o[:, :seq_len].to(out_dtype, memory_format=torch.contiguous_format)  # (B, T, H, Dv)

    final_state = state.reshape(batch, heads, dk, dv) if output_final_state else None  # (B, H, Dk, Dv)
    return o, final_state


# ---- No subnormal numbers -------------------------------------------------------------------------------
# A fast-decaying head's decay over one chunk is tiny (the paper preset's fastest head at conversion: exp(-102) over
# 64 tokens), and products of such factors inside the UT transform reach fp32's subnormal range (below 1.2e-38).
# Intel CPUs multiply subnormal numbers in microcode, many times slower: on an Intel Xeon this op took about twice as
# long, forward and backward, as with the two measures below (docs/benchmarks.md, "Subnormal numbers"). Both drop
# only terms far below the dtype's precision next to the terms of the same sum they are weighed against (a factor of
# at most 3.3e-10 on an old state or token, against factors up to 1 on the chunk's own tokens), and no GEMM operand
# of the forward is subnormal (tests/ops/test_gated_delta.py). The backward still meets a few: autograd's backward
# of the triangular solve reads the solve's output before `flush_tiny`.


def decay_floor(dtype: torch.dtype) -> float:
    """The log decay below which a decay factor is taken as 0: log(tiny) / 4 for the dtype's smallest normal number
    tiny (fp32: -21.8, a factor of 3.3e-10, 1/360 of fp32's relative precision; fp64: -177)."""
    return math.log(torch.finfo(dtype).tiny) / 4


def decay(log_decay: torch.Tensor, floor: float) -> torch.Tensor:
    """exp(log_decay), exactly 0 where log_decay <= floor (two kernels: threshold, exp)."""
    return F.threshold(log_decay, floor, -math.inf).exp()


def flush_tiny(x: torch.Tensor) -> torch.Tensor:
    """x with its entries no larger in magnitude than sqrt(tiny) (fp32: 1.1e-19) set to 0, so that a product of
    two entries is never subnormal (one kernel: hardshrink)."""
    return F.hardshrink(x, torch.finfo(x.dtype).tiny ** 0.5)
