"""The hybrid's CUDA code path (fla's Triton kernels with the L2 norm, gate and beta inside them, and fla's short
conv for prompts) run on the CPU through Triton's interpreter, in fp32, against the PyTorch reference path of
the same model: prefill, a prompt in pieces through one cache, decode steps, packed documents (cu_seqlens),
the backward (fla's in-kernel gate gradients for A_log and dt_bias, the conv's), the short conv alone,
generate, and bench/inference.py's count of fla's launches. What a GPU run would catch in our calls
(argument names, layouts, initial and final states, the state handed from the prompt to the steps) is caught
here without one; bf16 numerics and speed are not.

Needs `triton` and `fla-core` (not test dependencies: skipped without them). To run it:
    pip install -e ".[dev,gpu]" triton
    pytest tests/ops/test_fla_interpreted.py
Each check runs in its own process, started with TRITON_INTERPRET=1 (Triton reads it at its import), after
`hydrahead.ops.gated_delta.interpret.interpret_fla_on_cpu()`, which opens hydrahead's fla dispatch to CPU
tensors; the checks switch it off for the reference.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hydrahead.ops.gated_delta import fla

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ["prefill_and_decode", "fla_prompt_pytorch_steps", "shared_kv_qwen2", "packed_documents", "backward",
          "generate", "generate_static", "bench_counts_fla_launches", "short_conv", "prompt_in_pieces",
          "op_decode_step", "op_prompt", "op_one_token_backward", "op_decay_of_zero"]
TOL = 1e-4  # fp32 on both sides; fla's chunk kernel vs ours differ by ~1e-6 at the op


@pytest.mark.slow
@pytest.mark.parametrize("check", CHECKS)
def test_fla_path_matches_the_pytorch_path(check):
    if importlib.util.find_spec("triton") is None or importlib.util.find_spec("fla") is None:
        pytest.skip("needs triton and fla-core (see this module's docstring)")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    run = subprocess.run([sys.executable, __file__, check], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"ok {check}" in run.stdout, run.stdout[-3000:]


# ---- run in the child process -----------------------------------------------------------------------------


class FlaSwitch:
    """hydrahead's dispatch to fla (in Triton's interpreter) open to CPU tensors while `on`; counts the fla
    calls (the gated delta rule's in `calls`, the short conv's in `conv_calls`, inference decode steps through
    fla's kernel launched directly in `decode_calls`, inference prompts through fla's forward function in
    `prompt_calls`) so that a check fails if the path it means to test was never taken."""

    def __init__(self):
        import hydrahead.layers.gdn as gdn
        import hydrahead.layers.short_conv as short_conv
        from hydrahead.ops.gated_delta.interpret import interpret_fla_on_cpu

        interpret_fla_on_cpu()
        self.calls, self._call = 0, gdn.fla_gated_delta_net
        gdn.fla_gated_delta_net = self._counted
        self.conv_calls, self._conv = 0, short_conv.fla_short_conv
        short_conv.fla_short_conv = self._counted_conv
        self.decode_calls, self._decode = 0, fla._decode_forward
        fla._decode_forward = self._counted_decode
        self.prompt_calls, self._prompt = 0, fla._prompt_forward
        fla._prompt_forward = self._counted_prompt
        self.on = False

    @property
    def on(self) -> bool:
        return fla.CPU_INTERPRETED

    @on.setter
    def on(self, value: bool) -> None:
        fla.CPU_INTERPRETED = value

    def _counted(self, *args, **kwargs):
        self.calls += 1
        return self._call(*args, **kwargs)

    def _counted_conv(self, *args, **kwargs):
        self.conv_calls += 1
        return self._conv(*args, **kwargs)

    def _counted_decode(self, *args, **kwargs):
        self.decode_calls += 1
        return self._decode(*args, **kwargs)

    def _counted_prompt(self, *args, **kwargs):
        self.prompt_calls += 1
        return self._prompt(*args, **kwargs)

    def both(self, fn, need=("calls", "conv_calls")):
        """fn() on the PyTorch path, then on the fla path: (reference, fla result). Each fla call counter named
        in `need` must have moved on the fla path (the gated delta rule's, the short conv's)."""
        self.on, before = False, {name: getattr(self, name)
                                  for name in ("calls", "conv_calls", "decode_calls", "prompt_calls")}
        ref = fn()
        assert all(getattr(self, name) == count for name, count in before.items()), "the reference took fla's path"
        self.on = True
        try:
            got = fn()
        finally:
            self.on = False
        for name in need:
            assert getattr(self, name) > before[name], f"fla's path was never taken ({name})"
        return ref, got


def rel_err(got, ref) -> float:
    return ((got.double() - ref.double()).norm() / ref.double().norm()).item()


def hybrid(family="qwen3", shared_kv=False):
    import hydrahead
    from hydrahead import HeadPlan, HybridOptions
    from tests.conftest import make_teacher

    teacher = make_teacher(family, hidden_size=64, head_dim=32)
    options = HybridOptions.preset("paper", gdn_shared_kv=shared_kv)
    model = hydrahead.convert(teacher, HeadPlan(((0,), (3,)), 4, 2), options).eval()
    with torch.no_grad():  # as after training: a conversion's conv is the identity and its gates input-blind
        for name, p in model.named_parameters():
            if name.endswith(("conv.weight", "ab_proj.weight")):
                p.normal_(0, 0.5)
    return model


def prefill_then_steps(model, ids, prompt):
    import hydrahead

    cache = hydrahead.HybridHeadCache(model.config)
    logits = [model(ids[:, :prompt], past_key_values=cache, use_cache=True).logits]
    for t in range(prompt, ids.shape[1]):
        logits.append(model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits)
    return torch.cat(logits, 1), cache


def check_prefill_and_decode(switch, family="qwen3", shared_kv=False):
    model = hybrid(family, shared_kv)
    ids = torch.randint(0, model.config.vocab_size, (2, 140))
    with torch.no_grad():
        (ref, ref_cache), (got, got_cache) = switch.both(lambda: prefill_then_steps(model, ids, 136),
                                                         need=("calls", "conv_calls", "decode_calls", "prompt_calls"))
    assert rel_err(got, ref) < TOL, rel_err(got, ref)
    for layer, (a, b) in enumerate(zip(ref_cache.layers, got_cache.layers)):
        assert rel_err(b.recurrent_state(), a.recurrent_state()) < TOL, layer
    states = [layer.recurrent_state() for layer in got_cache.layers]
    switch.on = True
    try:
        with torch.no_grad():
            model(ids[:, -1:], past_key_values=got_cache, use_cache=True)
    finally:
        switch.on = False
    assert all(layer.recurrent_state() is state for layer, state in zip(got_cache.layers, states)), \
        "a decode step through fla's kernel writes the cached state in place"


def check_fla_prompt_pytorch_steps(switch):
    """As a compiled decode runs on CUDA: the prompt through fla's chunk kernel, the steps through the PyTorch
    step (`torch.compiler.is_compiling()` turns fla off there), from the state fla left in the cache."""
    import hydrahead

    model = hybrid()
    ids = torch.randint(0, model.config.vocab_size, (2, 140))
    cache = hydrahead.HybridHeadCache(model.config)
    with torch.no_grad():
        ref, _ = prefill_then_steps(model, ids, 136)
        switch.on, calls = True, switch.calls
        logits = [model(ids[:, :136], past_key_values=cache, use_cache=True).logits]
        switch.on, prompt_calls = False, switch.calls - calls
        logits += [model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits for t in range(136, 140)]
    assert prompt_calls > 0 and switch.calls == calls + prompt_calls
    got = torch.cat(logits, 1)
    assert rel_err(got, ref) < TOL, rel_err(got, ref)


def check_shared_kv_qwen2(switch):
    check_prefill_and_decode(switch, "qwen2", shared_kv=True)


def check_packed_documents(switch):
    model = hybrid()
    ids = torch.randint(0, model.config.vocab_size, (2, 120))
    position_ids = torch.cat([torch.arange(50), torch.arange(70)])[None].expand(2, -1)
    with torch.no_grad():
        ref, got = switch.both(lambda: model(ids, position_ids=position_ids, use_cache=False).logits)
    assert rel_err(got, ref) < TOL, rel_err(got, ref)


def check_backward(switch):
    model = hybrid().train()
    ids = torch.randint(0, model.config.vocab_size, (2, 100))

    def grads():
        model.zero_grad()
        model(ids, labels=ids, use_cache=False).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    prompts = switch.prompt_calls
    ref, got = switch.both(grads)
    assert switch.prompt_calls == prompts, "with autograd on, fla's autograd Function (its backward) is needed"
    assert ref.keys() == got.keys()
    assert any(n.endswith("A_log") for n in got) and any(n.endswith("dt_bias") for n in got)
    for name in ref:
        assert rel_err(got[name], ref[name]) < 10 * TOL, (name, rel_err(got[name], ref[name]))


def check_generate(switch, **kwargs):
    model = hybrid()
    model.generation_config.eos_token_id = None
    ids = torch.randint(1, model.config.vocab_size, (2, 70))
    ref, got = switch.both(lambda: model.generate(ids, max_new_tokens=8, do_sample=False, **kwargs))
    assert torch.equal(got, ref)


def check_generate_static(switch):
    """The cache a plain generate takes on CUDA (static; its decode step compiled there, eager here)."""
    check_generate(switch, cache_implementation="static")


def check_bench_counts_fla_launches(switch):
    """bench/inference.py's op count (`--fla-interpreted`) sees fla's Triton launches: one fused recurrent kernel
    per GDN layer in a decode step, and counts them among the layer's kernels."""
    sys.path.insert(0, str(ROOT / "bench"))
    from inference import layer_ops

    model = hybrid()
    with torch.no_grad():
        switch.on = False
        plain, plain_launches = layer_ops(model, 1, 16)
        switch.on = True
        fused, launches = layer_ops(model, 1, 16)
        _, prefill_launches = layer_ops(model, 64, 0)
    assert plain_launches == 0 and launches == len(model.model.layers) and prefill_launches > launches
    assert all(f < p for f, p in zip(fused, plain))  # the L2 norm, gate and step in one kernel


def op_inputs(tokens: int):
    """q, k (L2-normalised), v, the log decay g, beta and a state for the op-level checks."""
    import torch.nn.functional as F

    q, k = (F.normalize(torch.randn(2, tokens, 3, 16), dim=-1) for _ in range(2))
    return q, k, torch.randn(2, tokens, 3, 16), -torch.rand(2, tokens, 3), torch.rand(2, tokens, 3), torch.randn(2, 3, 16, 16)


def op_matches_reference(switch, counter: str, inputs, initial, mode: str, taken: bool = True):
    """`fla_gated_delta_rule` (the `fla` mode of `hydrahead.ops.gated_delta_rule`: the log decay and beta given,
    no gate or norm in the kernels) from `initial` against the fp32 reference `mode`; `taken`: through the direct
    path that `counter` counts. Returns fla's final state."""
    from hydrahead.ops import gated_delta_rule

    q, k, v, g, beta, _ = inputs
    with torch.no_grad():
        ref, ref_state = gated_delta_rule(q, k, v, g, beta, initial_state=initial, output_final_state=True, mode=mode)
        calls = getattr(switch, counter)
        got, got_state = fla.fla_gated_delta_rule(q, k, v, g, beta, initial_state=initial, output_final_state=True)
    assert getattr(switch, counter) == calls + taken, f"the direct path was {'not ' if taken else ''}taken ({counter})"
    assert rel_err(got, ref) < TOL and rel_err(got_state, ref_state) < TOL
    return got_state


def check_op_decode_step(switch):
    """One token after a state, through the directly launched decode kernel, against the fp32 recurrent
    reference; the caller's state is read, not overwritten (only a hybrid's decode step hands over its cached
    state to be updated in place)."""
    inputs = op_inputs(1)
    state = inputs[-1]
    kept = state.clone()
    assert op_matches_reference(switch, "decode_calls", inputs, state, "recurrent") is not state
    assert torch.equal(state, kept)


def check_op_one_token_backward(switch):
    """One token under autograd (a packed batch of one token, a training step of length 1): fla's fused recurrent
    kernel has no backward, so the chunk kernel runs it; outputs and gradients against the recurrent reference,
    with cu_seqlens given on the host (the PyTorch path takes it there too)."""
    inputs = [t.requires_grad_() for t in op_inputs(1)]

    def run(cu_seqlens):
        for t in inputs:
            t.grad = None
        q, k, v, g, beta, state = inputs
        o, final = fla.fla_gated_delta_rule(q[:1], k[:1], v[:1], g[:1], beta[:1], initial_state=state[:1],
                                            output_final_state=True, cu_seqlens=cu_seqlens) if switch.on else \
            gated_delta_rule(q[:1], k[:1], v[:1], g[:1], beta[:1], initial_state=state[:1], output_final_state=True,
                             mode="recurrent")
        ((o * torch.cos(o.detach())).sum() + final.sin().sum()).backward()
        return [o.detach(), final.detach()] + [t.grad.clone() for t in inputs]

    from hydrahead.ops import gated_delta_rule

    for cu_seqlens in (None, torch.tensor([0, 1])):
        switch.on = False
        ref = run(None)
        switch.on = True
        try:
            got = run(cu_seqlens)
        finally:
            switch.on = False
        for a, b in zip(ref, got):
            assert rel_err(b, a) < TOL, (cu_seqlens is not None, rel_err(b, a))


def check_op_prompt(switch):
    """A hybrid's call for a prompt (raw q, k, gate and beta inputs; the L2 norm in fla's kernel or done before
    it, `normalized`) through fla's forward function called directly, without and after a state, against the fp32
    chunked reference, the caller's state left alone; the op with the log decay and beta given through fla's public
    function (which may choose another of fla's backends for it); and `fla_l2norm`, the one-launch L2 norm of a
    hybrid's q and k heads, against the PyTorch one."""
    import torch.nn.functional as F

    from hydrahead.ops import gated_delta_rule, l2norm

    inputs = op_inputs(70)
    v, state = inputs[2], inputs[-1]
    kept = state.clone()
    for initial in (None, state):
        op_matches_reference(switch, "prompt_calls", inputs, initial, "chunk", taken=False)
    q_raw, k_raw, a, b = torch.randn(2, 70, 3, 16), torch.randn(2, 70, 3, 16), torch.randn(2, 70, 3), torch.randn(2, 70, 3)
    A_log, dt_bias = torch.rand(3), torch.rand(3) - 2
    g = -A_log.exp() * F.softplus(a + dt_bias)
    with torch.no_grad():
        for initial in (None, state):
            ref, ref_state = gated_delta_rule(l2norm(q_raw), l2norm(k_raw), v, g, b.sigmoid(), initial_state=initial,
                                              output_final_state=True, mode="chunk")
            calls = switch.prompt_calls
            for got, got_state in (
                    fla.fla_gated_delta_net(q_raw, k_raw, v, a, b, A_log, dt_bias, initial_state=initial,
                                            output_final_state=True),
                    fla.fla_gated_delta_net(l2norm(q_raw), l2norm(k_raw), v, a, b, A_log, dt_bias,
                                            initial_state=initial, output_final_state=True, normalized=True)):
                assert rel_err(got, ref) < TOL and rel_err(got_state, ref_state) < TOL
            assert switch.prompt_calls == calls + 2, "fla's forward function was not called directly"
    assert torch.equal(state, kept)
    x = torch.randn(2, 70, 5, 16)[:, :, 1:]  # a view, as a projection's heads are
    with torch.no_grad():
        assert rel_err(fla.fla_l2norm(x), l2norm(x)) < TOL
    assert fla.fla_l2norm(x.requires_grad_()) is None  # autograd on: fla's Function, which has the backward


def check_op_decay_of_zero(switch):
    """A log decay of -inf (a decay of 0) or a huge finite one, at a few positions of a prompt and as one decode
    step, against the fp64 recurrent reference: fla's chunk kernel gave NaN for -inf and an error of 0.6 for
    -1e7 (its prefix sums of the log decay), before `fla_gated_delta_rule` floored it as the chunk op does."""
    from hydrahead.ops import gated_delta_rule

    q, k, v, _, beta, state = op_inputs(70)
    for low in (float("-inf"), -1e7):
        g = -torch.rand(2, 70, 3)
        g[:, 10], g[1, 40, 2] = low, low
        with torch.no_grad():
            for end in (70, 11):  # the prompt; then the token at 10 alone, a decode step
                start = 0 if end == 70 else 10
                inputs = [x[:, start:end] for x in (q, k, v, g, beta)]
                ref, ref_state = gated_delta_rule(*(x.double() for x in inputs), initial_state=state.double(),
                                                  output_final_state=True, mode="recurrent")
                got, got_state = fla.fla_gated_delta_rule(*inputs, initial_state=state, output_final_state=True)
                assert rel_err(got, ref.float()) < TOL and rel_err(got_state, ref_state.float()) < TOL, (low, end)


def check_short_conv(switch):
    """The short conv alone: prompts longer and shorter than the kernel after cached inputs (fla's initial
    state), without a cache, packed documents (cu_seqlens), the cache it leaves, and the gradients of its
    input and weight."""
    import hydrahead
    from hydrahead.layers.context import packed_documents
    from hydrahead.layers.short_conv import ShortConv
    from tests.conftest import make_teacher

    conv = ShortConv(48, 4)
    with torch.no_grad():
        conv.weight.normal_()
    x = torch.randn(2, 150, 48)
    config = make_teacher().config

    def pieces(bounds):
        cache = hydrahead.HybridHeadCache(config).layers[0]
        out = torch.cat([conv(x[:, a:b], cache) for a, b in zip(bounds, bounds[1:])], dim=1)
        return out, cache.conv_states[0].clone()

    calls = switch.conv_calls
    for bounds in ([0, 150], [0, 2, 70, 72, 73, 150], [0, 1, 3, 100, 150]):
        (ref, ref_state), (got, got_state) = switch.both(lambda: pieces(bounds), need=("conv_calls",))
        assert rel_err(got, ref) < TOL and torch.equal(got_state, ref_state), bounds
    assert switch.conv_calls - calls == 1 + 4 + 3  # every piece of more than one token
    documents = packed_documents(torch.cat([torch.arange(50), torch.arange(100)])[None], 2, 150)
    x.requires_grad_(True)
    for docs, start in ((None, 0), (documents, 0), (None, 70)):  # start > 0: after cached inputs (fla's state)

        def run():
            conv.zero_grad()
            x.grad = None
            cache = None
            if start:
                cache = hydrahead.HybridHeadCache(config).layers[0]
                with torch.no_grad():
                    conv(x[:, :start], cache)
            y = conv(x[:, start:], cache, docs)
            y.backward(torch.cos(y.detach() * 3))
            return y.detach(), x.grad.clone(), conv.weight.grad.clone()

        for a, b in zip(*switch.both(run, need=("conv_calls",))):
            assert rel_err(b, a) < TOL, (docs is not None, start, rel_err(b, a))


def check_prompt_in_pieces(switch):
    """A prompt run as several forwards through one cache (a chat's later turns, chunked prefill): fla's conv
    and chunk kernel start from the conv inputs and the state the earlier pieces left."""
    model = hybrid()
    ids = torch.randint(0, model.config.vocab_size, (2, 140))

    def pieces():
        import hydrahead

        cache = hydrahead.HybridHeadCache(model.config)
        return torch.cat([model(ids[:, a:b], past_key_values=cache, use_cache=True).logits
                          for a, b in ((0, 60), (60, 62), (62, 140))], dim=1)

    with torch.no_grad():
        ref, got = switch.both(pieces)
    assert rel_err(got, ref) < TOL, rel_err(got, ref)


if __name__ == "__main__":
    torch.manual_seed(0)
    torch.set_num_threads(1)
    name = sys.argv[1]
    globals()[f"check_{name}"](FlaSwitch())
    print(f"ok {name}")
