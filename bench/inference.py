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

  prefill   model(ids, use_cache=True, logits_to_keep=1) on a fresh cache: the prompt's forward pass;
            with --prefill-chunk N, every model's prompt goes through its cache in pieces of N tokens, as
            generate(prefill_chunk_size=N) runs it (a hybrid on the CPU already runs a long forward in pieces
            by itself, hydrahead.models.hybrid.inference_piece; this gives the teacher pieces too: like for like)
  decode    ms per generated token over --steps one-token forwards, from a cache already holding the
            context (filled with random K/V and states: decode cost depends on the cache's size, not its
            values); the teacher on transformers' dynamic and static caches, hybrids on our dynamic
            and static ones; each model's faster cache counts
  cache     bytes the hybrid's cache holds after a real prefill, against the plan's figure
            (`hydrahead.models.footprint`: K/V bytes per token x tokens + GDN state per sequence)

  ops       kernels launched (ATen ops counted at torch's dispatcher, after autograd and composite
            decomposition, views excluded, plus fla's Triton kernels where they run) per decoder layer in
            one decode step and one prefill (each the second of two identical forwards), hybrid vs
            teacher, on a narrow copy of the config with --ops-layers layers (counts do not depend on
            widths; the first layer also works out what every layer of a forward shares, so the figure is
            the mean over the layers of a model as deep as Qwen3-1.7B); with --fla-interpreted, on the CPU,
            the hybrids' CUDA path: fla's kernels run in Triton's interpreter, so the count is what a CUDA
            device would launch (set TRITON_INTERPRET=1; needs triton and fla-core; fp32; slow)
  host      microseconds per eager decode step (64 tokens cached, batch 1, dynamic cache) of a copy of the
            config too narrow for its arithmetic to count (hidden 64, head_dim 16, intermediate 128, the
            head layout and --ops-layers layers kept): the time the host takes to issue a step (Python,
            dispatch, per-op overhead), which is what bounds an eager decode step on a GPU; and the same for a
            64-token prompt's forward, which bounds a prefill on a GPU wherever its kernels take less; with
            --fla-interpreted, the hybrids' CUDA path, fla's kernels skipped (their Python wrappers timed)
  instructions  the host section's step counted, not timed: machine instructions per eager decode step
            under valgrind's callgrind (needs valgrind; about 3.5 minutes, 4 with --fla-interpreted),
            from the difference of 12 and 4 counted steps, so the counting's own start and stop cancel; one
            thread (on a GPU one host thread issues the step).
            Deterministic: a change of 1% shows on a loaded or throttled machine, where the host section's
            timings move by 30% or more between runs (docs/benchmarks.md). Instructions are not time (Python's
            and the dispatcher's instructions differ in cycles each): compare commits on one path with it; its
            teacher / model ratio is not a time ratio
  floors    no timing: what the arithmetic allows, each model's floor against the teacher's (the teacher's
            prefill FLOPs / the model's at the --prefill lengths, decode bytes at --decode x --batch; see
            Floors below): the ratio a model would reach if it and the teacher ran equally close to
            their floors, on any device (seconds on the CPU, at the full --layers shape)
  generate  ms per generated token of a plain `model.generate(ids, max_new_tokens=N)`, as a user calls it
            (the hybrid's own default: on CUDA the static cache with its decode compiled and graph-
            captured; the teacher's: transformers' dynamic cache, eager), and the first call's extra time
            (compilation)
  max-batch (CUDA) the largest batch whose cache holds the context next to the weights, from each cache's
            bytes per sequence and the free device memory, checked by allocating it and decoding one token

Floors, measured in the same run: prefill FLOPs (linear layers, causal FA attention, GDN chunk arithmetic)
over the measured GEMM rate; decode bytes (weights read once, K/V read, GDN state read and written) over
the measured copy bandwidth (read + write of a 512 MiB buffer), and the same bytes over the rate a
batch-1 matrix-vector product streams weights (what torch's GEMV reaches here). A ratio to the floor near 1 means the time is what the arithmetic or the
memory traffic costs; far above 1 means overhead.

The process runs with glibc's allocator as a user's process has it; `--allocator kept` first calls
`hydrahead.keep_freed_memory()` (freed memory kept for reuse; see hydrahead/utils/memory.py), the other
column of docs/benchmarks.md.

Usage:
  python bench/inference.py                               # CPU defaults: 2 layers, fp32, 1K-32K
  python bench/inference.py --sections ops                # the op counts alone (seconds)
  TRITON_INTERPRET=1 python bench/inference.py --sections ops --fla-interpreted --ops-layers 2
                                                          # the same, the hybrids' CUDA path (fla), no GPU
  python bench/inference.py --sections host               # host time per eager decode step and prompt (40 s)
  TRITON_INTERPRET=1 python bench/inference.py --sections host --fla-interpreted   # the same, the CUDA path
  TRITON_INTERPRET=1 python bench/inference.py --sections instructions --fla-interpreted   # the same, counted
  python bench/inference.py --sections floors --dtype bf16 --layers 4 --vocab 21760 \
      --prefill 4096,8192,16384,65536,131072 --decode 16384,131072 --batch 1,8   # what the GPU run allows, no timing
  python bench/inference.py --prefill 1024,4096 --decode 1024,4096 --repeats 1   # a quick look
  python bench/inference.py --teacher smollm2/ --plan plan.json --sections prefill,decode   # a real model
  python bench/inference.py --device cuda --dtype bf16 --layers 4 --prefill 4096,8192,16384,65536,131072 --graphs \
      --sections ops,prefill,decode,generate,max-batch     # what bench/gpu.sh runs
Writes --json (every number) and --plot (PNG), prints markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import gc
import os
import platform
import sys
import time

import torch
from transformers import DynamicCache, Qwen3Config, Qwen3ForCausalLM, StaticCache

from torch.utils._python_dispatch import TorchDispatchMode

from hydrahead import HeadPlan, HybridHeadCache, HybridOptions, convert, keep_freed_memory
from hydrahead.cache import cache_nbytes
from hydrahead.models.footprint import footprint, kv_bytes_per_token
from hydrahead.utils.io import write_json

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODELS = ("teacher", "hydrahead-7:1", "layerwise-3:1", "all-gdn")
SECTIONS = ("ops", "host", "instructions", "floors", "prefill", "decode", "generate", "max-batch")


def build_models(args, layers: int | None = None, hidden: int = 2048, intermediate: int = 6144,
                 vocab: int | None = None, head_dim: int = 128) -> dict[str, torch.nn.Module]:
    """The teacher (the random Qwen3 slice, or --teacher's checkpoint) and the hybrids of args.models, converted
    with the paper preset (speed depends on which heads are FA, not on distilled weights)."""
    if getattr(args, "teacher", None):
        from hydrahead import load_model

        teacher = load_model(args.teacher, dtype="float32")
        config = teacher.config
        plans = {"plan": lambda: HeadPlan.from_json(args.plan).validate(config)} if args.plan else {}
    else:
        layers = args.layers if layers is None else layers
        config = Qwen3Config(
            vocab_size=args.vocab if vocab is None else vocab, hidden_size=hidden, intermediate_size=intermediate,
            num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=8, head_dim=head_dim,
            max_position_embeddings=1 << 20, rms_norm_eps=1e-6, tie_word_embeddings=True, attn_implementation="sdpa",
        )
        torch.manual_seed(0)
        teacher = Qwen3ForCausalLM(config).eval()
        # the same GQA group in every layer: where the plan puts the group does not change the cost
        plans = {"hydrahead-7:1": lambda: HeadPlan(tuple((0, 1) for _ in range(layers)), 16, 8)}
    plans.update({  # made only when asked for (a layer-wise 3:1 plan needs four layers)
        "layerwise-3:1": lambda: HeadPlan.layerwise(config, "3:1"),
        "all-gdn": lambda: HeadPlan.none(config),
    })
    models = {"teacher": teacher}
    for name in args.models:
        if name != "teacher":
            base, _, variant = name.partition("+")
            if base not in plans or variant not in ("", "shared"):
                needs = " ('plan' needs --plan)" if getattr(args, "teacher", None) and "plan" not in plans else ""
                raise SystemExit(f"unknown model {name!r}; choose from teacher, {', '.join(plans)}{needs}, each "
                                 "hybrid optionally with '+shared'")
            options = HybridOptions.preset("paper", gdn_shared_kv=variant == "shared")
            models[name] = convert(teacher, plans[base](), options).eval()
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    return {name: m.to(device, dtype) for name, m in models.items() if name in args.models}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---- floors ---------------------------------------------------------------------------------------------


def gemm_rate(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """FLOP/s of a (4096 x 2048) @ (2048 x 6144) matmul, the shape of a prefill's MLP up-projection, into one
    reused output: a fresh 100 MB output would add its page faults, which in a plain CPU process vary from
    run to run (this probe read 107-197 GFLOP/s that way) and are not arithmetic."""
    a = torch.randn(4096, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 6144, device=device, dtype=dtype)
    c = torch.empty(4096, 6144, device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=c)
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
    kv = batch * context * kv_bytes_per_token(config, kv_heads, item)
    _, gdn = fa_and_gdn_heads(model)
    state = 2 * batch * sum(gdn) * config.head_dim * config.head_dim * 4
    return weights + kv + state


def floor_ratios(models: dict, prefill_lengths: list[int], decode_lengths: list[int],
                 batches: list[int]) -> list[dict]:
    """Per hybrid: the teacher's floor over the model's, prefill FLOPs at each prompt length and decode bytes at
    each context and batch: the speed-up the arithmetic allows, before any kernel's efficiency."""
    teacher, rows = models["teacher"], []
    for name, model in models.items():
        if name == "teacher":
            continue
        for T in prefill_lengths:
            rows.append({"model": name, "kind": "prefill", "tokens": T, "batch": 1,
                         "ratio": prefill_flops(teacher, T) / prefill_flops(model, T)})
        for batch in batches:
            for T in decode_lengths:
                rows.append({"model": name, "kind": "decode", "tokens": T, "batch": batch,
                             "ratio": decode_bytes(teacher, T, batch) / decode_bytes(model, T, batch)})
    for row in rows:
        print(f"floor {row['kind']:<7} {row['tokens']:>6} tokens, batch {row['batch']}, {row['model']:<20} "
              f"teacher's floor / model's x{row['ratio']:.2f}", flush=True)
    return rows


# ---- caches ---------------------------------------------------------------------------------------------


def filled_cache(model, kind: str, context: int, batch: int, room: int):
    """A cache that holds `context` tokens of random K/V and states, with room for `room` more."""
    config, device, dtype = model.config, model.device, model.dtype
    D, L = config.head_dim, config.num_hidden_layers
    gen = torch.Generator(device=device).manual_seed(1)

    def rand(*shape, dtype=dtype):  # made on the device (128K tokens of K/V from the host take minutes), in place
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype).mul_(0.1)

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
def time_prefill(model, ids: torch.Tensor, chunk: int | None = None) -> tuple[float, object]:
    """Seconds for the prompt's forward on a fresh cache; with `chunk`, in pieces of that many tokens through
    the cache, as `generate(prefill_chunk_size=chunk)` runs it."""
    cache = HybridHeadCache(model.config) if hasattr(model, "hydrahead_plan") else DynamicCache(config=model.config)
    sync(ids.device)
    start = time.perf_counter()
    for piece in ids.split(chunk or ids.shape[1], dim=1):
        model(piece, past_key_values=cache, use_cache=True, logits_to_keep=1)
    sync(ids.device)
    return time.perf_counter() - start, cache


def profile_prefill(model, ids: torch.Tensor, chunk: int | None, rows: int = 12) -> list[dict]:
    """The ops of one prefill that took the most time (self time, torch.profiler), after the timed ones."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ids.is_cuda else [])) as prof:
        time_prefill(model, ids, chunk)

    def self_ms(event) -> float:
        return (event.self_device_time_total if ids.is_cuda else event.self_cpu_time_total) / 1e3

    events = sorted(prof.key_averages(), key=self_ms, reverse=True)
    return [{"name": e.key, "calls": e.count, "ms": self_ms(e)} for e in events[:rows]]


@torch.no_grad()
def time_decode(model, kind: str, context: int, batch: int, steps: int, step_fn, warmups: int = 1) -> float:
    """Seconds per token over `steps` one-token forwards after `warmups` untimed ones (a CUDA-graph step needs
    three: compiled and warmed up on the first call, recorded on the second, replayed from the third)."""
    cache = filled_cache(model, kind, context, batch, room=steps + warmups)
    device = model.device
    token = torch.ones(batch, 1, dtype=torch.long, device=device)
    position = torch.full((batch, 1), context, dtype=torch.long, device=device)
    for _ in range(warmups):  # warm-up (and compilation, when compiled)
        step_fn(model, token, position, cache)
        position += 1
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
        tolerance = 1e-3 if model.dtype == torch.float32 else 3e-2  # bf16's rounding of two summation orders
        if err > tolerance:  # said, not fatal: on a GPU a stop here would lose every timed section after it
            print(f"warning: {name}: static and dynamic cache logits differ (relative {err:.2e}, tolerance "
                  f"{tolerance:g}): their decode rows may time different computations", flush=True)


# ---- op counts ------------------------------------------------------------------------------------------


@functools.cache
def touches_tensor(func) -> bool:
    """Whether an ATen op takes or returns a tensor (one that does neither launches no kernel)."""
    return any("Tensor" in str(x.type) for x in (*func._schema.arguments, *func._schema.returns))


class OpCounter(TorchDispatchMode):
    """Counts what launches a kernel while `on`: the ATen ops seen at the dispatcher after autograd and
    composite decomposition (so `linear` is its `mm`), views, metadata-only ops and ops that take and return no
    tensor (`promote_types`: host arithmetic on dtypes) excluded, and the Triton kernels launched (fla's, on CUDA
    or in Triton's interpreter; `triton_launches` counts them apart)."""

    METADATA = {"_unsafe_view", "detach", "lift_fresh", "alias"}

    def __init__(self) -> None:
        super().__init__()
        self.on, self.count, self.triton_launches, self._patched = False, 0, 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.on and not func.is_view and func.overloadpacket.__name__ not in self.METADATA and touches_tensor(func):
            self.count += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        if "triton" in sys.modules:  # the innermost launch of a (possibly autotuned) Triton kernel
            from triton.runtime.interpreter import InterpretedFunction
            from triton.runtime.jit import JITFunction

            for cls in (JITFunction, InterpretedFunction):
                self._patched.append((cls, cls.run))
                cls.run = self._launch(cls.run)
        return super().__enter__()

    def __exit__(self, *exc):
        for cls, run in reversed(self._patched):
            cls.run = run
        self._patched.clear()
        return super().__exit__(*exc)

    def _launch(self, run):
        counter = self

        def counted(*args, **kwargs):
            on = counter.on
            if on:
                counter.count += 1
                counter.triton_launches += 1
            counter.on = False  # the interpreter's own tensor traffic is not the kernel's launches
            try:
                return run(*args, **kwargs)
            finally:
                counter.on = on

        return counted


@contextlib.contextmanager
def kernels_skipped():
    """Triton's interpreter launches nothing while open (outputs stay as allocated): host timing only."""
    from triton.runtime.interpreter import InterpretedFunction

    run = InterpretedFunction.run
    InterpretedFunction.run = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        InterpretedFunction.run = run


@torch.no_grad()
def layer_ops(model, tokens: int, context: int) -> tuple[list[int], int]:
    """Ops of each decoder layer in one forward of `tokens` tokens after `context` cached ones (0: a fresh
    prefill), on the model's dynamic cache, and the Triton launches among them (all layers). The same
    forward runs once before, uncounted, so one-off work (fla's autotuning) is not counted."""
    counter = OpCounter()
    counts: list[int] = []

    def start(*_):
        counter.on, counter.count = True, 0

    def stop(*_):
        counter.on = False
        counts.append(counter.count)

    vocab, device = model.config.vocab_size, model.device
    ids = torch.randint(0, vocab, (1, context + tokens), device=device)

    def forward() -> None:
        cache = HybridHeadCache(model.config) if hasattr(model, "hydrahead_plan") else DynamicCache(config=model.config)
        if context:
            model(ids[:, :context], past_key_values=cache, use_cache=True)
        counts.clear()
        counter.triton_launches = 0
        hooks = [h for layer in model.model.layers
                 for h in (layer.register_forward_pre_hook(start), layer.register_forward_hook(stop))]
        try:
            model(ids[:, context:], past_key_values=cache, use_cache=True)
        finally:
            for h in hooks:
                h.remove()

    forward()
    with counter:
        forward()
    return counts, counter.triton_launches


def op_counts(args) -> list[dict]:
    """Per model: mean ops per decoder layer in a decode step (64 tokens cached) and in a 1024-token prefill,
    on a narrow copy (hidden 256) of the bench's config with --ops-layers layers."""
    models = build_models(args, layers=args.ops_layers, hidden=256, intermediate=512, vocab=512)
    rows = []
    for name, model in models.items():
        model.to(torch.device(args.device), DTYPES[args.dtype])
        (decode, decode_triton), (prefill, prefill_triton) = layer_ops(model, 1, 64), layer_ops(model, 1024, 0)
        rows.append({"model": name, "layers": len(decode), "decode_mean": sum(decode) / len(decode),
                     "decode_layer": decode, "prefill_mean": sum(prefill) / len(prefill), "prefill_layer": prefill,
                     "decode_triton": decode_triton, "prefill_triton": prefill_triton,
                     "fla": "interpreted" if args.fla_interpreted else None})
    teacher = rows[0]
    for row in rows:
        row["decode_ratio"] = row["decode_mean"] / teacher["decode_mean"]
        row["prefill_ratio"] = row["prefill_mean"] / teacher["prefill_mean"]
        print(f"ops {row['model']:<14} decode {row['decode_mean']:6.1f} per layer (x{row['decode_ratio']:.2f}; "
              f"first layer {row['decode_layer'][0]}, others {sorted(set(row['decode_layer'][1:]))})  prefill "
              f"{row['prefill_mean']:7.1f} (x{row['prefill_ratio']:.2f}); Triton launches in all layers: decode "
              f"{row['decode_triton']}, prefill {row['prefill_triton']}", flush=True)
    return rows


def narrow_models(args) -> dict[str, torch.nn.Module]:
    """The host and instructions sections' models: the head layout and --ops-layers layers of the slice, at
    widths too narrow for their arithmetic to count."""
    return build_models(args, layers=args.ops_layers, hidden=64, intermediate=128, vocab=512, head_dim=16)


def host_times(args, steps: int = 100, prompts: int = 10, prompt_tokens: int = 64) -> list[dict]:
    """Per model: microseconds per eager decode step, and per prompt's forward (`prompt_tokens` from an empty
    cache, as a prefill), on a copy of the config too narrow for its arithmetic to count, the minimum over
    max(--repeats, 5) interleaved rounds of `steps` steps and `prompts` prompts. With --fla-interpreted, the
    hybrids' CUDA path with Triton's launches skipped (`kernels_skipped`): the host's side of it, fla's Python
    wrappers included, its kernels' launch cost and outputs not. On a GPU a prompt's host time is what its
    prefill takes wherever the kernels take less (short prompts, narrow models)."""
    models = narrow_models(args)
    names, best, best_prompt = list(models), {}, {}
    device = next(iter(models.values())).device
    prompt = torch.ones(1, prompt_tokens, dtype=torch.long, device=device)
    with kernels_skipped() if args.fla_interpreted else contextlib.nullcontext(), torch.no_grad():
        for model in models.values():  # warm-up: fla's autotuning for the prompt's shapes
            time_prefill(model, prompt)
        for r in range(max(args.repeats, 5)):
            for name in rotated(names, r):
                seconds = time_decode(models[name], "dynamic", 64, 1, steps, eager_step)
                best[name] = min(best.get(name, float("inf")), seconds)
                seconds = sum(time_prefill(models[name], prompt)[0] for _ in range(prompts)) / prompts
                best_prompt[name] = min(best_prompt.get(name, float("inf")), seconds)
    rows = []
    for name in names:
        us, layers, prompt_us = best[name] * 1e6, models[name].config.num_hidden_layers, best_prompt[name] * 1e6
        rows.append({"model": name, "layers": layers, "step_us": us, "layer_us": us / layers,
                     "ratio": best["teacher"] / best[name], "prompt_tokens": prompt_tokens, "prompt_us": prompt_us,
                     "prompt_layer_us": prompt_us / layers, "prompt_ratio": best_prompt["teacher"] / best_prompt[name]})
        print(f"host {name:<14} {us:8.0f} us per eager decode step, {us / layers:6.1f} per layer "
              f"(teacher / model x{rows[-1]['ratio']:.2f}); a {prompt_tokens}-token prompt {prompt_us:8.0f} us, "
              f"{prompt_us / layers:6.1f} per layer (x{rows[-1]['prompt_ratio']:.2f})", flush=True)
    return rows


CALLGRIND_CHILD = "HYDRAHEAD_CALLGRIND_CHILD"  # set in the child process that callgrind runs


def callgrind_totals(off_at_start: str, env: dict[str, str]) -> dict[str, int]:
    """Run this same command again under valgrind's callgrind, `off_at_start` ("--instr-atstart=no" or
    "--collect-atstart=no": the child switches counting on where it counts), with `env` added and PYTHONHASHSEED
    fixed (the same dict layouts, so the same instructions, from run to run); return each profile the child
    dumped as its total instructions, by its trigger (what callgrind's `desc: Trigger:` line names)."""
    import re
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    if shutil.which("valgrind") is None:
        raise SystemExit("counting instructions needs valgrind (callgrind): apt install valgrind")
    with tempfile.TemporaryDirectory() as out:
        child = subprocess.run(
            ["valgrind", "--tool=callgrind", off_at_start, f"--callgrind-out-file={out}/callgrind.out",
             sys.executable, *sys.argv], env={**os.environ, **env, "PYTHONHASHSEED": "0"},
            capture_output=True, text=True)
        if child.returncode != 0:
            raise SystemExit(f"the child run under callgrind failed:\n{child.stdout[-2000:]}{child.stderr[-2000:]}")
        totals = {}
        for path in Path(out).glob("callgrind.out.*"):
            text = path.read_text()
            trigger, total = re.search(r"desc: Trigger: (.+)", text), re.search(r"totals: (\d+)", text)
            if trigger and total:
                totals[trigger.group(1)] = int(total.group(1))
    return totals


def host_instructions(args, steps: int = 4) -> list[dict]:
    """Per model: machine instructions per eager decode step of the host section's narrow models, counted by
    callgrind (`callgrind_totals`, instrumentation off at the start); the child (`count_decode_instructions`)
    switches it on around `steps` and then 3 x `steps` decode steps of each model and dumps a profile after
    each; the difference of the two dumps over 2 x `steps` is one step's count."""
    import shutil

    if shutil.which("callgrind_control") is None:
        raise SystemExit("the instructions section needs valgrind (callgrind): apt install valgrind")
    counts: dict[str, dict[int, int]] = {}
    for trigger, total in callgrind_totals("--instr-atstart=no", {CALLGRIND_CHILD: "1"}).items():
        if trigger.startswith("dump "):  # "dump <model> <steps>"
            _, name, count = trigger.split()
            counts.setdefault(name, {})[int(count)] = total
    per_step = {name: (c[3 * steps] - c[steps]) / (2 * steps) for name, c in counts.items()}
    rows, layers = [], args.ops_layers
    for name in args.models:
        rows.append({"model": name, "layers": layers, "step_instructions": per_step[name],
                     "layer_instructions": per_step[name] / layers, "ratio": per_step["teacher"] / per_step[name]})
        print(f"instructions {name:<14} {per_step[name] / 1e6:8.3f} M per eager decode step, "
              f"{per_step[name] / layers / 1e3:7.1f} K per layer (teacher / model x{rows[-1]['ratio']:.3f})",
              flush=True)
    return rows


@torch.no_grad()
def count_decode_instructions(args, steps: int = 4) -> None:
    """The child of `host_instructions`, run by callgrind: per model, warm-up steps uncounted, then `steps` and
    3 x `steps` counted steps, each count zeroed first and dumped after (named "model count")."""
    import subprocess

    def control(*flags: str) -> None:
        subprocess.run(["callgrind_control", *flags, str(os.getpid())], check=True, stdout=subprocess.DEVNULL)

    torch.set_num_threads(1)  # a second thread's spin-waits would be counted, and differ from run to run
    models = narrow_models(args)
    with kernels_skipped() if args.fla_interpreted else contextlib.nullcontext():
        for name, model in models.items():
            cache = filled_cache(model, "dynamic", 64, 1, room=4 * steps + 4)
            token = torch.ones(1, 1, dtype=torch.long)
            position = torch.full((1, 1), 64, dtype=torch.long)
            for count in (0, steps, 3 * steps):  # 0: warm-up, uncounted
                if count:
                    control("--zero")
                    control("--instr=on")
                for _ in range(count or 3):
                    position += 1
                    eager_step(model, token, position, cache)
                if count:
                    control("--instr=off")
                    control(f"--dump={name} {count}")


# ---- generate, graphs, max batch ----------------------------------------------------------------------


@torch.no_grad()
def time_generate(model, context: int, new_tokens: int, repeats: int) -> dict:
    """ms per token of a plain generate() after a `context`-token prompt: (time for new_tokens + 1 tokens
    - time for 1 token) / new_tokens, the minimum over repeats; `first_s`: the first call's extra seconds."""
    device = model.device
    ids = torch.randint(0, model.config.vocab_size, (1, context), device=device)

    def run(n: int) -> float:
        sync(device)
        start = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, pad_token_id=0)
        sync(device)
        return time.perf_counter() - start

    first = run(new_tokens + 1)
    long = min(run(new_tokens + 1) for _ in range(repeats))
    short = min(run(1) for _ in range(repeats))
    return {"ms": 1e3 * (long - short) / new_tokens, "first_s": first - long}


def graph_step(device: torch.device):
    """A decode step compiled as transformers' generate compiles it: CUDA graphs on CUDA (reduce-overhead)."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(eager_step, mode=mode, fullgraph=False, dynamic=False)


@torch.no_grad()
def max_batch(model, context: int, max_tries: int = 6) -> dict:
    """The largest batch whose static cache of `context` (+ 1) tokens fits next to the weights: the free memory
    over the cache's bytes per sequence, checked by filling that cache and decoding one token (halved on OOM)."""
    device = model.device
    one = filled_cache(model, "static", context, 1, room=1)
    per_sequence = sum(cache_nbytes(one).values())  # K/V, and a hybrid's GDN states and conv windows
    del one
    gc.collect()
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    batch = int(0.9 * free // per_sequence)  # 10% for activations and the allocator
    fits, fails = 0, None  # the largest batch that fit, the smallest that did not
    for _ in range(max_tries):
        if batch < 1:
            break
        try:
            cache = filled_cache(model, "static", context, batch, room=1)
            token = torch.ones(batch, 1, dtype=torch.long, device=device)
            eager_step(model, token, torch.full((batch, 1), context, device=device), cache)
            sync(device)
            fits = batch
        except (torch.OutOfMemoryError, RuntimeError) as err:  # cuBLAS / Triton allocation failures too
            if not isinstance(err, torch.OutOfMemoryError) and "out of memory" not in str(err).lower():
                raise
            fails = batch
        finally:
            cache = None
            gc.collect()
            torch.cuda.empty_cache()
        if fails is None or fails - fits <= max(1, fits // 16):  # the first guess fit, or within 1/16 of the edge
            break
        batch = (fits + fails) // 2 if fits else fails // 2  # halve until one fits, then bisect
    return {"batch": fits, "bytes_per_sequence": per_sequence, "checked": fits > 0, "first_failure": fails}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=10240,
                        help="LM-head rows; 10240 gives a 2-layer slice the LM-head share of a 28-layer model with "
                             "Qwen3's 151936-token vocabulary (default 10240)")
    parser.add_argument("--sections", default="ops,prefill,decode",
                        help=f"comma-separated, from {SECTIONS} (default: ops,prefill,decode)")
    parser.add_argument("--prefill", default="1024,4096,8192,16384,32768", help="prompt lengths (comma-separated)")
    parser.add_argument("--prefill-chunk", type=int, default=None,
                        help="prefill every model in pieces of this many tokens through its cache, as "
                             "generate(prefill_chunk_size=N) does (default: the whole prompt in one forward)")
    parser.add_argument("--profile", nargs="?", const="all", default=None, metavar="LENGTHS",
                        help="after timing a prompt length, profile one more prefill of each model (torch.profiler: "
                             "the ops that took the most time, printed and in the JSON); every length, or only the "
                             "comma-separated LENGTHS given")
    parser.add_argument("--decode", default="1024,4096,16384,32768", help="cached context lengths for decode")
    parser.add_argument("--batch", default="1,4", help="decode batch sizes (comma-separated)")
    parser.add_argument("--steps", type=int, default=8, help="timed decode steps per figure")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats per figure (the minimum counts)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}; append '+shared' "
                        "to a hybrid for GDN k/v shared within a GQA group")
    parser.add_argument("--teacher", default=None,
                        help="a real checkpoint directory or .gguf instead of the random Qwen3 slice; its hybrids: "
                             "plan (from --plan), all-gdn, layerwise-3:1 (then --models defaults to teacher,plan and "
                             "--sections to prefill,decode)")
    parser.add_argument("--plan", default=None, help="with --teacher: the plan JSON of the model named 'plan'")
    parser.add_argument("--graphs", action="store_true",
                        help="also time decode compiled on static caches (CUDA: graph-captured, as generate does)")
    parser.add_argument("--generate", default="16384", help="prompt lengths for the generate section")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens per timed generate call")
    parser.add_argument("--max-batch", default="131072", help="context lengths for the max-batch section (CUDA)")
    parser.add_argument("--ops-layers", type=int, default=28,
                        help="layers of the narrow models of the ops and host sections (default 28)")
    parser.add_argument("--fla-interpreted", action="store_true",
                        help="ops and host sections on the CPU: the hybrids' CUDA path, fla's kernels run in Triton's "
                             "interpreter (ops: counted; host: launches skipped, the host's side timed; start with "
                             "TRITON_INTERPRET=1; needs triton and fla-core)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--allocator", choices=("plain", "kept"), default="plain",
                        help="plain: glibc's defaults, as in a user's process (default); kept: call "
                             "hydrahead.keep_freed_memory() first")
    parser.add_argument("--json", default="bench_inference.json")
    parser.add_argument("--plot", default=None, help="write the ratio plot to this PNG")
    args = parser.parse_args()
    if args.teacher and args.models == ",".join(MODELS):
        args.models = "teacher,plan" if args.plan else "teacher,all-gdn"
    if args.teacher and args.sections == parser.get_default("sections"):
        args.sections = "prefill,decode"  # the op counts are of the random slice
    args.models = [m for m in args.models.split(",") if m]
    if "teacher" not in args.models:
        args.models.insert(0, "teacher")
    sections = [x for x in args.sections.split(",") if x]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    prefill_lengths = [int(x) for x in args.prefill.split(",") if x]
    profiled = set(prefill_lengths) if args.profile == "all" else set()  # the prompt lengths profiled
    if args.profile not in (None, "all"):
        try:
            profiled = {int(x) for x in args.profile.split(",") if x}
        except ValueError:
            raise SystemExit(f"--profile takes comma-separated prompt lengths, got {args.profile!r}") from None
        if not profiled <= set(prefill_lengths):
            raise SystemExit(f"--profile {args.profile}: profile only lengths that --prefill times ({args.prefill})")
    if "instructions" in sections and (sections != ["instructions"] or args.device != "cpu" or args.dtype != "fp32"):
        raise SystemExit("the instructions section runs alone, on the CPU in fp32 (the host section's models)")
    if args.teacher and {"ops", "host", "instructions"} & set(sections):
        raise SystemExit("the ops, host and instructions sections measure a narrow random copy of the slice; with "
                         "--teacher choose "
                         "other sections")
    if args.fla_interpreted:
        if not set(sections) <= {"ops", "host", "instructions"} or args.device != "cpu" or args.dtype != "fp32":
            raise SystemExit("--fla-interpreted runs on the CPU in fp32: use it with the ops, host and instructions "
                             "sections alone")
        from hydrahead.errors import FlaNotInstalledError
        from hydrahead.ops.gated_delta.interpret import interpret_fla_on_cpu

        try:
            interpret_fla_on_cpu()
        except (FlaNotInstalledError, RuntimeError) as err:
            raise SystemExit(f"--fla-interpreted: {err}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    heap = keep_freed_memory() if args.allocator == "kept" else False
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]

    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "dtype": args.dtype,
        "layers": args.layers, "vocab": args.vocab, "teacher": args.teacher, "plan": args.plan,
        "date": datetime.date.today().isoformat(),
        "load_before": os.getloadavg()[0], "allocator": args.allocator, "heap_allocator": heap,
        "prefill_chunk": args.prefill_chunk, "sections": sections,
        "ops": [], "host": [], "instructions": [], "floors": [], "prefill": [], "profiles": [], "decode": [], "generate": [],
        "max_batch": [],
        "cache": [],
    }
    if "ops" in sections:
        result["ops"] = op_counts(args)
        save(result, args)
    if "host" in sections:
        result["host"] = host_times(args)
        save(result, args)
    if "instructions" in sections:
        if os.environ.get(CALLGRIND_CHILD):
            return count_decode_instructions(args)  # the child, under callgrind: its counts are in its dumps
        result["instructions"] = host_instructions(args)
        save(result, args)
    timed = [x for x in sections if x not in ("ops", "host", "instructions", "floors")]
    if not timed and "floors" not in sections:
        return finish(result, args)

    models = build_models(args)
    if "floors" in sections:
        decode_lengths, batches = ([int(x) for x in a.split(",") if x] for a in (args.decode, args.batch))
        result["floors"] = floor_ratios(models, prefill_lengths, decode_lengths, batches)
        save(result, args)
    if not timed:
        return finish(result, args)
    names = list(models)
    check_decode_caches_agree(models)
    rate, bandwidth, gemv = gemm_rate(device, dtype), copy_bandwidth(device), matvec_bandwidth(device, dtype)
    result.update({"gemm_flops": rate, "copy_bytes_per_s": bandwidth, "matvec_bytes_per_s": gemv,
                   "parameters": {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}})
    print(f"GEMM {rate / 1e9:.1f} GFLOP/s, copy {bandwidth / 1e9:.1f} GB/s, matvec {gemv / 1e9:.1f} GB/s, threads {torch.get_num_threads()}, "
          f"load {result['load_before']:.2f}, allocator: {args.allocator}, prefill chunk: {args.prefill_chunk or 'none'}",
          flush=True)

    vocab = models["teacher"].config.vocab_size
    for T in prefill_lengths if "prefill" in sections else []:
        ids = torch.randint(0, vocab, (1, T), device=device)
        best: dict[str, float] = {}
        for r in range(args.repeats):
            for name in rotated(names, r):
                seconds, cache = time_prefill(models[name], ids, args.prefill_chunk)
                best[name] = min(best.get(name, float("inf")), seconds)
                if r == 0 and name != "teacher":
                    held, plan = cache.nbytes(), footprint(models[name])
                    expected = T * plan["kv_bytes_per_token"] + plan["state_bytes_per_sequence"]
                    actual = held["kv"] + held["recurrent"] + held["conv"]
                    result["cache"].append({"model": name, "tokens": T, "bytes": actual, "expected": expected})
                del cache
                gc.collect()
        if T in profiled:
            for name in names:
                ops = profile_prefill(models[name], ids, args.prefill_chunk)
                result["profiles"].append({"model": name, "tokens": T, "ops": ops})
                print(f"profile of one prefill, {T} tokens, {name}:", flush=True)
                for op in ops:
                    print(f"  {op['name']:<44} {op['calls']:>6} calls {op['ms']:>10.1f} ms")
        for name in names:
            floor = prefill_flops(models[name], T) / rate
            row = {"model": name, "tokens": T, "seconds": best[name], "ratio": best["teacher"] / best[name],
                   "floor_seconds": floor,
                   "floor_ratio": prefill_flops(models["teacher"], T) / prefill_flops(models[name], T)}
            result["prefill"].append(row)
            print(f"prefill {T:>6} {name:<14} {best[name]:8.3f} s  x{row['ratio']:.2f}  floor {floor:7.3f} s "
                  f"({best[name] / floor:.2f}x floor)", flush=True)
            save(result, args)

    kinds = ["dynamic", "static"]
    for batch in [int(x) for x in args.batch.split(",") if x] if "decode" in sections else []:
        for T in [int(x) for x in args.decode.split(",") if x]:
            times: dict[tuple[str, str], float] = {}
            for r in range(args.repeats):
                for name in rotated(names, r):
                    for kind in kinds:
                        s = time_decode(models[name], kind, T, batch, args.steps, eager_step)
                        times[name, kind] = min(times.get((name, kind), float("inf")), s)
                        gc.collect()
            eager = {n: min((t, k) for (m, k), t in times.items() if m == n) for n in names}
            graph_counts = {}
            if args.graphs:
                from torch._dynamo.utils import counters

                for name in names:
                    torch._dynamo.reset()
                    counters.clear()
                    times[name, "graphs"] = time_decode(models[name], "static", T, batch, args.steps,
                                                        graph_step(device), warmups=3)
                    # what the timing is of: one graph, replayed (a recompile, a graph break or a skipped CUDA
                    # graph would still give a number)
                    graph_counts[name] = {"graphs": counters["stats"]["unique_graphs"],
                                          "graph_breaks": sum(counters["graph_break"].values()),
                                          "cudagraph_skips": counters["inductor"].get("cudagraph_skips", 0)}
            for name in names:
                moved = decode_bytes(models[name], T, batch)
                floor = moved / bandwidth
                row = {"bytes": moved, "matvec_floor_ms": 1e3 * moved / gemv, "model": name, "context": T, "batch": batch,
                       "ms_per_token": {k: 1e3 * t for (m, k), t in times.items() if m == name},
                       "best_cache": eager[name][1], "ms": 1e3 * eager[name][0],
                       "ratio": eager["teacher"][0] / eager[name][0], "floor_ms": 1e3 * floor}
                if args.graphs:
                    row["graphs_ms"] = 1e3 * times[name, "graphs"]
                    row["graphs_ratio"] = times["teacher", "graphs"] / times[name, "graphs"]
                    row["graphs_compiled"] = graph_counts[name]
                result["decode"].append(row)
                detail = " ".join(f"{k} {v:.2f}" for k, v in row["ms_per_token"].items())
                print(f"decode B{batch} {T:>6} {name:<14} {row['ms']:8.2f} ms ({eager[name][1]})  x{row['ratio']:.2f}  "
                      f"floor {row['floor_ms']:.2f} ms ({row['ms'] / row['floor_ms']:.2f}x)  [{detail}]", flush=True)
                save(result, args)

    for T in [int(x) for x in args.generate.split(",") if x] if "generate" in sections else []:
        for name in names:
            torch._dynamo.reset()
            row = {"model": name, "context": T, **time_generate(models[name], T, args.new_tokens, args.repeats)}
            result["generate"].append(row)
        for row in result["generate"][-len(names):]:
            row["ratio"] = result["generate"][-len(names)]["ms"] / row["ms"]
            print(f"generate {T:>6} {row['model']:<14} {row['ms']:8.2f} ms/token  x{row['ratio']:.2f}  "
                  f"first call +{row['first_s']:.1f} s", flush=True)
            save(result, args)

    if "max-batch" in sections and device.type == "cuda":
        for T in [int(x) for x in args.max_batch.split(",") if x]:
            for name in names:
                row = {"model": name, "context": T, **max_batch(models[name], T)}
                result["max_batch"].append(row)
                print(f"max batch at {T}: {name:<14} {row['batch']} ({row['bytes_per_sequence'] / 2**30:.2f} GiB "
                      f"per sequence, checked: {row['checked']})", flush=True)
                save(result, args)
    finish(result, args)


def save(result: dict, args) -> None:
    """Write what is measured so far (a long GPU run killed by its time limit keeps its finished sections)."""
    write_json(args.json, result)


def finish(result: dict, args) -> None:
    result["load_after"] = os.getloadavg()[0]
    save(result, args)
    print_tables(result)
    if args.plot and result["prefill"]:
        plot(result, args.plot)


def print_tables(result: dict) -> None:
    if result["ops"]:
        print("\n| model | ops per layer, decode step | vs teacher | ops per layer, 1K prefill | vs teacher |\n"
              "|---|---:|---:|---:|---:|")
        for row in result["ops"]:
            print(f"| {row['model']} | {row['decode_mean']:.1f} | {row['decode_ratio']:.2f}x | "
                  f"{row['prefill_mean']:.1f} | {row['prefill_ratio']:.2f}x |")
    if result["host"]:
        tokens = result["host"][0]["prompt_tokens"]
        print(f"\n| model | eager decode step, host us | per layer | teacher / model | {tokens}-token prompt, host us | "
              "per layer | teacher / model |\n|---|---:|---:|---:|---:|---:|---:|")
        for row in result["host"]:
            print(f"| {row['model']} | {row['step_us']:.0f} | {row['layer_us']:.1f} | {row['ratio']:.2f}x | "
                  f"{row['prompt_us']:.0f} | {row['prompt_layer_us']:.1f} | {row['prompt_ratio']:.2f}x |")
    if result["instructions"]:
        print("\n| model | eager decode step, M instructions | K per layer | teacher / model |\n|---|---:|---:|---:|")
        for row in result["instructions"]:
            print(f"| {row['model']} | {row['step_instructions'] / 1e6:.3f} | {row['layer_instructions'] / 1e3:.1f} | "
                  f"{row['ratio']:.3f}x |")
    if result["generate"]:
        print("\n| context | model | generate ms/token | vs teacher | first call extra s |\n|---:|---|---:|---:|---:|")
        for row in result["generate"]:
            print(f"| {row['context']} | {row['model']} | {row['ms']:.2f} | {row['ratio']:.2f}x | {row['first_s']:.1f} |")
    if result["max_batch"]:
        print("\n| context | model | max batch | GiB per sequence | checked |\n|---:|---|---:|---:|---|")
        for row in result["max_batch"]:
            print(f"| {row['context']} | {row['model']} | {row['batch']} | {row['bytes_per_sequence'] / 2**30:.3f} | "
                  f"{row['checked']} |")
    if result["floors"]:
        print("\n| what | context | batch | model | teacher's floor / model's |\n|---|---:|---:|---|---:|")
        for row in result["floors"]:
            print(f"| {row['kind']} | {row['tokens']} | {row['batch']} | {row['model']} | {row['ratio']:.2f}x |")
    if not result["prefill"] and not result["decode"]:
        return
    print("\n| context | model | prefill s | vs teacher | the floors allow | vs floor |\n"
          "|---:|---|---:|---:|---:|---:|")
    for row in result["prefill"]:
        print(f"| {row['tokens']} | {row['model']} | {row['seconds']:.3f} | {row['ratio']:.2f}x | "
              f"{row['floor_ratio']:.2f}x | {row['seconds'] / row['floor_seconds']:.2f}x |")
    print("\n| batch | context | model | cache | ms/token | vs teacher | vs copy floor | vs matvec floor | graphs ms | "
          "graphs vs teacher | graphs vs copy floor |\n|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in result["decode"]:
        graphs = (f"{row['graphs_ms']:.2f} | {row['graphs_ratio']:.2f}x | {row['graphs_ms'] / row['floor_ms']:.2f}x"
                  if "graphs_ms" in row else "- | - | -")
        print(f"| {row['batch']} | {row['context']} | {row['model']} | {row['best_cache']} | {row['ms']:.2f} | "
              f"{row['ratio']:.2f}x | {row['ms'] / row['floor_ms']:.2f}x | {row['ms'] / row['matvec_floor_ms']:.2f}x | "
              f"{graphs} |")
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
