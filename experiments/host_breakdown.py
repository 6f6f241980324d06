"""Where an eager decode step's (or a prompt's) host work goes: machine instructions inside named functions, per
decoder layer.

`bench/inference.py --sections instructions` counts a whole decode step; this study counts the instructions
spent inside one function at a time (a "zone": the teacher's attention, the hybrid's FA branch, its GDN
branch, fla's forward function, ...), on the same narrow models (the head layout of the bench's Qwen3-1.7B
slice at widths too narrow for arithmetic to count, 64 tokens cached, batch 1, dynamic cache). It runs itself
under valgrind's callgrind with collection off; the child wraps each zone's function in callgrind's
collect toggle (a client request from a small C shim compiled here: needs gcc and valgrind's headers), runs
--steps decode steps and dumps the count. A zone's figure includes everything its function calls, and a
function wrapped in several modules is wrapped in each. Figures are per layer: work a hybrid does once per
forward, in its first layer (the RoPE tables and the FA log scale, zones of their own), is spread over
--layers (4) here and over 28 in Qwen3-1.7B, so a hybrid layer reads a little heavier here. With --prefill T,
each counted forward is a prompt of T tokens from an empty cache instead of a decode step: on a GPU a prompt's
host work is hidden behind its kernels only when it takes less time than they do, and on the CPU the count
includes the arithmetic, so T is kept small (16).
docs/benchmarks.md, "Counted instead of timed", cites it.

Usage:
  python experiments/host_breakdown.py                                        # the CPU path (6 minutes)
  TRITON_INTERPRET=1 python experiments/host_breakdown.py --fla-interpreted   # the CUDA path (7 minutes)
  TRITON_INTERPRET=1 python experiments/host_breakdown.py --fla-interpreted --prefill 16   # a prompt's forward
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import inference as bench  # noqa: E402

SHIM = "#include <valgrind/callgrind.h>\nvoid toggle(void) { CALLGRIND_TOGGLE_COLLECT; }\n" \
       "void zero(void) { CALLGRIND_ZERO_STATS; }\nvoid dump(const char *s) { CALLGRIND_DUMP_STATS_AT(s); }\n"
CHILD = "HYDRAHEAD_BREAKDOWN_SHIM"  # set in the child: the shim's path


def zones(models: dict) -> dict[str, list[tuple[str, list, str]]]:
    """Per model: (zone, the objects whose attribute is wrapped, the attribute). An empty zone (nothing wrapped)
    measures the toggles' own cost."""
    import transformers.models.qwen3.modeling_qwen3 as qwen3

    import hydrahead.layers.context as context
    import hydrahead.layers.full_attention as fa
    import hydrahead.layers.fusion as fusion
    import hydrahead.layers.gdn as gdn
    import hydrahead.layers.hybrid_attention as hybrid
    import hydrahead.layers.short_conv as short_conv

    teacher = [("layer", [qwen3.Qwen3DecoderLayer], "forward"), ("attention", [qwen3.Qwen3Attention], "forward"),
               ("mlp", [qwen3.Qwen3MLP], "forward")]
    hybrids = [("layer", [qwen3.Qwen3DecoderLayer], "forward"), ("attention", [hybrid.HybridAttention], "forward"),
               ("mlp", [qwen3.Qwen3MLP], "forward"), ("FA branch", [fa.FullAttentionBranch], "forward"),
               ("GDN branch", [gdn.GatedDeltaNetBranch], "forward"),
               ("GDN projections", [gdn.GatedDeltaNetBranch], "_project"),
               ("GDN short conv", [short_conv.ShortConv], "forward"),
               ("fla conv call (CUDA path, prompts)", [short_conv], "fla_short_conv"),
               ("GDN rule (norm weight, RoPE, gates, step)", [gdn.GatedDeltaNetBranch], "_rule"),
               ("fla call (CUDA path)", [gdn], "fla_gated_delta_net"), ("fusion", [hybrid], "fuse"),
               ("weight tables", [fa, gdn, fusion], "weight_table"),
               # made by the first layer for all (spread over --layers here, over 28 in Qwen3-1.7B)
               ("RoPE tables, per forward", [context.ForwardContext], "rotary"),
               ("FA log scale, per forward", [context.ForwardContext], "query_scale")]
    return {name: [("(toggles alone)", [], "")] + (teacher if name == "teacher" else hybrids) for name in models}


def wrapped(fn, shim):
    @functools.wraps(fn)
    def zone(*args, **kwargs):
        shim.toggle()
        try:
            return fn(*args, **kwargs)
        finally:
            shim.toggle()

    return zone


@torch.no_grad()
def child(args) -> None:
    """Under callgrind: per model and zone, --steps counted decode steps (or prompts of --prefill tokens) after
    three uncounted ones."""
    shim = ctypes.CDLL(os.environ[CHILD])
    torch.set_num_threads(1)  # as the instructions section: a second thread's spin-waits would be counted
    models = bench.narrow_models(args)
    named = zones(models)
    with bench.kernels_skipped() if args.fla_interpreted else contextlib.nullcontext():
        for name, model in models.items():
            cache = bench.filled_cache(model, "dynamic", 64, 1, room=64 * args.steps)
            token, position = torch.ones(1, 1, dtype=torch.long), torch.full((1, 1), 64, dtype=torch.long)
            prompt = torch.ones(1, args.prefill or 1, dtype=torch.long)
            for zone, owners, attr in named[name]:
                originals = [getattr(owner, attr) for owner in owners]
                for owner, original in zip(owners, originals):
                    setattr(owner, attr, wrapped(original, shim))
                for count in (3, args.steps):
                    if count == args.steps:
                        shim.zero()
                    for _ in range(count):
                        position += 1
                        if not owners:
                            shim.toggle(), shim.toggle()
                        if args.prefill:
                            bench.time_prefill(model, prompt)
                        else:
                            bench.eager_step(model, token, position, cache)
                shim.dump(f"{name}|{zone}".encode())
                for owner, original in zip(owners, originals):
                    setattr(owner, attr, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="teacher,hydrahead-7:1",
                        help="comma-separated, as bench/inference.py's --models")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the narrow models")
    parser.add_argument("--steps", type=int, default=8, help="counted decode steps (or prompts) per zone")
    parser.add_argument("--prefill", type=int, default=0, metavar="T",
                        help="count a prompt of T tokens from an empty cache instead of a decode step")
    parser.add_argument("--fla-interpreted", action="store_true",
                        help="the hybrids' CUDA path: fla's kernels in Triton's interpreter, their launches skipped "
                             "(set TRITON_INTERPRET=1)")
    args = parser.parse_args()
    args.models = args.models.split(",")
    args.ops_layers, args.layers, args.dtype, args.device, args.vocab = args.layers, args.layers, "fp32", "cpu", 512
    args.teacher = args.plan = None
    if args.fla_interpreted:
        from hydrahead.ops.gated_delta.interpret import interpret_fla_on_cpu

        interpret_fla_on_cpu()
    if CHILD in os.environ:
        return child(args)
    with tempfile.TemporaryDirectory() as out:  # the shim, for the child to load
        shim = f"{out}/shim.so"
        built = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-x", "c", "-", "-o", shim], input=SHIM,
                               text=True, capture_output=True)
        if built.returncode != 0:
            raise SystemExit(f"could not build the callgrind shim (needs gcc and valgrind's headers):\n{built.stderr}")
        totals = bench.callgrind_totals("--collect-atstart=no", {CHILD: shim})
    counts: dict[str, dict[str, int]] = {}
    for trigger, total in totals.items():
        if trigger.startswith("Client Request: "):  # "Client Request: <model>|<zone>"
            name, _, label = trigger.removeprefix("Client Request: ").partition("|")
            counts.setdefault(name, {})[label] = total
    per_layer, named = args.steps * args.layers, zones(args.models)
    for name in args.models:
        what = f"prompt of {args.prefill} tokens" if args.prefill else "decode step"
        print(f"\n{name}: K instructions per decoder layer and {what} (a zone includes what it calls)")
        for zone, *_ in named[name]:
            print(f"  {zone:<44} {counts[name][zone] / per_layer / 1e3:8.1f}")


if __name__ == "__main__":
    main()
