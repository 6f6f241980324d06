"""Gated delta rule: chunk == recurrent (values and gradients), == transformers' reference, decode, errors."""

from __future__ import annotations

import inspect
import sys
import types
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.models.qwen3_next import modeling_qwen3_next

from hydrahead.ops import FlaNotInstalledError, GatedDeltaRuleError, gated_delta_rule, gated_delta_rule_step
from hydrahead.ops import gated_delta
from hydrahead.ops.gated_delta.chunk import chunk_gated_delta_rule
from hydrahead.ops.gated_delta.fla import (fla_is_available, load_fla_decode_kernel, load_fla_kernels,
                                          load_fla_prompt_forward)
from hydrahead.ops.gated_delta.naive import recurrent_gated_delta_rule

# transformers swaps these for fla's kernels when fla is installed; unwrap to always get the PyTorch code.
hf_chunk = inspect.unwrap(modeling_qwen3_next.torch_chunk_gated_delta_rule)
hf_recurrent = inspect.unwrap(modeling_qwen3_next.torch_recurrent_gated_delta_rule)

FP32_TOL = 1e-5
FP64_TOL = 1e-9



@dataclass(frozen=True)
class Shape:
    batch: int
    seq_len: int
    heads: int
    dk: int
    dv: int

    @property
    def id(self) -> str:
        return f"B{self.batch}-T{self.seq_len}-H{self.heads}-Dk{self.dk}-Dv{self.dv}"


def make_inputs(shape: Shape, dtype: torch.dtype = torch.float32, initial_state: bool = True) -> dict:
    """Realistic inputs: q, k L2-normalised, g = logsigmoid(randn) <= 0, beta = sigmoid(randn)."""
    b, t, h, dk, dv = shape.batch, shape.seq_len, shape.heads, shape.dk, shape.dv
    return {
        "q": F.normalize(torch.randn(b, t, h, dk, dtype=dtype), dim=-1),
        "k": F.normalize(torch.randn(b, t, h, dk, dtype=dtype), dim=-1),
        "v": torch.randn(b, t, h, dv, dtype=dtype),
        "g": F.logsigmoid(torch.randn(b, t, h, dtype=dtype)),
        "beta": torch.sigmoid(torch.randn(b, t, h, dtype=dtype)),
        "initial_state": torch.randn(b, h, dk, dv, dtype=dtype) if initial_state else None,
    }


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|."""
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max().clamp_min(1e-30)).item()


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = rel_err(actual, expected)
    assert err < tol, f"{name}: relative error {err:.3e} >= {tol:.0e}"


def run(fn, inputs: dict, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """fn(q, k, v, g, beta, initial_state=..., output_final_state=True, **kwargs)."""
    q, k, v, g, beta = (inputs[name] for name in ("q", "k", "v", "g", "beta"))
    return fn(q, k, v, g, beta, initial_state=inputs["initial_state"], output_final_state=True, **kwargs)


# ---- 1. chunk == recurrent: values (fp32) and gradients (fp64) ------------------------------------------

CHUNK_CASES = [
    (Shape(2, 1, 3, 16, 8), 64),
    (Shape(2, 17, 3, 16, 8), 64),
    (Shape(1, 63, 2, 8, 12), 64),
    (Shape(2, 130, 3, 16, 8), 64),
    (Shape(2, 17, 3, 16, 8), 16),
    (Shape(1, 63, 2, 8, 12), 16),
    (Shape(2, 130, 3, 16, 8), 16),
]
CHUNK_IDS = [f"{s.id}-C{c}" for s, c in CHUNK_CASES]
STATE_IDS = ["h0", "no-h0"]


@pytest.mark.parametrize("with_state", [True, False], ids=STATE_IDS)
@pytest.mark.parametrize(("shape", "chunk_size"), CHUNK_CASES, ids=CHUNK_IDS)
def test_chunk_matches_recurrent_fp32(shape: Shape, chunk_size: int, with_state: bool) -> None:
    inputs = make_inputs(shape, torch.float32, with_state)
    o_ref, state_ref = run(recurrent_gated_delta_rule, inputs)
    o, state = run(chunk_gated_delta_rule, inputs, chunk_size=chunk_size)
    assert o.dtype == torch.float32 and state.dtype == torch.float32
    assert_close("o", o, o_ref, FP32_TOL)
    assert_close("final_state", state, state_ref, FP32_TOL)


@pytest.mark.parametrize("with_state", [True, False], ids=STATE_IDS)
@pytest.mark.parametrize(("shape", "chunk_size"), CHUNK_CASES, ids=CHUNK_IDS)
def test_chunk_gradients_match_recurrent(shape: Shape, chunk_size: int, with_state: bool) -> None:
    inputs = make_inputs(shape, torch.float64, with_state)
    leaves = {name: x.requires_grad_() for name, x in inputs.items() if x is not None}
    grad_o = torch.randn(shape.batch, shape.seq_len, shape.heads, shape.dv, dtype=torch.float64)
    grad_state = torch.randn(shape.batch, shape.heads, shape.dk, shape.dv, dtype=torch.float64)

    def grads(fn, **kwargs) -> tuple[torch.Tensor, ...]:
        o, state = run(fn, inputs, **kwargs)
        loss = (o * grad_o).sum() + (state * grad_state).sum()
        return torch.autograd.grad(loss, list(leaves.values()))

    expected = grads(recurrent_gated_delta_rule)
    actual = grads(chunk_gated_delta_rule, chunk_size=chunk_size)
    for name, a, e in zip(leaves, actual, expected):
        assert_close(f"d{name}", a, e, FP64_TOL)


def test_chunk_is_exact_in_fp64_for_a_long_sequence() -> None:
    """Many chunks with a strong decay: the chunk form loses nothing against the loop."""
    inputs = make_inputs(Shape(1, 300, 2, 16, 16), torch.float64)
    inputs["g"] = inputs["g"] * 4
    o_ref, state_ref = run(recurrent_gated_delta_rule, inputs)
    o, state = run(chunk_gated_delta_rule, inputs, chunk_size=32)
    assert_close("o", o, o_ref, FP64_TOL)
    assert_close("final_state", state, state_ref, FP64_TOL)


def fast_decay_inputs(shape: Shape) -> dict:
    """Gates like those conversion sets (`GatedDeltaNetBranch.reset_gates`: per head a log decay per token from -1e-3
    to -1.6, exp(-102) over a 64-token chunk for the fastest head), here drawn per token around those rates (up to
    -3.2), where the chunk form's decay products fall below fp32's smallest normal number."""
    inputs = make_inputs(shape)
    rates = torch.linspace(1e-3, 1.6, shape.heads)
    inputs["g"] = -rates * torch.sigmoid(torch.randn(shape.batch, shape.seq_len, shape.heads)) * 2
    return inputs


def test_chunk_matches_recurrent_with_fast_decay() -> None:
    inputs = fast_decay_inputs(Shape(2, 200, 6, 32, 32))
    o_ref, state_ref = run(recurrent_gated_delta_rule, inputs)
    o, state = run(chunk_gated_delta_rule, inputs)
    assert_close("o", o, o_ref, FP32_TOL)
    assert_close("final_state", state, state_ref, FP32_TOL)


def test_chunk_gradients_match_recurrent_with_fast_decay() -> None:
    """The decay factors and entries the chunk form drops (see `decay_floor`) change no gradient beyond rounding."""
    inputs = fast_decay_inputs(Shape(1, 150, 4, 16, 16))
    leaves = {name: x.requires_grad_() for name, x in inputs.items() if x is not None}
    grad_o, grad_state = torch.randn(1, 150, 4, 16), torch.randn(1, 4, 16, 16)

    def grads(fn) -> tuple[torch.Tensor, ...]:
        o, state = run(fn, inputs)
        return torch.autograd.grad((o * grad_o).sum() + (state * grad_state).sum(), list(leaves.values()))

    for name, a, e in zip(leaves, grads(chunk_gated_delta_rule), grads(recurrent_gated_delta_rule)):
        assert_close(f"d{name}", a, e, 1e-4)


@pytest.mark.parametrize("zero_decay", [float("-inf"), -1e7, -1e30])
def test_chunk_takes_a_decay_of_zero_as_recurrent_does(zero_decay: float) -> None:
    """g = -inf (a decay of exactly 0) gave NaN in the chunk form, and a huge finite log decay (-1e7) an error of
    0.08: the prefix sums lost every other span's precision. Values and gradients are the recurrent form's."""
    inputs = make_inputs(Shape(1, 100, 2, 8, 8), dtype=torch.float64)  # fp64 gradients; the floor is fp64's
    inputs["g"][0, 37, 1] = inputs["g"][0, 70, 0] = zero_decay
    # dg too where the log decay is finite (at -inf the recurrent form's exp gives no gradient to compare with)
    leaves = {name: x.requires_grad_() for name, x in inputs.items()
              if x is not None and (name != "g" or zero_decay > float("-inf"))}

    def outputs(fn) -> tuple[torch.Tensor, ...]:
        o, state = run(fn, inputs)
        return (o, state, *torch.autograd.grad(o.sum() + state.square().sum(), list(leaves.values())))

    for name, a, e in zip(("o", "state", *(f"d{n}" for n in leaves)), outputs(chunk_gated_delta_rule),
                          outputs(recurrent_gated_delta_rule)):
        assert torch.isfinite(a).all(), name
        assert_close(name, a, e, FP64_TOL)
    fp32 = make_inputs(Shape(1, 100, 2, 8, 8))
    fp32["g"][0, 37, 1] = zero_decay
    assert_close("o fp32", run(chunk_gated_delta_rule, fp32)[0], run(recurrent_gated_delta_rule, fp32)[0], FP32_TOL)


class SubnormalGemmOperands(TorchDispatchMode):
    """Counts the subnormal entries of the operands of every matrix multiply it sees."""

    GEMMS = {torch.ops.aten.bmm.default, torch.ops.aten.baddbmm.default, torch.ops.aten.mm.default,
             torch.ops.aten.addmm.default}

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.GEMMS:
            for x in args:
                if isinstance(x, torch.Tensor) and x.is_floating_point():
                    self.count += int(((x != 0) & (x.abs() < torch.finfo(x.dtype).tiny)).sum())
        return func(*args, **(kwargs or {}))


def test_chunk_multiplies_no_subnormal_numbers() -> None:
    """Subnormal numbers make an Intel CPU's multiplies many times slower (docs/benchmarks.md): with decays as
    conversion sets them, none reaches a matrix multiply of the chunk form (before the floors, 324,640 entries did)."""
    inputs = fast_decay_inputs(Shape(1, 640, 8, 128, 128))
    counter = SubnormalGemmOperands()
    with torch.no_grad(), counter:
        run(chunk_gated_delta_rule, inputs)
    assert counter.count == 0


# ---- 2. Both equal transformers' reference implementations ---------------------------------------------

HF_SHAPES = [Shape(2, 1, 3, 16, 8), Shape(2, 63, 3, 16, 8), Shape(1, 130, 2, 32, 32)]


@pytest.mark.parametrize("with_state", [True, False], ids=STATE_IDS)
@pytest.mark.parametrize("mode", ["chunk", "recurrent"])
@pytest.mark.parametrize("shape", HF_SHAPES, ids=[s.id for s in HF_SHAPES])
def test_matches_transformers(shape: Shape, mode: str, with_state: bool) -> None:
    inputs = make_inputs(shape, torch.float32, with_state)
    o, state = run(gated_delta_rule, inputs, mode=mode)
    # transformers scales q by Dk ** -0.5 internally, which is our default `scale`; q, k are already normalised.
    for name, reference in (("hf_chunk", hf_chunk), ("hf_recurrent", hf_recurrent)):
        o_ref, state_ref = run(reference, inputs, use_qk_l2norm_in_kernel=False)
        assert_close(f"o vs {name}", o, o_ref, FP32_TOL)
        assert_close(f"final_state vs {name}", state, state_ref, FP32_TOL)


@pytest.mark.parametrize("mode", ["chunk", "recurrent"])
def test_explicit_scale(mode: str) -> None:
    """scale=s is the same as handing transformers (which always uses Dk ** -0.5) q * s * sqrt(Dk)."""
    shape = Shape(1, 40, 2, 16, 8)
    inputs = make_inputs(shape)
    scale = 0.37
    o, state = run(gated_delta_rule, inputs, mode=mode, scale=scale)
    hf_inputs = {**inputs, "q": inputs["q"] * scale * shape.dk**0.5}
    o_ref, state_ref = run(hf_chunk, hf_inputs)
    assert_close("o", o, o_ref, FP32_TOL)
    assert_close("final_state", state, state_ref, FP32_TOL)


# ---- 3. Decode: token-by-token with a carried state == one call over the whole sequence ------------------

DECODE_CASES = [(Shape(2, 40, 3, 16, 8), 0), (Shape(2, 40, 3, 16, 8), 17), (Shape(1, 70, 2, 8, 8), 64)]


@pytest.mark.parametrize("with_state", [True, False], ids=STATE_IDS)
@pytest.mark.parametrize(
    ("shape", "prefill"), DECODE_CASES, ids=[f"{s.id}-prefill{p}" for s, p in DECODE_CASES]
)
def test_prefill_then_decode_matches_one_chunk_call(shape: Shape, prefill: int, with_state: bool) -> None:
    inputs = make_inputs(shape, torch.float32, with_state)
    o_full, state_full = run(gated_delta_rule, inputs, mode="chunk")

    def tokens(start: int, stop: int) -> list[torch.Tensor]:
        return [inputs[name][:, start:stop] for name in ("q", "k", "v", "g", "beta")]

    state, outputs = inputs["initial_state"], []
    if prefill:
        o, state = gated_delta_rule(*tokens(0, prefill), initial_state=state, output_final_state=True, mode="chunk")
        outputs.append(o)
    for t in range(prefill, shape.seq_len):
        o, state = gated_delta_rule(*tokens(t, t + 1), initial_state=state, output_final_state=True)  # auto: recurrent
        outputs.append(o)

    assert_close("o", torch.cat(outputs, dim=1), o_full, FP32_TOL)
    assert_close("final_state", state, state_full, FP32_TOL)


@pytest.mark.parametrize("shape", [Shape(2, 12, 3, 16, 8), Shape(1, 5, 2, 8, 12)], ids=lambda s: s.id)
def test_decode_step_matches_recurrent_and_keeps_the_state_in_place(shape: Shape) -> None:
    inputs = make_inputs(shape, torch.float32, initial_state=True)
    o_ref, state_ref = run(recurrent_gated_delta_rule, inputs)
    state = inputs["initial_state"].clone()
    address = state.data_ptr()
    outputs = []
    for t in range(shape.seq_len):
        step = [inputs[name][:, t : t + 1] for name in ("q", "k", "v", "g", "beta")]
        outputs.append(gated_delta_rule_step(*step, state))
    assert state.data_ptr() == address
    assert_close("o", torch.cat(outputs, dim=1), o_ref, FP32_TOL)
    assert_close("state", state, state_ref, FP32_TOL)


def test_decode_step_returns_v_dtype_and_keeps_an_fp32_state() -> None:
    inputs = make_inputs(Shape(1, 1, 2, 8, 8), torch.bfloat16, initial_state=False)
    state = torch.zeros(1, 2, 8, 8)
    step = [inputs[name] for name in ("q", "k", "v", "g", "beta")]
    o = gated_delta_rule_step(*step, state)
    assert o.dtype == torch.bfloat16 and state.dtype == torch.float32
    o_ref, state_ref = recurrent_gated_delta_rule(*step, initial_state=torch.zeros(1, 2, 8, 8), output_final_state=True)
    assert_close("state", state, state_ref, FP32_TOL)


@pytest.mark.parametrize(("name", "two_tokens", "message"), [
    ("k", True, "takes one token"), ("q", True, "takes one token"), ("beta", True, "takes one token"),
    ("v", False, "v must be a floating-point tensor"),
], ids=["two-k", "two-q", "two-beta", "integer-v"])
def test_decode_step_refuses_more_than_one_token_or_an_integer_v(name: str, two_tokens: bool, message: str) -> None:
    """Two tokens used the first only; an integer v gave a truncated integer output."""
    inputs = make_inputs(Shape(1, 1, 2, 8, 8), initial_state=False)
    x = inputs[name]
    inputs[name] = torch.cat([x, x], dim=1) if two_tokens else x.to(torch.long)
    with pytest.raises(GatedDeltaRuleError, match=message):
        gated_delta_rule_step(*(inputs[n] for n in ("q", "k", "v", "g", "beta")), torch.zeros(1, 2, 8, 8))


def test_decode_step_refuses_a_state_of_another_layout_gates_out_of_range_and_grouped_values() -> None:
    """A (B, H, Dv, Dk) state has as many elements as (B, H, Dk, Dv): the view took it and computed garbage;
    g > 0 and beta > 1 grew the state without bound (gated_delta_rule refuses both)."""
    inputs = make_inputs(Shape(1, 1, 2, 8, 4), initial_state=False)
    step = [inputs[n] for n in ("q", "k", "v", "g", "beta")]
    with pytest.raises(GatedDeltaRuleError, match=r"state has shape \(1, 2, 4, 8\) but k .* imply \(B, H, Dk, Dv\) = "
                                                  r"\(1, 2, 8, 4\)"):
        gated_delta_rule_step(*step, torch.zeros(1, 2, 4, 8))
    for name, value, message in (("g", 0.5, "g must be a log decay"), ("beta", 5.0, r"beta must be in \[0, 1\]")):
        bad = {**inputs, name: torch.full_like(inputs[name], value)}
        with pytest.raises(GatedDeltaRuleError, match=message):
            gated_delta_rule_step(*(bad[n] for n in ("q", "k", "v", "g", "beta")), torch.zeros(1, 2, 8, 4))
        gated_delta_rule_step(*(bad[n] for n in ("q", "k", "v", "g", "beta")), torch.zeros(1, 2, 8, 4),
                              check_values=False)  # a caller's own: no device sync (a captured graph)
    grouped = make_inputs(Shape(1, 1, 4, 8, 4), initial_state=False)
    with pytest.raises(GatedDeltaRuleError, match="one value head per q/k head; v has 4, k 2"):
        gated_delta_rule_step(*step[:2], grouped["v"], grouped["g"], grouped["beta"], torch.zeros(1, 4, 8, 4))


def test_decode_step_checks_q_g_and_beta_before_it_touches_the_state() -> None:
    """A q of another width failed in a GEMM after the state had decayed in place; a g without its head axis
    broadcast one gate over every head."""
    inputs = make_inputs(Shape(1, 1, 2, 8, 4), initial_state=False)
    for name, bad in (("q", inputs["q"][..., :4]), ("g", inputs["g"][..., :1]), ("beta", inputs["beta"][..., :1])):
        state = torch.ones(1, 2, 8, 4)
        step = {**inputs, name: bad}
        with pytest.raises(GatedDeltaRuleError, match=f"{name} has shape .* but k .* implies"):
            gated_delta_rule_step(*(step[n] for n in ("q", "k", "v", "g", "beta")), state)
        assert torch.equal(state, torch.ones(1, 2, 8, 4))


@pytest.mark.parametrize("kwargs, message", [
    ({"cu_seqlens": 5}, "cu_seqlens must be a 1-D integer tensor"),  # len(5): a TypeError
    ({"cu_seqlens": torch.tensor(5)}, "cu_seqlens must be a 1-D integer tensor"),
    ({"initial_state": [[0.0]]}, "initial_state must be a tensor .* got list"),  # an AttributeError
])
def test_packing_bounds_and_a_state_that_are_not_tensors_are_named(kwargs, message) -> None:
    inputs = make_inputs(Shape(1, 6, 2, 8, 4), initial_state=False)
    with pytest.raises(GatedDeltaRuleError, match=message):
        gated_delta_rule(*(inputs[n] for n in ("q", "k", "v", "g", "beta")), **kwargs)


def test_l2norm_refuses_integers() -> None:
    from hydrahead.ops import l2norm

    with pytest.raises(GatedDeltaRuleError, match="l2norm takes a floating-point tensor, got torch.int64"):
        l2norm(torch.tensor([3, 4]))  # gave tensor([0, 0])
    torch.testing.assert_close(l2norm(torch.tensor([3.0, 4.0]), eps=0.0), torch.tensor([0.6, 0.8]))


# ---- Public API contract --------------------------------------------------------------------------------


def test_output_dtypes_and_optional_state() -> None:
    shape = Shape(1, 20, 2, 8, 8)
    inputs = make_inputs(shape, initial_state=False)
    inputs = {name: x.to(torch.bfloat16) for name, x in inputs.items() if x is not None}
    for mode in ("chunk", "recurrent", "auto"):
        o, state = gated_delta_rule(**inputs, mode=mode)
        assert o.shape == (1, 20, 2, 8) and o.dtype == torch.bfloat16 and state is None
        o, state = gated_delta_rule(**inputs, output_final_state=True, mode=mode)
        assert state.shape == (1, 2, 8, 8) and state.dtype == torch.float32


@pytest.mark.parametrize(("seq_len", "expected"), [(1, "recurrent"), (5, "chunk")])
def test_auto_on_cpu_uses_recurrent_for_one_token_and_chunk_otherwise(
    monkeypatch: pytest.MonkeyPatch, seq_len: int, expected: str
) -> None:
    called: list[str] = []

    def spy(name: str):
        real = getattr(gated_delta, f"{name}_gated_delta_rule")
        return lambda *args, **kwargs: called.append(name) or real(*args, **kwargs)

    for name in ("recurrent", "chunk"):
        monkeypatch.setattr(gated_delta, f"{name}_gated_delta_rule", spy(name))
    inputs = make_inputs(Shape(1, seq_len, 2, 8, 8))
    run(gated_delta_rule, inputs)
    assert called == [expected]


# ---- 4. Bad input raises typed errors ---------------------------------------------------------------------


def _bad(name: str, value) -> dict:
    inputs = make_inputs(Shape(2, 5, 3, 8, 4))
    inputs[name] = value
    return inputs


BAD_INPUTS = {
    "q-3d": (_bad("q", torch.randn(2, 5, 8)), "q must have shape"),
    "v-5d": (_bad("v", torch.randn(2, 5, 3, 4, 1)), "v must have shape"),
    "g-4d": (_bad("g", torch.randn(2, 5, 3, 1)), "g must have shape"),
    "k-wrong-dk": (_bad("k", torch.randn(2, 5, 3, 7)), "k has shape"),
    "v-wrong-heads": (_bad("v", torch.randn(2, 5, 2, 4)), "v has 2 heads, not a multiple of q.s 3"),
    "beta-wrong-T": (_bad("beta", torch.rand(2, 6, 3)), "beta has shape"),
    "state-wrong-dv": (_bad("initial_state", torch.zeros(2, 3, 8, 5)), "initial_state has shape"),
    "empty-sequence": (make_inputs(Shape(2, 0, 3, 8, 4)), "empty"),
    "g-nan": (_bad("g", torch.full((2, 5, 3), float("nan"))), "g holds NaN"),
    "no-batch": (make_inputs(Shape(0, 5, 3, 8, 4), initial_state=False), "have a size of 0"),  # RuntimeError before
    "no-dk": (make_inputs(Shape(2, 5, 3, 0, 4), initial_state=False), "have a size of 0"),  # ZeroDivisionError
    "v-integer": (_bad("v", torch.ones(2, 5, 3, 4, dtype=torch.long)), "v must be a floating-point tensor"),
    "g-integer": (_bad("g", torch.zeros(2, 5, 3, dtype=torch.long)), "g must be a floating-point tensor"),
}


@pytest.mark.parametrize(("inputs", "message"), list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_raises(inputs: dict, message: str) -> None:
    with pytest.raises(GatedDeltaRuleError, match=message):
        run(gated_delta_rule, inputs)


def test_unknown_mode_raises() -> None:
    with pytest.raises(GatedDeltaRuleError, match="unknown gated delta rule mode 'fast'"):
        run(gated_delta_rule, make_inputs(Shape(1, 3, 1, 4, 4)), mode="fast")
    assert issubclass(GatedDeltaRuleError, ValueError)


def test_fla_mode_on_cpu_raises() -> None:
    with pytest.raises(GatedDeltaRuleError, match="CUDA"):
        run(gated_delta_rule, make_inputs(Shape(1, 3, 1, 4, 4)), mode="fla")


def test_missing_fla_raises_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("fla", "fla.ops", "fla.ops.gated_delta_rule"):
        monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules makes the import raise ImportError
    fla_is_available.cache_clear()
    try:
        with pytest.raises(FlaNotInstalledError, match=r"pip install 'hydrahead\[gpu\]'"):
            load_fla_kernels()
        assert not fla_is_available()
    finally:
        fla_is_available.cache_clear()


def test_decode_launches_flas_kernel_only_where_it_takes_our_arguments(monkeypatch: pytest.MonkeyPatch):
    """An inference decode step launches fla's fused recurrent kernel itself (no autograd Function, input guard,
    forward function or heuristics) only where the kernel under the heuristics has fla 0.6's arguments; another
    release's (renamed, extended by a flag that could change what ours mean, or without one we set) falls back to
    fla's public function instead of failing mid-generation or computing something else."""
    from hydrahead.ops.gated_delta.fla import _DECODE_KERNEL_ARGUMENTS

    class Heuristics:  # Triton's wrapper: the JIT function as `fn`, which lists its arguments in `arg_names`
        def __init__(self, names):
            self.fn = types.SimpleNamespace(arg_names=list(names))

    ours = Heuristics(sorted(_DECODE_KERNEL_ARGUMENTS))
    renamed = Heuristics(sorted(_DECODE_KERNEL_ARGUMENTS - {"h0"} | {"initial_state"}))
    extended = Heuristics(sorted(_DECODE_KERNEL_ARGUMENTS | {"USE_EXP2"}))
    fewer = Heuristics(sorted(_DECODE_KERNEL_ARGUMENTS - {"ALLOW_NEG_EIGVAL"}))
    no_heuristics = types.SimpleNamespace(arg_names=sorted(_DECODE_KERNEL_ARGUMENTS))  # no `fn`
    module = types.ModuleType("fla.ops.gated_delta_rule.fused_recurrent")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        for kernel, taken in ((ours, True), (renamed, False), (extended, False), (fewer, False), (no_heuristics, False)):
            module.fused_recurrent_gated_delta_rule_fwd_kernel = kernel
            load_fla_decode_kernel.cache_clear()
            assert load_fla_decode_kernel() is (kernel.fn if taken else None)
        monkeypatch.setitem(sys.modules, module.__name__, None)  # no such module
        load_fla_decode_kernel.cache_clear()
        assert load_fla_decode_kernel() is None
    finally:
        load_fla_decode_kernel.cache_clear()


def test_prompt_calls_flas_forward_only_where_it_takes_our_parameters(monkeypatch: pytest.MonkeyPatch):
    """An inference prompt calls fla's forward function of the chunked rule and its L2 norm directly only where
    their parameters are fla 0.6's; another release's (renamed, extended, reduced) falls back to fla's public
    function, as does a prompt that torch.compile traces."""
    from hydrahead.ops.gated_delta.fla import _L2NORM_PARAMETERS, _PROMPT_FORWARD_PARAMETERS, _internals_apply

    def function(names):
        fn = lambda *args, **kwargs: None  # noqa: E731
        fn.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names])
        return fn

    chunk = types.ModuleType("fla.ops.gated_delta_rule.chunk")
    norm = types.ModuleType("fla.modules.norm.l2norm")
    monkeypatch.setitem(sys.modules, chunk.__name__, chunk)
    monkeypatch.setitem(sys.modules, norm.__name__, norm)
    forward, l2norm_forward = function(sorted(_PROMPT_FORWARD_PARAMETERS)), function(sorted(_L2NORM_PARAMETERS))
    cases = [(forward, l2norm_forward, True),
             (function(sorted(_PROMPT_FORWARD_PARAMETERS - {"g"} | {"gk"})), l2norm_forward, False),
             (function(sorted(_PROMPT_FORWARD_PARAMETERS | {"use_exp2"})), l2norm_forward, False),
             (function(sorted(_PROMPT_FORWARD_PARAMETERS - {"dt_bias"})), l2norm_forward, False),
             (forward, function(sorted(_L2NORM_PARAMETERS | {"residual"})), False)]
    try:
        for chunk.chunk_gated_delta_rule_fwd, norm.l2norm_fwd, taken in cases:
            load_fla_prompt_forward.cache_clear()
            got = load_fla_prompt_forward()
            assert got == ((chunk.chunk_gated_delta_rule_fwd, norm.l2norm_fwd) if taken else None)
        chunk.chunk_gated_delta_rule_fwd, norm.l2norm_fwd = forward, l2norm_forward
        load_fla_prompt_forward.cache_clear()
        x = torch.zeros(1, 4, 2, 8)
        with torch.no_grad():
            assert _internals_apply(x, load_fla_prompt_forward)
            monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # fla's public, compile-disabled call
            assert not _internals_apply(x, load_fla_prompt_forward)
        monkeypatch.setitem(sys.modules, chunk.__name__, None)  # no such module
        load_fla_prompt_forward.cache_clear()
        assert load_fla_prompt_forward() is None
    finally:
        load_fla_prompt_forward.cache_clear()


# ---- fla on CUDA (bf16) against the fp32 reference ----------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla's Triton kernels need CUDA")
@pytest.mark.parametrize("seq_len", [1, 130], ids=["T1-fused-recurrent", "T130-chunk"])
def test_fla_matches_recurrent_reference(seq_len: int) -> None:
    pytest.importorskip("fla.ops.gated_delta_rule")
    inputs = make_inputs(Shape(2, seq_len, 4, 64, 64))
    cuda = {name: x.cuda() for name, x in inputs.items()}
    cuda.update({name: cuda[name].to(torch.bfloat16) for name in ("q", "k", "v", "beta")})
    # The reference sees the same bf16-rounded inputs, so only the kernels' own precision is measured.
    o_ref, state_ref = run(recurrent_gated_delta_rule, {name: x.float().cpu() for name, x in cuda.items()})
    for mode in ("fla", "auto"):
        o, state = run(gated_delta_rule, cuda, mode=mode)
        assert o.dtype == torch.bfloat16 and state.dtype == torch.float32
        assert_close(f"o ({mode})", o.float().cpu(), o_ref, 2e-2)
        assert_close(f"final_state ({mode})", state.cpu(), state_ref, 2e-2)


def test_l2norm_and_fusion_keep_fp64_in_fp64():
    """fp64 inputs (the gradient checks') are normalised in fp64: in fp32 they were off by ~1e-8."""
    from hydrahead.layers.fusion import BranchNorm, fuse
    from hydrahead.ops import l2norm

    x = torch.randn(3, 5, 8, dtype=torch.float64)
    exact = x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(l2norm(x), exact, rtol=1e-13, atol=1e-15)
    norm = BranchNorm(5, 8, 1e-6).double()
    out = x[None].clone()  # (1, 3, 5, 8): batch, tokens, heads, head_dim
    rms = torch.sqrt((out * out).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(fuse([out.clone()], [norm]), out / rms * norm.table(), rtol=1e-13, atol=1e-15)
