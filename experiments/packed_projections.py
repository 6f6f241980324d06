"""What one GEMM for all of a hybrid layer's input projections would save in an eager decode step's host time.

A HybridHead 7:1 layer projects its input four times (the FA branch's q | k | v and its output gate, the GDN
branch's q | k | v and its gate / beta inputs a | b). This study copies the four weights into one matrix per
layer (a second copy of the weights: timing only, not a way to run), projects once at the top of the layer and
hands each branch its slice, then times an eager decode step as `bench/inference.py --sections host` does
(28 layers of Qwen3-1.7B's head layout at widths too narrow for arithmetic to count, 64 tokens cached, batch
1, the minimum of interleaved rounds of 100 steps). The packed model's logits are checked against the
unpacked one's first. The branches call their slice without a module call, so the figure is an upper bound
on the saving. docs/benchmarks.md, "Host time per eager decode step", cites it.

Usage:
  python experiments/packed_projections.py                                       # the CPU path
  TRITON_INTERPRET=1 python experiments/packed_projections.py --fla-interpreted  # the CUDA path (fla kernels skipped)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import inference as bench  # noqa: E402

from hydrahead.layers.hybrid_attention import HybridAttention  # noqa: E402


def packed_copy(model):
    """A copy of `model` whose hybrid layers project their input once (weights copied into one matrix)."""
    model = copy.deepcopy(model)
    for layer in model.model.layers:
        attention = layer.self_attn
        owners = [(attention.fa, "qkv_proj"), (attention.fa, "gate_proj"), (attention.gdn, "qkv_proj"),
                  (attention.gdn, "ab_proj")]
        linears = [getattr(owner, name) for owner, name in owners]
        weight = torch.cat([m.weight for m in linears])
        bias = torch.cat([m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in linears])
        slices: dict[str, tuple[torch.Tensor, ...]] = {}
        for i, (owner, name) in enumerate(owners):
            del owner._modules[name]
            object.__setattr__(owner, name, lambda x, i=i, slices=slices: slices["out"][i])
        attention.__dict__["packed"] = (weight, bias, [m.out_features for m in linears], slices)
    return model


def install_packed_forward() -> None:
    forward = HybridAttention.forward

    def packed_forward(self, hidden_states, *args, **kwargs):
        if "packed" in self.__dict__:
            weight, bias, sizes, slices = self.__dict__["packed"]
            slices["out"] = F.linear(hidden_states, weight, bias).split(sizes, dim=-1)
        return forward(self, hidden_states, *args, **kwargs)

    HybridAttention.forward = packed_forward


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fla-interpreted", action="store_true",
                   help="the hybrids' CUDA path, fla's kernels run in Triton's interpreter and their launches "
                        "skipped (start with TRITON_INTERPRET=1; needs triton and fla-core)")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    if args.fla_interpreted:
        from hydrahead.ops.gated_delta.interpret import interpret_fla_on_cpu

        interpret_fla_on_cpu()
    setup = argparse.Namespace(teacher=None, models=["teacher", "hydrahead-7:1"], dtype="fp32", device="cpu")
    models = bench.build_models(setup, layers=28, hidden=64, intermediate=128, vocab=512, head_dim=16)
    install_packed_forward()
    models["hydrahead-7:1 packed"] = packed_copy(models["hydrahead-7:1"])

    ids = torch.randint(0, 512, (1, 9))
    with torch.no_grad():
        want, got = (models[n](ids).logits for n in ("hydrahead-7:1", "hydrahead-7:1 packed"))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    names, best = list(models), {}
    with bench.kernels_skipped() if args.fla_interpreted else contextlib.nullcontext():
        for r in range(args.rounds):
            for name in bench.rotated(names, r):
                seconds = bench.time_decode(models[name], "dynamic", 64, 1, 100, bench.eager_step)
                best[name] = min(best.get(name, float("inf")), seconds)
    for name in names:
        print(f"{name:<22} {best[name] * 1e6 / 28:6.1f} us per layer   teacher / model x{best['teacher'] / best[name]:.3f}")


if __name__ == "__main__":
    main()
