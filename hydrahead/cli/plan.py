"""Make a head plan (which heads keep full attention) from head scores, or a baseline plan.

Example:
  hydrahead plan --scores scores.json --ratio 7:1 --min-per-layer 1 --out plan.json
  hydrahead plan --scores scores.json --ratio 7:1 --granularity kv_group --min-per-layer 0 --out plan.json
  hydrahead plan --baseline layerwise --model teacher/ --ratio 3:1 --out layerwise.json
  hydrahead plan --baseline random --model teacher/ --ratio 7:1 --seed 0 --out random.json
  hydrahead plan --baseline fixed-per-layer --scores scores.json --k 2 --out fixed.json
"""

from __future__ import annotations

import argparse

from hydrahead.cli.args import model_path, nonnegative_int, output_file, positive_int
from hydrahead.utils.io import outputs_apart

HELP = "choose full-attention heads from scores (or a layer-wise / random / per-layer baseline)"


# which --baseline each option applies to: an option given for another is refused, not silently ignored
APPLIES = {"ratio": ("scores", "random", "layerwise"), "min_per_layer": ("scores", "random"),
           "granularity": ("scores", "random"), "seed": ("random",), "k": ("fixed-per-layer",),
           "layers": ("layerwise",)}
DEFAULTS = {"ratio": None, "min_per_layer": 1, "granularity": "query_head", "seed": 0, "k": None, "layers": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scores", default=None, help="head scores JSON (from `hydrahead score`)")
    parser.add_argument("--model", default=None, type=model_path, help="teacher (a directory or a .gguf): its shape for baselines, and a check of --scores")
    parser.add_argument("--out", required=True, type=output_file, help="output plan JSON")
    parser.add_argument("--baseline", default="scores", choices=["scores", "layerwise", "random", "fixed-per-layer"],
                        help="scores: global top-k from --scores (default); the others are comparison baselines")
    parser.add_argument("--ratio", default=DEFAULTS["ratio"],
                        help="LA:FA ratio, linear-attention (GDN) heads to full-attention heads (default 7:1; 3:1 "
                             "for layerwise); scores, random, layerwise")
    parser.add_argument("--min-per-layer", type=nonnegative_int, default=DEFAULTS["min_per_layer"],
                        help="FA heads every layer keeps (default 1); scores, random")
    parser.add_argument("--granularity", default=DEFAULTS["granularity"], choices=["query_head", "kv_group"],
                        help="what is kept as FA: single query heads, or whole GQA groups (kv_group: the KV cache "
                             "shrinks exactly by the plan; a group scores as its best head); scores, random")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="random: the seed of the draw")
    parser.add_argument("--k", type=positive_int, default=DEFAULTS["k"], help="fixed-per-layer: FA heads per layer (required)")
    parser.add_argument("--layers", default=DEFAULTS["layers"], help="layerwise: comma list of FA layers (default evenly spaced)")


def _shape_config(args: argparse.Namespace, scores):
    """The model shape (from --model's config.json, else from --scores)."""
    from hydrahead.errors import PlanError
    from hydrahead.models.families import family_of_config
    from hydrahead.models.loading import read_config
    from hydrahead.models.shape import ModelShape

    if args.model:
        config = read_config(args.model)
        family_of_config(config, args.model)
        return ModelShape.from_config(config)
    if scores is None:
        raise PlanError(f"--baseline {args.baseline} needs --model (or --scores) for the model shape")
    return scores.shape


def parse_layers(text: str) -> list[int]:
    from hydrahead.errors import PlanError

    try:
        layers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        layers = []
    if not layers:
        raise PlanError(f"--layers expects a comma list of layer indices such as 0,4,8, got {text!r}")
    return layers


def ratio_of(args: argparse.Namespace) -> str:
    """--ratio, or the baseline's default (layerwise 3:1, the others 7:1)."""
    return args.ratio or ("3:1" if args.baseline == "layerwise" else "7:1")


def ratio_note(plan, args: argparse.Namespace) -> str | None:
    """A note when the plan's LA:FA is not the one asked for: the shape allows only whole layers (layerwise),
    whole KV groups or a minimum per layer, and the count is rounded."""
    from hydrahead.plan import parse_ratio

    asked = ratio_of(args)
    la, fa = parse_ratio(asked)
    if plan.num_la * fa == plan.num_fa * la:
        return None
    achieved = "inf" if plan.num_fa == 0 else f"{plan.la_fa_ratio:.2f}:1"
    units = (f"{sum(map(bool, plan.fa_heads))} of {plan.num_layers} layers" if args.baseline == "layerwise"
             else f"{plan.num_fa} of {plan.num_layers * plan.num_heads} heads")
    return f"note: LA:FA is {achieved}, not the {asked} asked for: the nearest this model's shape allows ({units} FA)"


def run(args: argparse.Namespace) -> int:
    from hydrahead import HeadPlan
    from hydrahead.errors import PlanError
    from hydrahead.scoring import HeadScores

    for name, baselines in APPLIES.items():
        if getattr(args, name) != DEFAULTS[name] and args.baseline not in baselines:
            raise PlanError(f"--{name.replace('_', '-')} applies to --baseline {' / '.join(baselines)}, "
                            f"not {args.baseline}")
    if args.layers is not None and args.ratio is not None:
        raise PlanError("--baseline layerwise takes --ratio (evenly spaced FA layers) or --layers, not both")
    outputs_apart({"--out": args.out}, {"--scores": args.scores, "--model": args.model})
    if args.baseline in ("scores", "fixed-per-layer") and args.scores is None:
        raise PlanError(f"--baseline {args.baseline} needs --scores")
    scores = HeadScores.from_json(args.scores) if args.scores else None
    config = _shape_config(args, scores)
    if args.baseline == "scores":
        plan = HeadPlan.from_scores(scores, ratio_of(args), args.min_per_layer, args.granularity,
                                    config=config if args.model else None)
    elif args.baseline == "fixed-per-layer":
        if args.k is None:
            raise PlanError("--baseline fixed-per-layer needs --k (FA heads per layer)")
        plan = HeadPlan.fixed_per_layer(scores, args.k, config=config if args.model else None)
    elif args.baseline == "random":
        plan = HeadPlan.random(config, ratio_of(args), args.seed, args.min_per_layer, args.granularity)
    else:
        layers = parse_layers(args.layers) if args.layers is not None else None
        plan = HeadPlan.layerwise(config, ratio_of(args), layers)
    plan.to_json(args.out)
    print(plan.summary())
    if args.baseline in APPLIES["ratio"] and args.layers is None and (note := ratio_note(plan, args)):
        print(note)
    if plan.meta.get("tied_picks"):
        unit = "KV groups" if plan.meta.get("granularity") == "kv_group" else "heads"
        print(f"note: {plan.meta['tied_picks']} of the FA {unit} were picked among equal scores (the lower layer, then "
              "the lower index, decided): the scores do not rank them")
    print(f"saved plan to {args.out}")
    return 0
