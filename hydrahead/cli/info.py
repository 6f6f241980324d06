"""Summarise a hybrid checkpoint: FA heads and FA KV heads per layer, KV-cache bytes per token against
the teacher, recurrent state per sequence, and the parameters conversion added.

Example:
  hydrahead info hybrid/
"""

from __future__ import annotations

import argparse

from hydrahead.cli.args import model_path

HELP = "show a hybrid checkpoint's plan, cache footprint and added parameters"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=model_path, help="hybrid checkpoint directory")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from hydrahead.models.footprint import footprint
    from hydrahead.models.loading import from_pretrained

    model = from_pretrained(args.path)
    report = footprint(model)
    if args.json:
        print(json.dumps(report, indent=1))
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
