"""Inference speed: prefill latency and decode ms/token of hybrids against their teacher, with floors.

One random-weight Qwen3 config (default: Qwen3-1.7B's layer shape, hidden 2048, 16 query / 8 KV heads,
head_dim 128, intermediate 6144, a few layers) gives four models:

  teacher          Qwen3ForCausalLM itself
  hydrahead-7:1    one GQA group (2 of 16 query heads, 1 of 8 KV heads) FA per layer, the rest GDN
  layerwise-3:1    every head FA in one layer of four, GDN in the others
  all-gdn          no FA head

all converted with the paper preset; a name with "+shared" (e.g. hydrahead-7:1+shared) converts with
gdn_shared_kv=True (GDN heads share their GQA group's k/v projection, as the teacher's heads did). Every figure is timed interleaved (each repeat runs all models in a
rotated order) in one process and reported as the ratio teacher time / model time (above 1: faster).

  prefill   model(ids, use_cache=True, logits_to_keep=1) on a fresh cache: the prompt's forward pass
  decode    ms per generated token over --steps one-token forwards, from a cache already holding the
            context (filled with random K/V and states: decode cost depends on the cache's size, not its
            values); the teacher on transformers' dynamic and static caches, hybrids on our dynamic
            and static ones; each model's faster cache counts
  cache     bytes the hybrid's cache holds after a real prefill, against the plan's figure
            (`hydrahead.models.footprint`: K/V bytes per token x tokens + GDN state per sequence)

Floors, measured in the same run: prefill FLOPs (linear layers, causal FA attention, GDN chunk arithmetic)
over the measured GEMM rate; decode bytes (weights read once, K/V read, GDN state read and written) over
the measured copy bandwidth (read + write of a 512 MiB buffer), and the same bytes over the rate a
batch-1 matrix-vector product streams weights (what torch's GEMV reaches here). A ratio to the floor near 1 means the time is what the arithmetic or the
memory traffic costs; far above 1 means overhead.

Usage:
  python bench/inference.py                               # CPU defaults: 2 layers, fp32, 1K-32K
  python bench/inference.py --prefill 1024,4096 --decode 1024,4096 --repeats 1   # a quick look
  python bench/inference.py --device cuda --dtype bf16 --layers 4 --prefill 4096,...,262144
Writes --json (every number) and --plot (PNG), prints markdown tables.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import time
from pathlib import Path

import torch
from transformers import DynamicCache, Qwen3Config, Qwen3ForCausalLM, StaticCache

from hydrahead import HeadPlan, HybridHeadCache, HybridOptions, convert
from hydrahead.models.footprint import footprint
from hydrahead.utils.memory import keep_freed_memory

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODELS = ("teacher", "hydrahead-7:1", "layerwise-3:1", "all-gdn")


def build_models(args) -> dict[str, torch.nn.Module]:
    config = Qwen3Config(
        vocab_size=args.vocab, hidden_size=2048, intermediate_size=6144, num_hidden_layers=args.layers,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=1 << 20,
        rms_norm_eps=1e-6, tie_word_embeddings=True, attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    teacher = Qwen3ForCausalLM(config).eval()
    plans = {
        # the same GQA group in every layer: where the plan puts the group does not change the cost
        "hydrahead-7:1": HeadPlan(tuple((0, 1) for _ in range(args.layers)), 16, 8),
        "layerwise-3:1": HeadPlan.layerwise(config, "3:1"),
        "all-gdn": HeadPlan.none(config),
    }
    models = {"teacher": teacher}
    for name in args.models:
        if name != "teacher":
            base, _, variant = name.partition("+")
            if base not in plans or variant not in ("", "shared"):
                raise SystemExit(f"unknown model {name!r}; choose from {MODELS}, each optionally with '+shared'")
            options = HybridOptions.preset("paper", gdn_shared_kv=variant == "shared")
            models[name] = convert(teacher, plans[base], options).eval()
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    return {name: m.to(device, dtype) for name, m in models.items() if name in args.models}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---- floors ---------------------------------------------------------------------------------------------


def gemm_rate(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """FLOP/s of a (4096 x 2048) @ (2048 x 6144) matmul, the shape of a prefill's MLP up-projection."""
    a = torch.randn(4096, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 6144, device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * 4096 * 2048 * 6144 / min(times[1:])


def copy_bandwidth(device: torch.device, repeats: int = 5) -> float:
    """Bytes/s moved (read + written) by copying a 512 MiB buffer."""
    x = torch.empty(128 << 20, device=device, dtype=torch.float32).normal_()
    y = torch.empty_like(x)
    times = []
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        y.copy_(x)
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * x.nbytes / min(times[1:])


def matvec_bandwidth(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Weight bytes/s a matrix-vector product streams: (6144 x 2048) @ (2048,), the MLP shape at batch 1,
    over 8 different matrices (400 MB in fp32) so that no matrix is still in cache when it is read again."""
    weights = [torch.randn(6144, 2048, device=device, dtype=dtype) for _ in range(8)]
    x = torch.randn(2048, 1, device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        for w in weights:
            w @ x
        sync(device)
        times.append(time.perf_counter() - start)
    return sum(w.nbytes for w in weights) / min(times[1:])


def fa_and_gdn_heads(model) -> tuple[list[int], list[int]]:
    """Per layer: FA query heads, GDN heads (the teacher: all FA)."""
    plan = getattr(model, "hydrahead_plan", None)
    if plan is None:
        L, H = model.config.num_hidden_layers, model.config.num_attention_heads
        return [H] * L, [0] * L
    return plan.fa_heads_per_layer, [len(plan.gdn_heads(i)) for i in range(plan.num_layers)]


def linear_weights(model) -> int:
    """Weights of the decoder layers' linear maps (what a token's forward multiplies by)."""
    return sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))


def prefill_flops(model, tokens: int, chunk: int = 64) -> float:
    """Linear layers + causal softmax attention of the FA heads + chunked GDN arithmetic, batch 1."""
    D = model.config.head_dim
    fa, gdn = fa_and_gdn_heads(model)
    linear = 2.0 * linear_weights(model) * tokens
    attention = sum(fa) * 2.0 * D * tokens * (tokens + 1)  # QK^T and PV over the causal half
    c = min(chunk, tokens)
    # per token and head: six (C x D) products inside the chunk, the triangular solve, three state products
    gdn_per_token = 2 * c * 6 * D + (2 / 3) * c * c + 6 * D * D
    return linear + attention + sum(gdn) * tokens * gdn_per_token


def decode_bytes(model, context: int, batch: int) -> float:
    """Bytes one decode step must move at least: every weight once (the LM head included), the cached K/V
    of the context, and each GDN state read and written."""
    config = model.config
    item = next(model.parameters()).element_size()
    weights = (sum(p.numel() for p in model.model.layers.parameters()) + config.vocab_size * config.hidden_size) * item
    plan = getattr(model, "hydrahead_plan", None)
    kv_heads = sum(plan.fa_kv_heads_per_layer) if plan is not None else config.num_hidden_layers * config.num_key_value_heads
    kv = batch * context * 2 * kv_heads * config.head_dim * item
    _, gdn = fa_and_gdn_heads(model)
    state = 2 * batch * sum(gdn) * config.head_dim * config.head_dim * 4
    return weights + kv + state


# ---- caches ---------------------------------------------------------------------------------------------


def filled_cache(model, kind: str, context: int, batch: int, room: int):
    """A cache that holds `context` tokens of random K/V and states, with room for `room` more."""
    config, device, dtype = model.config, model.device, model.dtype
    D, L = config.head_dim, config.num_hidden_layers
    gen = torch.Generator(device="cpu").manual_seed(1)

    def rand(*shape, dtype=dtype):
        return (0.1 * torch.randn(*shape, generator=gen)).to(device, dtype)

    plan = getattr(model, "hydrahead_plan", None)
    if plan is None:
        cache = DynamicCache(config=config) if kind == "dynamic" else StaticCache(config=config, max_cache_len=context + room)
        for i in range(L):
            kv = config.num_key_value_heads
            cache.update(rand(batch, kv, context, D), rand(batch, kv, context, D), i)
        return cache
    cache = HybridHeadCache(config, max_cache_len=None if kind == "dynamic" else context + room, device=device)
    conv = model.hydrahead_options.conv_size
    for i, layer in enumerate(cache.layers):
        kv, gdn = plan.fa_kv_heads_per_layer[i], len(plan.gdn_heads(i))
        if kv:
            layer.update(rand(batch, kv, context, D), rand(batch, kv, context, D))
        if gdn:
            branch = model.model.layers[i].self_attn.gdn
            if branch.conv is not None:
                layer.conv_window(rand(batch, conv, branch.conv.weight.shape[0]), conv)
            layer.store_recurrent_state(rand(batch, gdn, D, D, dtype=torch.float32))
        layer.advance(context)
    return cache


# ---- timing ---------------------------------------------------------------------------------------------


@torch.no_grad()
def time_prefill(model, ids: torch.Tensor) -> tuple[float, object]:
    cache = HybridHeadCache(model.config) if hasattr(model, "hydrahead_plan") else DynamicCache(config=model.config)
    sync(ids.device)
    start = time.perf_counter()
    model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    sync(ids.device)
    return time.perf_counter() - start, cache


@torch.no_grad()
def time_decode(model, kind: str, context: int, batch: int, steps: int, step_fn) -> float:
    """Seconds per token over `steps` one-token forwards after one untimed warm-up step."""
    cache = filled_cache(model, kind, context, batch, room=steps + 1)
    device = model.device
    token = torch.ones(batch, 1, dtype=torch.long, device=device)
    position = torch.full((batch, 1), context, dtype=torch.long, device=device)
    step_fn(model, token, position, cache)  # warm-up (and compilation, when compiled)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        position += 1
        step_fn(model, token, position, cache)
    sync(device)
    return (time.perf_counter() - start) / steps


def eager_step(model, token, position, cache):
    return model(token, position_ids=position, past_key_values=cache, use_cache=True).logits


def rotated(names: list[str], r: int) -> list[str]:
    return names[r % len(names):] + names[: r % len(names)]


def check_decode_caches_agree(models, batch: int = 1, context: int = 64) -> None:
    """The static and dynamic caches must give the same logits from the same filled cache (else the
    decode numbers time different computations)."""
    token = torch.ones(batch, 1, dtype=torch.long, device=next(iter(models.values())).device)
    for name, model in models.items():
        out = {}
        for kind in ("dynamic", "static"):
            cache = filled_cache(model, kind, context, batch, room=2)
            position = torch.full((batch, 1), context, dtype=torch.long, device=token.device)
            with torch.no_grad():
                out[kind] = eager_step(model, token, position, cache).float()
        err = ((out["static"] - out["dynamic"]).abs().max() / out["dynamic"].abs().max()).item()
        if err > 1e-3:
            raise SystemExit(f"{name}: static and dynamic cache logits differ (relative {err:.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=10240,
                        help="LM-head rows; 10240 gives a 2-layer slice the LM-head share of a 28-layer model with "
                             "Qwen3's 151936-token vocabulary (default 10240)")
    parser.add_argument("--prefill", default="1024,4096,8192,16384,32768", help="prompt lengths (comma-separated)")
    parser.add_argument("--decode", default="1024,4096,16384,32768", help="cached context lengths for decode")
    parser.add_argument("--batch", default="1,4", help="decode batch sizes (comma-separated)")
    parser.add_argument("--steps", type=int, default=8, help="timed decode steps per figure")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats per figure (the minimum counts)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}; append '+shared' "
                        "to a hybrid for GDN k/v shared within a GQA group")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd decode step (static cache)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--system-malloc", action="store_true",
                        help="keep glibc's allocator defaults (by default freed memory is kept for reuse, "
                             "see hydrahead/utils/memory.py)")
    parser.add_argument("--json", default="bench_inference.json")
    parser.add_argument("--plot", default=None, help="write the ratio plot to this PNG")
    args = parser.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    if "teacher" not in args.models:
        args.models.insert(0, "teacher")
    if args.threads:
        torch.set_num_threads(args.threads)
    heap = False if args.system_malloc else keep_freed_memory()
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]

    models = build_models(args)
    names = list(models)
    check_decode_caches_agree(models)
    rate, bandwidth, gemv = gemm_rate(device, dtype), copy_bandwidth(device), matvec_bandwidth(device, dtype)
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "device": str(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "dtype": args.dtype,
        "layers": args.layers, "vocab": args.vocab, "date": datetime.date.today().isoformat(),
        "load_before": os.getloadavg()[0], "heap_allocator": heap, "gemm_flops": rate, "copy_bytes_per_s": bandwidth,
        "matvec_bytes_per_s": gemv,
        "parameters": {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()},
        "prefill": [], "decode": [], "cache": [],
    }
    print(f"GEMM {rate / 1e9:.1f} GFLOP/s, copy {bandwidth / 1e9:.1f} GB/s, matvec {gemv / 1e9:.1f} GB/s, threads {torch.get_num_threads()}, "
          f"load {result['load_before']:.2f}, freed memory kept: {heap}", flush=True)

    vocab = models["teacher"].config.vocab_size
    for T in [int(x) for x in args.prefill.split(",") if x]:
        ids = torch.randint(0, vocab, (1, T), device=device)
        best: dict[str, float] = {}
        for r in range(args.repeats):
            for name in rotated(names, r):
                seconds, cache = time_prefill(models[name], ids)
                best[name] = min(best.get(name, float("inf")), seconds)
                if r == 0 and name != "teacher":
                    held, plan = cache.nbytes(), footprint(models[name])
                    expected = T * plan["kv_bytes_per_token"] + plan["state_bytes_per_sequence"]
                    actual = held["kv"] + held["recurrent"] + held["conv"]
                    result["cache"].append({"model": name, "tokens": T, "bytes": actual, "expected": expected})
                del cache
                gc.collect()
        for name in names:
            floor = prefill_flops(models[name], T) / rate
            row = {"model": name, "tokens": T, "seconds": best[name], "ratio": best["teacher"] / best[name],
                   "floor_seconds": floor}
            result["prefill"].append(row)
            print(f"prefill {T:>6} {name:<14} {best[name]:8.3f} s  x{row['ratio']:.2f}  floor {floor:7.3f} s "
                  f"({best[name] / floor:.2f}x floor)", flush=True)

    kinds = ["dynamic", "static"]
    for batch in [int(x) for x in args.batch.split(",") if x]:
        for T in [int(x) for x in args.decode.split(",") if x]:
            times: dict[tuple[str, str], float] = {}
            for r in range(args.repeats):
                for name in rotated(names, r):
                    for kind in kinds:
                        s = time_decode(models[name], kind, T, batch, args.steps, eager_step)
                        times[name, kind] = min(times.get((name, kind), float("inf")), s)
                        gc.collect()
            if args.compile:
                for name in names:
                    torch._dynamo.reset()
                    step = torch.compile(eager_step, fullgraph=True, dynamic=False)
                    times[name, "static+compile"] = time_decode(models[name], "static", T, batch, args.steps, step)
            best = {n: min((t, k) for (m, k), t in times.items() if m == n) for n in names}
            for name in names:
                moved = decode_bytes(models[name], T, batch)
                floor = moved / bandwidth
                row = {"bytes": moved, "matvec_floor_ms": 1e3 * moved / gemv,"model": name, "context": T, "batch": batch,
                       "ms_per_token": {k: 1e3 * t for (m, k), t in times.items() if m == name},
                       "best_cache": best[name][1], "ms": 1e3 * best[name][0],
                       "ratio": best["teacher"][0] / best[name][0], "floor_ms": 1e3 * floor}
                result["decode"].append(row)
                detail = " ".join(f"{k} {v:.1f}" for k, v in row["ms_per_token"].items())
                print(f"decode B{batch} {T:>6} {name:<14} {row['ms']:8.2f} ms ({best[name][1]})  x{row['ratio']:.2f}  "
                      f"floor {row['floor_ms']:.2f} ms ({row['ms'] / row['floor_ms']:.2f}x)  [{detail}]", flush=True)

    result["load_after"] = os.getloadavg()[0]
    Path(args.json).write_text(json.dumps(result, indent=1))
    print_tables(result)
    if args.plot:
        plot(result, args.plot)


def print_tables(result: dict) -> None:
    print("\n| context | model | prefill s | vs teacher | vs floor |\n|---:|---|---:|---:|---:|")
    for row in result["prefill"]:
        print(f"| {row['tokens']} | {row['model']} | {row['seconds']:.3f} | {row['ratio']:.2f}x | "
              f"{row['seconds'] / row['floor_seconds']:.2f}x |")
    print("\n| batch | context | model | cache | ms/token | vs teacher | vs copy floor | vs matvec floor |\n"
          "|---:|---:|---|---|---:|---:|---:|---:|")
    for row in result["decode"]:
        print(f"| {row['batch']} | {row['context']} | {row['model']} | {row['best_cache']} | {row['ms']:.2f} | "
              f"{row['ratio']:.2f}x | {row['ms'] / row['floor_ms']:.2f}x | {row['ms'] / row['matvec_floor_ms']:.2f}x |")
    print("\n| model | tokens | cache bytes | plan's figure | difference |\n|---|---:|---:|---:|---:|")
    for row in result["cache"]:
        print(f"| {row['model']} | {row['tokens']} | {row['bytes']:,} | {row['expected']:,} | "
              f"{100 * (row['bytes'] - row['expected']) / row['expected']:+.2f}% |")


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in sorted({r["model"] for r in result["prefill"]} - {"teacher"}):
        rows = [r for r in result["prefill"] if r["model"] == name]
        axes[0].plot([r["tokens"] for r in rows], [r["ratio"] for r in rows], marker="o", label=name)
        for batch in sorted({r["batch"] for r in result["decode"]}):
            rows = [r for r in result["decode"] if r["model"] == name and r["batch"] == batch]
            axes[1].plot([r["context"] for r in rows], [r["ratio"] for r in rows], marker="o",
                         label=f"{name}, batch {batch}", linestyle="-" if batch == 1 else "--")
    for ax, title in zip(axes, ("prefill", "decode per token")):
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("teacher time / model time")
        ax.set_title(f"{title}: speed-up over the teacher")
        ax.legend(fontsize=7)
    fig.suptitle(f"{result['layers']}-layer Qwen3-1.7B-shaped slice, {result['dtype']}, {result['device']}, "
                 f"{result['threads']} threads, {result['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
