"""Where a CPU prefill's time goes, hybrid vs teacher: the piece size, and each GEMM shape in place vs alone.

On the CPU a hybrid's inference forward runs a long prompt in pieces whose temporaries stay within
`hydrahead.utils.memory.PIECE_BYTES` (`inference_piece`); the teacher runs it in one forward. This study takes
`bench/inference.py`'s 2-layer Qwen3-1.7B-shaped slice (fp32, paper preset, HydraHead 7:1) and
(1) times one prefill of the teacher and of the hybrid with the default pieces (31 MiB, even: `piece_sizes`),
the rule before 2026-12-07 (16 MiB, the last piece the rest), even pieces of 16 and 64 MiB, and one forward, in
rotated rounds in one process (min and median); (2) profiles one more prefill of each with input shapes
(torch.profiler) and times every GEMM shape it ran alone, the same number of times, so that a shape slower in
place than alone shows; (3) times the attention modules inside a few more prefills (the teacher's attention,
the hybrid's and its branches, the gated delta rule itself; wall time between forward hooks). docs/benchmarks.md,
"CPU speed at 86b9c68" and "Even pieces", cites it.

Usage:
  python experiments/prefill_pieces.py                      # a plain process (glibc's defaults)
  python experiments/prefill_pieces.py --allocator kept     # after hydrahead.keep_freed_memory()
  python experiments/prefill_pieces.py --length 16384 --rounds 2 --pieces-only   # (1) alone
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import inference as bench  # noqa: E402

import hydrahead.layers.gdn as gdn  # noqa: E402
import hydrahead.models.hybrid as hybrid  # noqa: E402
import hydrahead.utils.memory as memory  # noqa: E402
from hydrahead import keep_freed_memory  # noqa: E402
from hydrahead.layers.full_attention import FullAttentionBranch  # noqa: E402
from hydrahead.layers.gdn import GatedDeltaNetBranch  # noqa: E402

DEFAULT_PIECE_BYTES = memory.PIECE_BYTES


def pieces_before(bytes_per_token: int, tokens: int, multiple: int = 64) -> list[int]:
    """The piece rule before 2026-12-07: at most 16 MiB of temporaries, the last piece whatever is left."""
    piece = max(multiple, (16 << 20) // max(1, bytes_per_token) // multiple * multiple)
    return [min(piece, tokens - start) for start in range(0, tokens, piece)] or [tokens]


# name: (model, PIECE_BYTES, piece rule)
CONFIGS = {"teacher": ("teacher", DEFAULT_PIECE_BYTES, hybrid.piece_sizes),
           "7:1, default pieces": ("hydrahead-7:1", DEFAULT_PIECE_BYTES, hybrid.piece_sizes),
           "7:1, 16 MiB, before": ("hydrahead-7:1", 16 << 20, pieces_before),
           "7:1, 16 MiB, even": ("hydrahead-7:1", 16 << 20, hybrid.piece_sizes),
           "7:1, 64 MiB, even": ("hydrahead-7:1", 64 << 20, hybrid.piece_sizes),
           "7:1, one forward": ("hydrahead-7:1", 1 << 50, hybrid.piece_sizes)}


def gemm_times(model, ids: torch.Tensor) -> dict[tuple, tuple[int, float]]:
    """(A's shape, B's shape, bias) -> (calls, seconds in place) of every mm / addmm in one prefill."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        bench.time_prefill(model, ids)
    shapes = {}
    for event in prof.key_averages(group_by_input_shape=True):
        if event.key in ("aten::mm", "aten::addmm"):
            a, b = event.input_shapes[:2] if event.key == "aten::mm" else event.input_shapes[1:3]
            shapes[(tuple(a), tuple(b), event.key == "aten::addmm")] = (event.count, event.self_cpu_time_total / 1e6)
    return shapes


def alone(shape: tuple, calls: int, rounds: int = 3) -> float:
    """Seconds for `calls` GEMMs of this shape on fresh random inputs, the minimum of `rounds`."""
    (m, k), (_, n), bias = shape
    x, w = torch.randn(m, k), torch.randn(n, k)
    b = torch.randn(n) if bias else None
    F.linear(x, w, b)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            F.linear(x, w, b)
        best = min(best, time.perf_counter() - start)
    return best


def module_times(model, ids: torch.Tensor, rounds: int = 3) -> list[dict[str, float]]:
    """Per prefill: its seconds, and the seconds spent inside the layers' attention modules (the teacher's
    `self_attn`; the hybrid's, its FA and GDN branches, and the gated delta rule called by the GDN branch)."""
    spent: dict[str, float] = {}
    started: dict[int, float] = {}

    def timer(name):
        def pre(module, args, kwargs=None):
            started[id(module)] = time.perf_counter()

        def post(module, args, *rest):
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - started.pop(id(module))
        return pre, post

    hooks = []
    for layer in model.model.layers:
        named = [("attention", layer.self_attn)]
        named += [(f"  {type(m).__name__}", m) for m in layer.self_attn.modules()
                  if isinstance(m, (FullAttentionBranch, GatedDeltaNetBranch))]
        for name, module in named:
            pre, post = timer(name)
            hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    rule = gdn.gated_delta_rule

    def timed_rule(*args, **kwargs):
        start = time.perf_counter()
        try:
            return rule(*args, **kwargs)
        finally:
            spent["    gated_delta_rule"] = spent.get("    gated_delta_rule", 0.0) + time.perf_counter() - start

    gdn.gated_delta_rule = timed_rule
    try:
        rows = []
        for _ in range(rounds):
            spent.clear()
            seconds = bench.time_prefill(model, ids)[0]
            rows.append({"prefill": seconds, **spent})
        return rows
    finally:
        gdn.gated_delta_rule = rule
        for hook in hooks:
            hook.remove()


def time_piece_rules(models: dict, ids: torch.Tensor, times: dict[str, list[float]], rounds: int) -> None:
    """One untimed prefill of each configuration, then `rounds` rotated rounds of timed ones into `times`."""
    rule = hybrid.piece_sizes
    try:
        for r in range(-1, rounds):
            for name in bench.rotated(list(CONFIGS), max(r, 0)):
                model, memory.PIECE_BYTES, hybrid.piece_sizes = CONFIGS[name]
                seconds = bench.time_prefill(models[model], ids)[0]
                if r >= 0:
                    times[name].append(seconds)
    finally:
        memory.PIECE_BYTES, hybrid.piece_sizes = DEFAULT_PIECE_BYTES, rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=4096, help="prompt tokens (default 4096)")
    parser.add_argument("--rounds", type=int, default=6, help="rotated rounds of the six prefills (default 6)")
    parser.add_argument("--allocator", choices=["plain", "kept"], default="plain")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--pieces-only", action="store_true", help="time the piece sizes only (part 1)")
    args = parser.parse_args()
    if args.allocator == "kept":
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    built = types.SimpleNamespace(models=["teacher", "hydrahead-7:1"], layers=2, vocab=10240, dtype="fp32",
                                  device="cpu")
    models = bench.build_models(built)
    ids = torch.randint(0, 10240, (1, args.length), generator=torch.Generator().manual_seed(0))
    times = {name: [] for name in CONFIGS}
    with torch.no_grad():
        time_piece_rules(models, ids, times, args.rounds)
        print(f"prefill of {args.length} tokens, allocator {args.allocator}, {torch.get_num_threads()} threads, "
              f"{args.rounds} rounds (seconds)")
        teacher = statistics.median(times["teacher"])
        for name, seconds in times.items():
            print(f"  {name:20s} min {min(seconds):6.3f}  median {statistics.median(seconds):6.3f}  "
                  f"teacher / this (medians) {teacher / statistics.median(seconds):.3f}x")
        if args.pieces_only:
            return
        print("GEMMs of one prefill: in place (profiled) vs the same calls alone")
        for name in ("teacher", "hydrahead-7:1"):
            total_in_place = total_alone = 0.0
            for shape, (calls, in_place) in sorted(gemm_times(models[name], ids).items(), key=lambda s: -s[1][1]):
                by_itself = alone(shape, calls)
                total_in_place, total_alone = total_in_place + in_place, total_alone + by_itself
                (m, k), (_, n), bias = shape
                print(f"  {name:14s} {m:5d} x {k:5d} x {n:5d}{' +bias' if bias else '      '} {calls:3d} calls  "
                      f"in place {in_place:6.3f} s  alone {by_itself:6.3f} s  ({in_place / by_itself:.2f}x)")
            print(f"  {name:14s} all GEMMs: in place {total_in_place:.3f} s, alone {total_alone:.3f} s "
                  f"({total_in_place / total_alone:.2f}x)")
        print("seconds inside the attention modules, per prefill (3 prefills each)")
        for name in ("teacher", "hydrahead-7:1"):
            rows = module_times(models[name], ids)
            for key in ("prefill", "attention", "  FullAttentionBranch", "  GatedDeltaNetBranch",
                        "    gated_delta_rule"):
                if key not in rows[0]:
                    continue
                print(f"  {name:14s} {key:24s} " + "  ".join(f"{row[key]:6.3f}" for row in rows))


if __name__ == "__main__":
    main()
