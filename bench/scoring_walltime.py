"""Wall time of each head-scoring method on a random-weight Qwen3 of a stated shape.

Probes are built with a character tokenizer (vocabulary 97) at the given context length; the model has
random weights, so the scores themselves mean nothing here, only the cost. Each method runs once after
a warm-up on one probe; `patching` runs with batch size 1 as well, to show what batching heads along the
batch dimension buys (batch size 1 still starts each patched run at its layer; a forward per head from
the embeddings would cost more). Prints a markdown table: forward calls, sequence-forwards
(full-depth sequence equivalents), backward passes, wall seconds.

    python bench/scoring_walltime.py
    python bench/scoring_walltime.py --layers 4 --heads 8 --kv-heads 2 --hidden 256 --context 1024 --probes 4
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's hydrahead

from transformers import Qwen3Config, Qwen3ForCausalLM  # noqa: E402

from hydrahead.scoring import ProbeConfig, build_probes, score_heads  # noqa: E402
from tests.toy_tokenizer import char_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--context", type=int, default=1024,
                        help="prompt tokens per probe (a multi-key probe's needles and question alone take 559 with this tokenizer)")
    parser.add_argument("--probes", type=int, default=4, help="probes (half single-key, half multi-key; numbers)")
    parser.add_argument("--batch-size", type=int, default=32, help="patched heads per forward")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = char_tokenizer()
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                         head_dim=args.hidden // args.heads, max_position_embeddings=4 * args.context)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config).to(args.device).eval()
    probe_config = ProbeConfig(context_length=args.context, samples=max(1, args.probes // 2), needle_types=("number",))
    probes = build_probes(tokenizer, probe_config)[: args.probes]
    runs = [("patching", dict(batch_size=args.batch_size)), ("patching", dict(batch_size=1)),
            ("patching", dict(batch_size=args.batch_size, receiver_fraction=0.25)), ("attribution", dict(senders=False)),
            ("attribution", {}), ("attribution", dict(receiver_fraction=0.25)), ("retrieval", {})]
    score_heads(model, method="patching", probes=probes[:1], batch_size=args.batch_size, min_delta=1e-12, max_rounds=1)  # warm-up

    print(f"Qwen3 {args.layers} layers x {args.heads} heads ({args.kv_heads} KV heads), hidden {args.hidden}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; {len(probes)} probes of "
          f"{min(p.length for p in probes)}-{max(p.length for p in probes)} tokens; {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}")
    print()
    print("| method | options | forward calls | sequence-forwards | backwards | wall s | s / probe |")
    print("|---|---|---|---|---|---|---|")
    for method, options in runs:
        extra = {"min_delta": 1e-12} if method != "retrieval" else {}
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        scores = score_heads(model, method=method, probes=probes, **options, **extra)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        meta = scores.metadata
        described = ", ".join(f"{k}={v}" for k, v in options.items())
        if "receiver_sets" in meta:  # a sender term: patching, attribution with senders
            receivers = meta["receiver_sets"][-1]
            rounds = f"{len(receivers)} receivers in layers {sorted({l for l, _ in receivers})}, {meta['rounds']} sender round(s)"
            described = f"{described}; {rounds}" if described else rounds
        print(f"| {method} | {described or '-'} | {meta['forward_calls']} | {meta['sequence_forwards']:.1f} | "
              f"{meta['backwards']} | {wall:.1f} | {wall / len(probes):.2f} |")
    heads = args.layers * args.heads
    print()
    print(f"A forward per head from the embeddings would be {heads} sequence-forwards per probe for the receiver "
          f"score alone ({heads * len(probes)} here), plus as many per sender round.")


if __name__ == "__main__":
    main()
