"""Export a llama.cpp GGUF model as an ordinary transformers checkpoint: safetensors weights (dequantised),
config.json, and the tokenizer with its chat template. Every other command but serve also takes the .gguf
directly as --model; exporting once saves dequantising it on every load (serve needs the exported directory).
Needs pip install 'hydrahead[gguf]'.

Example:
  hydrahead export SmolLM2-135M-Instruct.Q4_1.gguf smollm2/
  hydrahead export models/qwen3-gguf/ qwen3/ --dtype bfloat16
"""

from __future__ import annotations

import argparse

from hydrahead.cli.args import model_path, output_dir

HELP = "write a .gguf model as a safetensors checkpoint directory with its tokenizer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=model_path, help=".gguf file, or a directory holding one")
    parser.add_argument("out", type=output_dir, help="output checkpoint directory")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the written weights (default float32, what dequantising gives)")


def stored_parameters(path) -> int:
    """Parameters in a checkpoint's safetensors files, read from their headers (a tied matrix counts once)."""
    import math

    from safetensors import safe_open

    from hydrahead.models.files import weight_files

    total = 0
    for file in weight_files(path):
        with safe_open(str(file), framework="pt") as f:
            total += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    return total


def run(args: argparse.Namespace) -> int:
    from hydrahead.models.gguf import export_gguf
    from hydrahead.models.loading import read_config
    from hydrahead.models.shape import ModelShape

    out = export_gguf(args.model, args.out, args.dtype)
    config = read_config(out)
    print(f"exported a {config['model_type']} model: {ModelShape.from_config(config).describe()}, "
          f"{stored_parameters(out):,} parameters in {config.get('dtype', args.dtype)}")
    print(f"saved checkpoint to {out}")
    return 0
