"""Gated delta rule on CUDA through fla's Triton kernels (package `fla-core`, an optional dependency), and the
short causal conv in front of it (`fla_short_conv`).

fla is imported lazily, inside the functions here, so that `import hydrahead` works without it.
fla uses the same (B, T, H, D) layout and the same `scale`, `initial_state`, `output_final_state`
arguments as the rest of `hydrahead.ops`:

    q, k            (B, T, H, Dk)      bf16 or fp16 (fla's chunk kernel rejects fp32)
    v               (B, T, H, Dv)
    g, beta         (B, T, H)
    initial_state   (B, H, Dk, Dv)     fp32
    o               (B, T, H, Dv)      in v's dtype
    final_state     (B, H, Dk, Dv)     fp32

T > 1 uses the chunked kernel (prefill, training); T == 1 uses the fused recurrent kernel (decode,
forward only: fla has no backward for it). An inference decode step (autograd off) launches that kernel
itself, without the autograd Function, input guard, forward function and Triton heuristics around it, and
writes the new state over the cached one: an eager decode step is bound by the host's time per call
(docs/benchmarks.md, "Counted instead of timed"). An inference prompt likewise calls the chunked rule's forward
function (what fla's autograd Function calls) without the public function, Function and input guard around it,
and a hybrid's GDN branch L2-normalises its q and k heads in one launch of fla's kernel (`fla_l2norm`) instead of
one per tensor: a short prefill on a GPU is bound by the host's time too ("A prompt's host work").

`fla_gated_delta_net` is the call of a Gated DeltaNet layer, as fla's own `GatedDeltaNet` makes it: raw
q, k (L2-normalised in the kernel), the raw gate input `a` with `A_log` and `dt_bias` (the log decay
g = -exp(A_log) * softplus(a + dt_bias) computed in the kernel, in fp32, with its backward) and the raw
beta input `b` (sigmoid in the kernel): no separate launches for them.

`fla_short_conv` is a GDN branch's depthwise causal conv + SiLU over a prompt in one fla kernel (forward and
backward), where the PyTorch form takes six passes over its input (pad, K multiply-adds, SiLU).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hydrahead.errors import FlaNotInstalledError

from .chunk import decay_floor

FLA_INSTALL_HINT = "pip install 'hydrahead[gpu]'"
FLA_DTYPES = (torch.bfloat16, torch.float16)
# Set by `interpret.interpret_fla_on_cpu()`: fla's kernels run in Triton's interpreter, CPU tensors take them.
CPU_INTERPRETED = False


def load_fla_kernels() -> tuple[Callable[..., tuple[torch.Tensor, torch.Tensor | None]], ...]:
    """Import fla's (chunk, fused_recurrent) gated delta rule kernels, or raise FlaNotInstalledError."""
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
    except ImportError as err:
        raise FlaNotInstalledError(
            f"the 'fla' gated delta rule mode needs the optional package fla-core "
            f"(flash-linear-attention), which could not be imported ({err}); install it with: {FLA_INSTALL_HINT}"
        ) from err
    return chunk_gated_delta_rule, fused_recurrent_gated_delta_rule


def load_fla_conv() -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
    """Import fla's causal conv1d (Triton), or raise FlaNotInstalledError."""
    try:
        from fla.modules.causal_conv1d import causal_conv1d
    except ImportError as err:
        raise FlaNotInstalledError(
            f"the short conv on fla's kernel needs the optional package fla-core, which could not be imported "
            f"({err}); install it with: {FLA_INSTALL_HINT}"
        ) from err
    return causal_conv1d


# The arguments of fla 0.6's fused recurrent kernel: any other set (a new argument could change what ours mean)
# falls back to fla's public function.
_DECODE_KERNEL_ARGUMENTS = frozenset({
    "q", "k", "v", "g", "gk", "gv", "beta", "A_log", "dt_bias", "o", "h0", "ht", "cu_seqlens", "scale", "T", "H",
    "HV", "K", "V", "BK", "BV", "USE_G", "USE_GK", "USE_GV", "USE_QK_L2NORM_IN_KERNEL", "IS_BETA_HEADWISE",
    "USE_INITIAL_STATE", "STORE_FINAL_STATE", "STATE_V_FIRST", "IS_VARLEN", "USE_GATE_IN_KERNEL", "HAS_DT_BIAS",
    "APPLY_BETA_SIGMOID", "ALLOW_NEG_EIGVAL"})


@functools.cache
def load_fla_decode_kernel():
    """fla's fused recurrent gated delta rule kernel without the `triton.heuristics` around it (the caller gives
    the flags they would derive), or None where this fla's kernel takes other arguments (an internal of fla:
    another release may rename or extend them); an inference decode step launches it directly (`_run_fla`),
    else fla's public function."""
    try:
        from fla.ops.gated_delta_rule.fused_recurrent import fused_recurrent_gated_delta_rule_fwd_kernel as kernel
    except ImportError:
        return None
    jit = getattr(kernel, "fn", None)  # Triton's Heuristics wraps the JIT (or interpreted) function
    if frozenset(getattr(jit, "arg_names", ())) != _DECODE_KERNEL_ARGUMENTS:
        return None
    return jit


@functools.cache
def fla_is_available() -> bool:
    """Whether fla's kernels (the gated delta rule's and the conv's) import; cached, so "auto" dispatch pays for
    the import attempt once."""
    try:
        load_fla_kernels()
        load_fla_conv()
    except FlaNotInstalledError:
        return False
    return True


def fla_applies(x: torch.Tensor) -> bool:
    """Whether fla's kernels run for x: a CUDA tensor in bf16/fp16, with fla installed (or, for checks without
    a GPU, a CPU tensor once `interpret_fla_on_cpu()` has run)."""
    if CPU_INTERPRETED and x.device.type == "cpu":
        return True
    return x.is_cuda and x.dtype in FLA_DTYPES and fla_is_available()


def fla_gated_delta_net(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    state_in_place: bool = False,
    normalized: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule from raw inputs, L2 norm, gate and beta in fla's kernels. q, k, v (B, T, H, D) before
    the L2 norm (after it with `normalized`: `fla_l2norm` made it); a, b (B, T, H) the gate and beta projections;
    A_log, dt_bias (H,). With `cu_seqlens` the (B, T) rows are packed documents: flattened to one row for the
    kernel, restored in the output. With `state_in_place`, a decode step may write the final state over
    `initial_state` (and return it)."""
    B, T = q.shape[:2]
    if cu_seqlens is not None:
        q, k, v, a, b = (x.reshape(1, B * T, *x.shape[2:]) for x in (q, k, v, a, b))
    o, final_state = _run_fla(q, k, v, a, b, initial_state, output_final_state, cu_seqlens, state_in_place,
                              use_qk_l2norm_in_kernel=not normalized, use_gate_in_kernel=True,
                              use_beta_sigmoid_in_kernel=True, A_log=A_log, dt_bias=dt_bias)
    return o.view(B, T, *o.shape[2:]), final_state


def fla_short_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    previous: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """silu(depthwise causal conv) of x (B, T, C) with `weight` (C, K), the tap on the current token last (the
    layout of `ShortConv`), in fla's kernel. `previous` (B, K - 1, C): the inputs before x (zeros when None);
    with `cu_seqlens` the (B, T) rows are packed documents, each starting from zeros."""
    B, T, C = x.shape
    initial_state = None
    if previous is not None:  # fla's state (B, C, K): oldest first, its first slot never read
        initial_state = F.pad(previous.transpose(1, 2), (1, 0))
    if cu_seqlens is not None:
        x = x.reshape(1, B * T, C)
        cu_seqlens = cu_seqlens.to(device=x.device, dtype=torch.long)  # fla's kernels read it on the device
    y, _ = load_fla_conv()(x=x, weight=weight, initial_state=initial_state, activation="silu", cu_seqlens=cu_seqlens)
    return y.view(B, T, C)


def fla_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule with fla's kernels (see the module docstring for shapes and dtypes)."""
    # The log decay is cumulated inside fla: kept in fp32 as fla's layers do, and at most as low as the chunk op's
    # floor, for the same reason (fla's chunk kernel gave NaN for -inf, a decay of 0, and an error of 0.6 for
    # -1e7, whose prefix sums leave the other spans no precision; Triton's interpreter, fp32). A hybrid's own call
    # (`fla_gated_delta_net`) computes g inside the kernel from A_log and the gate input: not floored, and harmful
    # there only at absurd gate inputs.
    g = g.to(torch.float32).clamp(min=decay_floor(torch.float32))
    return _run_fla(q, k, v, g, beta, initial_state, output_final_state, cu_seqlens, scale=scale)


def _run_fla(q, k, v, g, beta, initial_state, output_final_state, cu_seqlens, state_in_place=False, **options):
    """fla's fused recurrent kernel for one token, its chunk kernel otherwise; the state in and out in fp32,
    o in v's dtype. `state_in_place`: the caller's `initial_state` may be overwritten by the final state (a decode
    step's cached state, as the PyTorch step updates it; taken where the kernel is launched directly). Keyword
    arguments only: the positional order of fla's signatures has changed between releases."""
    if q.shape[1] == 1 and cu_seqlens is None and _decode_kernel_applies(q):
        return _decode_forward(q, k, v, g, beta, initial_state, output_final_state, state_in_place, **options)
    if initial_state is not None:
        initial_state = initial_state.to(torch.float32).contiguous()
    if (q.shape[1] > 1 and cu_seqlens is None and options.get("use_gate_in_kernel")
            and _internals_apply(q, load_fla_prompt_forward)):  # a hybrid's call (see `_prompt_forward`)
        return _prompt_forward(q, k, v, g, beta, initial_state, output_final_state, **options)
    if cu_seqlens is not None:  # the PyTorch path takes it on the host too; fla's kernels read it on the device
        options["cu_seqlens"] = cu_seqlens.to(device=q.device, dtype=torch.long)
    chunk_kernel, recurrent_kernel = load_fla_kernels()
    # the fused recurrent kernel has no backward (fla 0.6): one token under autograd goes through the chunk kernel
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, g, beta) if t is not None)
    kernel = recurrent_kernel if q.shape[1] == 1 and not grad else chunk_kernel
    o, final_state = kernel(q=q, k=k, v=v, g=g, beta=beta, initial_state=initial_state,
                            output_final_state=output_final_state, **options)
    if final_state is not None:
        final_state = final_state.to(torch.float32)
    return o.to(v.dtype), final_state


def _decode_kernel_applies(q: torch.Tensor) -> bool:
    """Whether an inference decode step may launch fla's kernel itself: no autograd (the kernel has no backward),
    the kernel's arguments those of fla 0.6, and q on the current CUDA device (fla's wrapper would switch to it)."""
    return _internals_apply(q, load_fla_decode_kernel)


def _internals_apply(x: torch.Tensor, load: Callable) -> bool:
    """Whether fla's internals that `load` gives may be called directly for x: no autograd (fla's backward is
    its autograd Function's), not while torch.compile traces (fla's public functions keep it out of fla's
    Python: `torch.compiler.disable`), the internals those of fla 0.6, and x on the current CUDA device (fla's
    input guard would switch to it)."""
    return (not torch.is_grad_enabled() and not torch.compiler.is_compiling() and load() is not None
            and (not x.is_cuda or x.device.index == torch.cuda.current_device()))


def _decode_forward(q, k, v, g, beta, initial_state, output_final_state, state_in_place=False, *, scale=None,
                    use_gate_in_kernel=False, A_log=None, dt_bias=None, use_qk_l2norm_in_kernel=False,
                    use_beta_sigmoid_in_kernel=False):
    """One decode step, fla's fused recurrent kernel launched as its forward function launches it, without the
    Python around the launch: the autograd Function, the input guard, the forward function and Triton's
    heuristics (eight lambdas, each given a dict of all 34 arguments), whose flags are set here. An eager decode
    step is bound by the host's time per call (docs/benchmarks.md). The guard's work done here: contiguous
    inputs (a batch's rows of a projection are strided); its device switch is why `_decode_kernel_applies` wants
    q on the current device. With `state_in_place` the final state is written over `initial_state` (each kernel
    program reads its block of the state before it writes it), so no new state is allocated."""
    B, _, H, K = k.shape
    HV, V = v.shape[2], v.shape[3]
    q, k, v, beta = q.contiguous(), k.contiguous(), v.contiguous(), beta.contiguous()
    g = g.contiguous() if g is not None else None
    if initial_state is not None and (initial_state.dtype != torch.float32 or not initial_state.is_contiguous()):
        initial_state, state_in_place = initial_state.to(torch.float32).contiguous(), True  # our own copy
    if not output_final_state:
        final_state = None
    elif state_in_place and initial_state is not None:
        final_state = initial_state
    else:
        final_state = q.new_empty(B, HV, K, V, dtype=torch.float32)
    if not use_gate_in_kernel:
        A_log = dt_bias = None
    o = torch.empty_like(v)
    block_v = min(8, 1 << (V - 1).bit_length())  # fla's: BK the next power of two of K, BV of V up to 8
    load_fla_decode_kernel()[(-(-V // block_v) * B * HV,)](
        q=q, k=k, v=v, g=g, gk=None, gv=None, beta=beta, A_log=A_log, dt_bias=dt_bias, o=o, h0=initial_state,
        ht=final_state, cu_seqlens=None, scale=K**-0.5 if scale is None else scale, T=1, H=H, HV=HV, K=K, V=V,
        BK=1 << (K - 1).bit_length(), BV=block_v, USE_G=g is not None, USE_GK=False, USE_GV=False,
        USE_QK_L2NORM_IN_KERNEL=use_qk_l2norm_in_kernel, IS_BETA_HEADWISE=beta.ndim != v.ndim,
        USE_INITIAL_STATE=initial_state is not None, STORE_FINAL_STATE=final_state is not None,
        STATE_V_FIRST=False, IS_VARLEN=False, USE_GATE_IN_KERNEL=A_log is not None, HAS_DT_BIAS=dt_bias is not None,
        APPLY_BETA_SIGMOID=use_beta_sigmoid_in_kernel, ALLOW_NEG_EIGVAL=False, num_warps=1, num_stages=3)
    return o, final_state


# The parameters of fla 0.6's forward function of the chunked rule and of its L2 norm: any other set (a new
# parameter could change what ours mean) falls back to fla's public functions.
_PROMPT_FORWARD_PARAMETERS = frozenset({
    "q", "k", "v", "g", "beta", "scale", "initial_state", "output_final_state", "state_v_first", "cu_seqlens",
    "cp_context", "chunk_indices", "use_gate_in_kernel", "A_log", "dt_bias", "chunk_size"})
_L2NORM_PARAMETERS = frozenset({"x", "eps", "output_dtype"})


@functools.cache
def load_fla_prompt_forward():
    """(fla's forward function of the chunked rule, its L2 norm's forward function), what fla's autograd Function
    calls, or None where this fla's take other parameters (internals of fla: another release may rename or extend
    them); an inference prompt calls them directly (`_prompt_forward`, `fla_l2norm`), else fla's public function."""
    try:
        from fla.modules.norm.l2norm import l2norm_fwd
        from fla.ops.gated_delta_rule.chunk import chunk_gated_delta_rule_fwd
    except ImportError:
        return None
    if (frozenset(inspect.signature(chunk_gated_delta_rule_fwd).parameters) != _PROMPT_FORWARD_PARAMETERS
            or frozenset(inspect.signature(l2norm_fwd).parameters) != _L2NORM_PARAMETERS):
        return None
    return chunk_gated_delta_rule_fwd, l2norm_fwd


def fla_l2norm(x: torch.Tensor) -> torch.Tensor | None:
    """x / sqrt(sum(x^2) + 1e-6) over the last dim in one launch of fla's kernel (fp32 inside, x's dtype out: the
    L2 norm fla's chunked rule applies with `use_qk_l2norm_in_kernel`), for an inference prompt: a hybrid's q and
    k heads in one call. None where fla's internal is not the one known (`load_fla_prompt_forward`), with autograd
    on, or x on another than the current device: the caller leaves the norm to fla's kernels then."""
    if not _internals_apply(x, load_fla_prompt_forward):
        return None
    return load_fla_prompt_forward()[1](x.contiguous())[0]


def _prompt_forward(q, k, v, g, beta, initial_state, output_final_state, *, scale=None, use_gate_in_kernel,
                    A_log, dt_bias, use_qk_l2norm_in_kernel=False, use_beta_sigmoid_in_kernel=False):
    """An inference prompt: fla's forward function of the chunked rule, as fla's autograd Function calls it,
    without the Python around it (the public function, the Function, the input guard; about 0.4 M instructions
    per call, docs/benchmarks.md). The guard's work done here: contiguous inputs (q, k, v are views of one
    projection); its device switch is why `_internals_apply` wants q on the current device. The L2 norms as the
    Function makes them; beta's sigmoid in fp32 by torch (fla's kernel for it computes the same function in fp32,
    up to the last bits of its exp, in a launch of its own). Taken for a hybrid's call only (the gate in the
    kernel): the public function also chooses among fla's backends, and the one other than Triton that fla 0.6
    has for CUDA (FlashQLA, where installed) takes only calls with the gate and beta given. `initial_state`
    comes in fp32 and contiguous (`_run_fla`)."""
    forward, l2norm_forward = load_fla_prompt_forward()
    q, k, v, g, beta = q.contiguous(), k.contiguous(), v.contiguous(), g.contiguous(), beta.contiguous()
    if use_qk_l2norm_in_kernel:
        q, k = l2norm_forward(q)[0], l2norm_forward(k)[0]
    if use_beta_sigmoid_in_kernel:
        beta = torch.sigmoid(beta.float())
    _, o, _, final_state, _, _ = forward(
        q=q, k=k, v=v, g=g, beta=beta, scale=k.shape[-1] ** -0.5 if scale is None else scale,
        initial_state=initial_state, output_final_state=output_final_state, use_gate_in_kernel=use_gate_in_kernel,
        A_log=A_log, dt_bias=dt_bias)
    return o.to(v.dtype), final_state
