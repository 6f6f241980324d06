"""Run the whole story at small scale, offline: build a corpus from the Python standard library and
synthetic retrieval documents, train a BPE tokenizer and a small Qwen3 teacher (cached), score its heads,
build HydraHead 7:1 and the baseline plans (random 7:1, fixed per-layer 7:1, layer-wise 3:1 and 7:1,
all-GDN), distil every plan with the same recipe and budget, evaluate NIAH at 1x-8x the training length
and held-out perplexity, and write <out>/report/index.md with tables and plots.

Examples:
  hydrahead demo                          # default scale: about 20 minutes on a 2-core CPU
  hydrahead demo --scale tiny --out /tmp/demo   # smoke test, a minute or two
  hydrahead demo --scale gpu --device cuda      # larger run for a GPU
"""

from __future__ import annotations

import argparse

HELP = "run score -> plan -> convert -> distill -> evaluate on a small teacher trained here, and write a report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hydrahead.demo.scale import SCALES

    parser.add_argument("--out", default="demo_out", help="output directory (the teacher is cached here)")
    parser.add_argument("--scale", default="default", choices=list(SCALES), help="how big a run")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--teacher-steps", type=int, default=None, help="override the teacher's training steps")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from hydrahead.demo.pipeline import run as run_demo
    from hydrahead.demo.scale import get_scale

    hf_logging.disable_progress_bar()  # the demo prints its own progress lines
    overrides = {} if args.teacher_steps is None else {"teacher_steps": args.teacher_steps}
    index = run_demo(args.out, get_scale(args.scale, **overrides), device=args.device, quiet=args.quiet)
    print(f"report: {index}")
    return 0
