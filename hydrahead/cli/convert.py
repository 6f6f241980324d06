"""Convert a Hugging Face Qwen3 / Qwen2 / Llama / Mistral checkpoint into a head-level hybrid.

Example:
  hydrahead convert --model path/to/Qwen3-1.7B --plan plan.json --out hybrid/
  hydrahead convert --model teacher/ --plan plan.json --preset paper --option train_length=16384 --out hybrid/
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert a teacher checkpoint with a head plan into a hybrid checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="teacher directory (config.json + weights)")
    parser.add_argument("--plan", required=True, help="head plan JSON (from `hydrahead plan` or HeadPlan.to_json)")
    parser.add_argument("--out", required=True, help="output directory for the hybrid checkpoint")
    parser.add_argument("--preset", default="paper", choices=["paper", "exact"], help="hybrid options preset")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="override one hybrid option, e.g. conv_size=0 or train_length=16384 (repeatable)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="dtype to load the teacher in (default: the checkpoint's)")


def parse_overrides(items: list[str]) -> dict:
    import json

    from hydrahead.errors import OptionsError

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise OptionsError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value  # plain strings such as fa_rope=none
    return overrides


def load_teacher(path: str, dtype: str = "auto"):
    """Load a teacher with transformers, turning a missing or unreadable directory into CheckpointError."""
    import torch
    from transformers import AutoModelForCausalLM

    from hydrahead.errors import CheckpointError
    from hydrahead.models.io import read_config

    read_config(path)  # clear error for a missing directory or config.json
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"could not load teacher {path}: {err}") from err


def run(args: argparse.Namespace) -> int:
    from hydrahead import HeadPlan, HybridOptions, convert

    plan = HeadPlan.from_json(args.plan)
    options = HybridOptions.preset(args.preset, **parse_overrides(args.option))
    teacher = load_teacher(args.model, args.dtype)
    model = convert(teacher, plan, options)
    out = Path(args.out)
    model.save_pretrained(out)
    try:  # keep the tokenizer next to the weights when the teacher has one
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(args.model).save_pretrained(out)
    except (OSError, ValueError):
        pass
    print(plan.summary())
    print(f"saved hybrid to {out}")
    return 0
