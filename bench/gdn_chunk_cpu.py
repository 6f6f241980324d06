"""Time hydrahead's chunked gated delta rule against transformers' PyTorch reference on CPU.

Both run on the same fp32 inputs (q, k L2-normalised; g = logsigmoid(randn), beta = sigmoid(randn), or with
--gates converted the gates of a freshly converted GDN branch: per head a constant log decay from -0.001 to -1.6,
beta = 0.5, where the chunk form's decay products reach fp32's subnormal range), forward only (no_grad) and
forward + backward (gradients of o and of the final state). Runs of the two implementations are interleaved,
so that a slow phase of a shared machine hits both alike, and each time is the median (or, with --statistic min,
the minimum: steadier on a busy machine) over --repeats runs after --warmup runs. Prints a markdown table; the
ratio is transformers' time / ours (above 1: ours is faster).

    python bench/gdn_chunk_cpu.py
    python bench/gdn_chunk_cpu.py --shapes 1x4x64x512 2x8x128x1024 --repeats 15
    python bench/gdn_chunk_cpu.py --gates converted --shapes 1x14x128x640 --statistic min
"""

from __future__ import annotations

import argparse
import inspect
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's hydrahead

from transformers.models.qwen3_next import modeling_qwen3_next  # noqa: E402

from hydrahead.layers.gdn import GatedDeltaNetBranch  # noqa: E402
from hydrahead.ops.gated_delta.chunk import chunk_gated_delta_rule  # noqa: E402

# transformers swaps in fla's kernels when fla is installed; unwrap to time its PyTorch code.
transformers_chunk = inspect.unwrap(modeling_qwen3_next.torch_chunk_gated_delta_rule)

DEFAULT_SHAPES = ["1x4x64x512", "1x4x64x2048", "2x8x128x1024"]  # B x H x D x T, with Dk = Dv = D


def parse_shape(text: str) -> tuple[int, int, int, int]:
    try:
        batch, heads, dim, seq_len = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be BxHxDxT, e.g. 1x4x64x512, got {text!r}") from None
    return batch, heads, dim, seq_len


def make_inputs(batch: int, heads: int, dim: int, seq_len: int, gates: str = "logsigmoid") -> list[torch.Tensor]:
    """q, k, v: (B, T, H, D); g, beta: (B, T, H); all fp32."""
    if gates == "converted":  # what conversion starts from: ab_proj is zero, so a = b = 0 for every token
        branch = GatedDeltaNetBranch(8, heads, 8, qkv_bias=False, qk_norm=False, eps=1e-6, conv_size=0, rope=False)
        with torch.no_grad():
            g, beta = branch.gates(*torch.zeros(2, batch, seq_len, heads))
    else:
        g, beta = F.logsigmoid(torch.randn(batch, seq_len, heads)), torch.sigmoid(torch.randn(batch, seq_len, heads))
    return [
        F.normalize(torch.randn(batch, seq_len, heads, dim), dim=-1),
        F.normalize(torch.randn(batch, seq_len, heads, dim), dim=-1),
        torch.randn(batch, seq_len, heads, dim),
        g,
        beta,
    ]


def forward(fn: Callable, inputs: list[torch.Tensor], chunk_size: int) -> None:
    with torch.no_grad():
        fn(*inputs, chunk_size=chunk_size, output_final_state=True)


def forward_backward(fn: Callable, inputs: list[torch.Tensor], chunk_size: int) -> None:
    leaves = [x.detach().requires_grad_() for x in inputs]
    o, state = fn(*leaves, chunk_size=chunk_size, output_final_state=True)
    torch.autograd.backward([o, state], [torch.ones_like(o), torch.ones_like(state)])


def timed_ms(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3


def bench_shape(
    shape: tuple[int, int, int, int], chunk_size: int, warmup: int, repeats: int, statistic: Callable,
    gates: str = "logsigmoid",
) -> dict[str, dict]:
    """{pass: {impl: statistic of ms}} for pass in (forward, forward+backward), impl in (ours, transformers)."""
    torch.manual_seed(0)
    inputs = make_inputs(*shape, gates=gates)
    impls = {"ours": chunk_gated_delta_rule, "transformers": transformers_chunk}
    passes = {"forward": forward, "forward+backward": forward_backward}
    times: dict[str, dict[str, list[float]]] = {p: {name: [] for name in impls} for p in passes}
    for step in range(warmup + repeats):
        order = list(impls.items()) if step % 2 == 0 else list(impls.items())[::-1]  # alternate who goes first
        for pass_name, pass_fn in passes.items():
            for name, fn in order:
                ms = timed_ms(lambda: pass_fn(fn, inputs, chunk_size))
                if step >= warmup:
                    times[pass_name][name].append(ms)
    return {p: {name: statistic(ts) for name, ts in by_impl.items()} for p, by_impl in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shapes", nargs="+", type=parse_shape, default=[parse_shape(s) for s in DEFAULT_SHAPES],
        metavar="BxHxDxT", help=f"shapes to time, Dk = Dv = D (default: {' '.join(DEFAULT_SHAPES)})",
    )
    parser.add_argument("--chunk-size", type=int, default=64, help="chunk size of both implementations (default: 64)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per shape (default: 2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per shape (default: 10)")
    parser.add_argument("--statistic", choices=["median", "min"], default="median",
                        help="how the timed runs are summarised (default: median)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's default)")
    parser.add_argument("--gates", choices=["logsigmoid", "converted"], default="logsigmoid",
                        help="g and beta: logsigmoid(randn) and sigmoid(randn), or a freshly converted branch's "
                             "(fast-decaying heads; default: logsigmoid)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    machine = platform.processor() or platform.machine()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine}, fp32, chunk size {args.chunk_size}, "
        f"{args.statistic} of {args.repeats} runs after {args.warmup} warm-up, {args.gates} gates\n"
    )
    print("| B | H | D | T | pass | ours (ms) | transformers (ms) | ratio (transformers / ours) |")
    print("|---|---|---|---|------|----------:|------------------:|---------------------------:|")
    for shape in args.shapes:
        statistic = statistics.median if args.statistic == "median" else min
        results = bench_shape(shape, args.chunk_size, args.warmup, args.repeats, statistic, args.gates)
        for pass_name, ms in results.items():
            ratio = ms["transformers"] / ms["ours"]
            cells = [*map(str, shape), pass_name, f"{ms['ours']:.1f}", f"{ms['transformers']:.1f}", f"{ratio:.2f}x"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
