"""Summarise a hybrid checkpoint: FA heads and FA KV heads per layer, KV-cache bytes per token against
the teacher, recurrent state per sequence, and the parameters conversion added. A plain model (a teacher, a
.gguf) gets its shape and KV-cache bytes per token, read from its config alone.

Example:
  hydrahead info hybrid/
  hydrahead info teacher/      # what a hybrid of it is measured against
"""

from __future__ import annotations

import argparse

from hydrahead.cli.args import model_path

HELP = "show a hybrid checkpoint's plan, cache footprint and added parameters (a plain model: its KV cache)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=model_path, help="hybrid checkpoint directory (or a plain model's, or a .gguf)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from hydrahead.models.footprint import footprint
    from hydrahead.models.loading import from_pretrained, hybrid_model_types, read_config

    config = read_config(args.path)
    if config.get("model_type") not in hybrid_model_types():
        return _plain(args, config)
    model = from_pretrained(args.path)
    report = footprint(model)
    if args.json:
        print(json.dumps({"hybrid": True, **report}, indent=1))
        return 0
    print(model.hydrahead_plan.summary())
    print(f"options: {model.hydrahead_options.to_dict()}")
    print(
        f"KV cache per token: {report['kv_bytes_per_token']:,} bytes "
        f"(teacher {report['teacher_kv_bytes_per_token']:,}; {100 * report['kv_cache_fraction']:.1f}%) in "
        f"{report['dtype']}, the checkpoint's dtype"
        + ("" if report["dtype"] == "float32" else " (`generate` and `eval` run float32 on a CPU by default)")
    )
    print(f"GDN state and conv window per sequence: {report['state_bytes_per_sequence']:,} bytes (constant in length)")
    print(f"parameters: {report['parameters']:,} (teacher {report['teacher_parameters']:,}; "
          f"added by conversion {report['parameters_added']:+,})")
    return 0


def _plain(args: argparse.Namespace, config: dict) -> int:
    """A plain model's shape and KV cache per token (every head full attention), from its config: no weights read."""
    import json

    import torch

    from hydrahead.errors import UnsupportedModelError
    from hydrahead.models.footprint import kv_bytes_per_token
    from hydrahead.models.files import find_gguf
    from hydrahead.models.loading import check_config
    from hydrahead.models.shape import ModelShape

    if find_gguf(args.path) is None:
        check_config(args.path)  # a dtype torch lacks, a count that is not one: refused as the loaders refuse it
    shape = ModelShape.from_config(config)
    if shape.head_dim is None:
        raise UnsupportedModelError(f"{args.path}: its config gives neither head_dim nor hidden_size, so the K/V "
                                    "bytes per token are unknown")
    named = next((config[k] for k in ("dtype", "torch_dtype") if isinstance(config.get(k), str)), "auto")
    dtype = "float32" if named == "auto" else named  # "auto" or none: float32, as the loaders give it on a CPU
    report = {"hybrid": False, "model_type": config.get("model_type"), "layers": shape.layers, "heads": shape.heads,
              "kv_heads": shape.kv_heads, "head_dim": shape.head_dim, "dtype": dtype,
              "kv_bytes_per_token": kv_bytes_per_token(shape, shape.layers * shape.kv_heads,
                                                       getattr(torch, dtype).itemsize)}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{args.path}: a plain {report['model_type']} model, not a hybrid: {shape.layers} layers x {shape.heads} "
          f"query heads ({shape.kv_heads} KV heads, head_dim {shape.head_dim}), every head full attention")
    source = "the checkpoint's dtype" if named != "auto" else "its config names no dtype"
    print(f"KV cache per token: {report['kv_bytes_per_token']:,} bytes in {dtype} ({source}); a hybrid of it "
          "(hydrahead score -> plan -> convert) keeps the full-attention heads' share of it")
    return 0
