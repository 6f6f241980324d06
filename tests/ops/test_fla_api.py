"""The fla-style call: keyword arguments as fla names them, packed sequences (cu_seqlens), in-kernel q/k
L2 norm, grouped value heads, and typed errors for the silent misuses. The reference is fla's naive
recurrent gated delta rule, written here from its definition (fla's argument order: beta before g)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hydrahead.ops import GatedDeltaRuleError, gated_delta_rule

MODES = ["recurrent", "chunk"]


def fla_naive_recurrent(q, k, v, beta, g, scale=None, initial_state=None, output_final_state=False):
    """fla's `naive_recurrent_gated_delta_rule` semantics, in fp64: per step S = a (I - b k k^T) S + b k v^T,
    o = scale * S^T q, inputs (B, T, H, D)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    q, k, v, beta, g = (x.double() for x in (q, k, v, beta, g))
    S = torch.zeros(B, H, K, V, dtype=torch.float64) if initial_state is None else initial_state.double().clone()
    eye = torch.eye(K, dtype=torch.float64)
    o = torch.zeros(B, T, H, V, dtype=torch.float64)
    for t in range(T):
        k_t, v_t, b_t, a_t = k[:, t], v[:, t], beta[:, t, :, None, None], g[:, t].exp()[..., None, None]
        outer = k_t[..., :, None] * k_t[..., None, :]  # (B, H, K, K)
        S = a_t * ((eye - b_t * outer) @ S) + b_t * k_t[..., :, None] * v_t[..., None, :]
        o[:, t] = scale * (S * q[:, t, :, :, None]).sum(-2)
    return o, (S if output_final_state else None)


def inputs(B, T, H, K, V, HV=None, normalise=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    HV = HV or H
    q, k = torch.randn(B, T, H, K, generator=gen), torch.randn(B, T, H, K, generator=gen)
    if normalise:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    return dict(q=q, k=k, v=torch.randn(B, T, HV, V, generator=gen),
                g=F.logsigmoid(torch.randn(B, T, HV, generator=gen)),
                beta=torch.rand(B, T, HV, generator=gen))


def close(actual, expected, tol=2e-5):
    err = (actual.double() - expected.double()).abs().max() / expected.double().abs().max()
    assert err < tol, f"relative error {err:.2e}"


# the shapes of fla's own tests for this op, at CPU-affordable lengths
SHAPES = [(1, 63, 1, 64, 64), (2, 100, 3, 60, 32), (2, 300, 4, 32, 64)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-H{}-K{}-V{}".format(*s))
def test_fla_style_keyword_call_matches_fla_naive(shape, mode):
    x = inputs(*shape)
    h0 = torch.randn(shape[0], shape[2], shape[3], shape[4])
    o, ht = gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"], scale=0.3, initial_state=h0,
                             output_final_state=True, mode=mode)
    o_ref, ht_ref = fla_naive_recurrent(x["q"], x["k"], x["v"], x["beta"], x["g"], scale=0.3, initial_state=h0,
                                        output_final_state=True)
    close(o, o_ref)
    close(ht, ht_ref)


@pytest.mark.parametrize("mode", MODES)
def test_cu_seqlens_resets_the_state_at_every_boundary(mode):
    bounds = [0, 15, 100, 100, 300]  # an empty sequence too
    x = inputs(1, 300, 2, 32, 16)
    h0 = torch.randn(len(bounds) - 1, 2, 32, 16)
    cu = torch.tensor(bounds, dtype=torch.int32)
    o, ht = gated_delta_rule(**x, initial_state=h0, output_final_state=True, cu_seqlens=cu, mode=mode)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if a == b:
            torch.testing.assert_close(ht[i], h0[i])
            continue
        part = {n: t[:, a:b] for n, t in x.items()}
        o_ref, ht_ref = fla_naive_recurrent(part["q"], part["k"], part["v"], part["beta"], part["g"],
                                            initial_state=h0[i : i + 1], output_final_state=True)
        close(o[:, a:b], o_ref)
        close(ht[i : i + 1], ht_ref)


@pytest.mark.parametrize("slow", [False, True])  # slow decay: a state that leaks over a start lasts chunks
@pytest.mark.parametrize("bounds", [[0, 15, 64, 64, 100, 128, 130, 300], [0, 1, 2, 200, 300, 300], [0, 300]])
def test_packed_sequences_without_states_run_in_one_pass_and_equal_one_call_each(bounds, slow, monkeypatch):
    """No state in or out (training, a packed prompt): the chunk path runs every sequence in one batched pass,
    its starts anywhere in a chunk (or on a chunk's edge, at the first token, empty ones). Outputs equal fla's
    naive recurrence per sequence; gradients equal those of one chunk call per sequence."""
    import hydrahead.ops.gated_delta as dispatch
    from hydrahead.ops.gated_delta import chunk_gated_delta_rule

    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs.get("resets") is not None)
        return chunk_gated_delta_rule(*args, **kwargs)

    monkeypatch.setattr(dispatch, "chunk_gated_delta_rule", counted)
    x = inputs(1, 300, 2, 32, 16)
    x["g"] = x["g"] * (0.01 if slow else 1.0)
    x = {n: t.requires_grad_() for n, t in x.items()}
    o, ht = gated_delta_rule(**x, cu_seqlens=torch.tensor(bounds, dtype=torch.int32), mode="chunk")
    assert ht is None and calls == [True]  # one call, with the starts
    weight = torch.randn_like(o)
    grads = torch.autograd.grad((o * weight).sum(), list(x.values()))
    pieces = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a == b:
            continue
        part = {n: t[:, a:b] for n, t in x.items()}
        o_ref, _ = fla_naive_recurrent(part["q"], part["k"], part["v"], part["beta"], part["g"])
        close(o[:, a:b], o_ref)
        pieces.append(chunk_gated_delta_rule(part["q"], part["k"], part["v"], part["g"], part["beta"])[0])
    expected = torch.autograd.grad((torch.cat(pieces, dim=1) * weight).sum(), list(x.values()))
    for name, got, want in zip(x, grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)


def test_cu_seqlens_gradients_flow_per_sequence():
    x = {n: t.requires_grad_() for n, t in inputs(1, 40, 2, 8, 8).items()}
    o, _ = gated_delta_rule(**x, cu_seqlens=torch.tensor([0, 17, 40]), mode="chunk")
    o[:, :17].sum().backward()
    assert x["v"].grad[:, 17:].abs().max() == 0 and x["v"].grad[:, :17].abs().max() > 0  # nothing leaks across


@pytest.mark.parametrize("mode", MODES)
def test_l2norm_in_kernel_equals_normalising_first(mode):
    x = inputs(2, 50, 2, 16, 16, normalise=False)
    o, _ = gated_delta_rule(**x, use_qk_l2norm_in_kernel=True, mode=mode)
    q = x["q"] / torch.sqrt(x["q"].pow(2).sum(-1, keepdim=True) + 1e-6)
    k = x["k"] / torch.sqrt(x["k"].pow(2).sum(-1, keepdim=True) + 1e-6)
    o_ref, _ = fla_naive_recurrent(q, k, x["v"], x["beta"], x["g"])
    close(o, o_ref)


@pytest.mark.parametrize("mode", MODES)
def test_grouped_value_heads(mode):
    x = inputs(2, 40, 2, 16, 8, HV=6)  # 3 value heads per q/k head
    h0 = torch.randn(2, 6, 16, 8)
    o, ht = gated_delta_rule(**x, initial_state=h0, output_final_state=True, mode=mode)
    q, k = x["q"].repeat_interleave(3, dim=2), x["k"].repeat_interleave(3, dim=2)
    o_ref, ht_ref = fla_naive_recurrent(q, k, x["v"], x["beta"], x["g"], initial_state=h0, output_final_state=True)
    assert o.shape == (2, 40, 6, 8)
    close(o, o_ref)
    close(ht, ht_ref)


def test_silent_misuses_are_typed_errors():
    x = inputs(2, 20, 4, 8, 8)
    with pytest.raises(TypeError, match="positional"):  # fla's positional order: scale sixth
        gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"], 0.5)
    with pytest.raises(GatedDeltaRuleError, match="g and beta look swapped"):  # fla's naive order
        gated_delta_rule(x["q"], x["k"], x["v"], x["beta"], x["g"])
    with pytest.raises(GatedDeltaRuleError, match="g must be a log decay"):
        gated_delta_rule(**{**x, "g": x["g"].abs() + 0.1})
    with pytest.raises(GatedDeltaRuleError, match=r"beta must be in \[0, 1\]"):
        gated_delta_rule(**{**x, "beta": x["beta"] * 3})
    head_first = {n: t.transpose(1, 2) for n, t in inputs(2, 20, 4, 8, 8).items()}  # (B, H, T, ...)
    with pytest.raises(GatedDeltaRuleError, match="looks like head-first"):
        gated_delta_rule(**head_first)
    with pytest.raises(GatedDeltaRuleError, match="cu_seqlens packs sequences into a batch of one"):
        gated_delta_rule(**x, cu_seqlens=torch.tensor([0, 20]))
    one = inputs(1, 20, 4, 8, 8)
    with pytest.raises(GatedDeltaRuleError, match="cu_seqlens must rise from 0 to T = 20"):
        gated_delta_rule(**one, cu_seqlens=torch.tensor([0, 12, 19]))
    with pytest.raises(GatedDeltaRuleError, match="initial_state has shape"):
        gated_delta_rule(**one, cu_seqlens=torch.tensor([0, 12, 20]), initial_state=torch.zeros(1, 4, 8, 8))
    short = inputs(1, 3, 8, 4, 4)  # really 3 tokens and 8 heads: said so explicitly
    assert gated_delta_rule(**short, head_first=False)[0].shape == (1, 3, 8, 4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fla_mode_takes_the_same_call_on_cuda():
    from hydrahead.ops.gated_delta.fla import fla_is_available

    if not fla_is_available():
        pytest.skip("fla is not installed")
    x = {n: t.cuda() for n, t in inputs(1, 300, 2, 64, 64, HV=4).items()}
    cu = torch.tensor([0, 15, 100, 300], device="cuda")
    h0 = torch.randn(3, 4, 64, 64, device="cuda")
    half = {n: (t.bfloat16() if n in ("q", "k", "v") else t) for n, t in x.items()}
    o, ht = gated_delta_rule(**half, initial_state=h0, output_final_state=True, cu_seqlens=cu, mode="fla")
    o_ref, ht_ref = gated_delta_rule(**x, initial_state=h0, output_final_state=True, cu_seqlens=cu, mode="chunk")
    close(o.float(), o_ref, tol=3e-2)
    close(ht, ht_ref, tol=3e-2)
