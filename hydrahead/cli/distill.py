"""Distil a head-level hybrid from its teacher in up to three stages (alignment, logit distillation,
long context), as a YAML recipe says. Under torchrun the same command trains on every process.

Examples:
  hydrahead distill --print-example-recipe > recipe.yaml
  hydrahead distill recipe.yaml
  hydrahead distill recipe.yaml --resume
  hydrahead distill recipe.yaml --set stages.align.tokens=10M --set training.progress=false
  torchrun --nproc-per-node 8 -m hydrahead distill recipe.yaml
"""

from __future__ import annotations

import argparse
import os

HELP = "train a converted hybrid from its teacher: alignment, distillation, long context"
# glibc's defaults, not the CLI's allocator setting: keeping freed memory made a SmolLM2 distillation peak at 11.4
# GB instead of 7.0 for about 4% of speed (docs/real_models.md section 7, "Memory")
KEEP_FREED_MEMORY = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="recipe YAML (see --print-example-recipe)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <output_dir>/checkpoint.safetensors (must come from the same recipe)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a recipe key by its dotted path, value in YAML, e.g. stages.align.lr=2.0e-3 "
                             "(repeatable)")
    parser.add_argument("--print-example-recipe", action="store_true", help="print a commented example recipe")


def parse_overrides(items: list[str]) -> dict:
    """["stages.align.lr=2.0e-3", ...] -> {"stages.align.lr": 0.002}; values are parsed as YAML."""
    import yaml

    from hydrahead.errors import RecipeError

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or "not valid YAML"
            raise RecipeError(f"--set {key}: cannot read {value!r} as a YAML value ({problem}); quote strings, "
                              "e.g. --set 'teacher=\"my model\"'") from None
    return overrides


def run(args: argparse.Namespace) -> int:
    from hydrahead.distill import EXAMPLE_RECIPE, Recipe
    from hydrahead.distill import run as run_recipe
    from hydrahead.errors import RecipeError

    if args.print_example_recipe:
        print(EXAMPLE_RECIPE, end="")
        return 0
    if args.recipe is None:
        raise RecipeError("give a recipe YAML file (or --print-example-recipe)")
    recipe = Recipe.from_yaml(args.recipe, parse_overrides(args.overrides))
    final = run_recipe(recipe, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        print(f"saved hybrid to {final}")
    return 0
