"""Check head scores: NIAH accuracy with the top-k scored heads ablated versus k random other heads
(one set per seed), and agreement (Spearman, top-k Jaccard) between methods and `patching`.

Ablation runs on fresh probes (the scores' probe settings with the seed + 1, unless --probe-seed; the
probe options given here change them); agreement compares methods on the scores' own probes, whatever the
probe options say. Methods not given with --compare are computed
(patching is the slow one: a forward per batch of heads), with the sender term where the --scores file has
one (--senders / --no-senders choose); --no-agreement skips this.

Example:
  hydrahead validate-scores --model teacher/ --scores scores.json --top-k 8 --out validation.json
  hydrahead validate-scores --model teacher/ --scores scores.json --compare attr.json --layer-plot layers.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydrahead.cli.args import output_figure, output_file, positive_int
from hydrahead.utils.io import outputs_apart
from hydrahead.utils.units import counted

HELP = "ablate top-k vs random heads and compare scoring methods (table + JSON)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hydrahead.cli.score import add_model_arguments, add_probe_arguments

    add_model_arguments(parser)
    parser.add_argument("--scores", required=True, help="head scores JSON (from `hydrahead score`)")
    parser.add_argument("--top-k", type=positive_int, default=8, help="heads to ablate (default 8)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="random head sets to ablate (default 3)")
    parser.add_argument("--mode", default="mean", choices=["mean", "zero"], help="ablation (default mean)")
    parser.add_argument("--compare", action="append", default=[], metavar="JSON",
                        help="scores of another method to compare with (repeatable)")
    parser.add_argument("--no-agreement", action="store_true", help="skip computing the methods not given")
    parser.add_argument("--senders", action=argparse.BooleanOptionalAction, default=None,
                        help="compute patching and attribution for the agreement table with their sender term, or "
                             "(--no-senders) the receiver term alone (default: as the --scores file was made)")
    parser.add_argument("--layer-plot", default=None, metavar="FIGURE", type=output_figure,
                        help="also save the layer-output similarity matrix (.png, .pdf or .svg)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="patched heads per forward, where patching is computed for the agreement (default 16)")
    parser.add_argument("--out", default=None, type=output_file, help="output JSON for the report")
    add_probe_arguments(parser, "unset options take the --scores file's own probe settings (the defaults below\n"
                                "apply only where it has none); ablation draws its probes with the seed + 1")


def probe_config_of(saved, path: str):
    """The probe settings a score file records, or ScoringError naming the file when they are unreadable."""
    from hydrahead.errors import ProbeError, ScoringError
    from hydrahead.scoring import ProbeConfig

    try:
        return ProbeConfig.from_dict(saved)
    except ProbeError as err:  # its types and values are checked there
        raise ScoringError(f"{path}: its probe settings (metadata.probe_config) are unreadable: {err}") from None


def run(args: argparse.Namespace) -> int:
    from hydrahead.cli.score import describe_leads, load_model_and_tokenizer, patching_note, probe_config_from
    from hydrahead.models.loading import read_config
    from hydrahead.scoring import (
        METHODS, HeadScores, ProbeConfig, ScoringError, build_probes, layer_similarity, score_heads, validate_scores,
    )
    from hydrahead.scoring.validate import check_top_k

    # every file and setting is checked against the model's config before the (slow) load
    outputs_apart({"--out": args.out, "--layer-plot": args.layer_plot},
                  {"--scores": args.scores, "--compare": args.compare, "--model": args.model,
                   "--tokenizer": args.tokenizer, "--probes-file": args.probes_file})
    model_config = read_config(args.model)
    scores = HeadScores.from_json(args.scores).check_config(model_config)
    compare, sources = {}, {scores.method: args.scores}  # method -> scores, and the file each came from
    for path in args.compare:
        other = HeadScores.from_json(path).check_config(model_config)
        if other.method in sources:
            raise ScoringError(f"{path} holds {other.method} scores, as {sources[other.method]} does: the agreement "
                               "table has one row per method, so give one file per method")
        compare[other.method], sources[other.method] = other, path
    computed = set() if args.no_agreement else set(METHODS) - set(sources)  # what the agreement table computes
    if args.batch_size is not None and "patching" not in computed:  # they were ignored
        raise ScoringError("--batch-size sets patching's batch where patching is computed for the agreement table; "
                           "here it is not (the scores or --compare give it, or --no-agreement)")
    if args.senders is not None and not computed & {"patching", "attribution"}:
        raise ScoringError("--senders sets how patching or attribution is computed for the agreement table; here "
                           "neither is (the scores or --compare give them, or --no-agreement)")
    saved = scores.metadata.get("probe_config")
    base = probe_config_of(saved, args.scores) if saved else None
    chosen = probe_config_from(args, base, model_config=model_config)  # every flag given, --probe-seed too
    # the agreement table compares methods on the scores' own probes: their settings and seed, whatever the probe
    # flags say (those set the ablation's; --probes-file names the scores' haystack files from here); ablation
    # runs on probes the scores have not seen: --probe-seed, else the scores' seed + 1
    scores_seed = base.seed if base is not None else ProbeConfig().seed
    if base is not None:
        moved = {"haystack_files": chosen.haystack_files} if args.probes_file and base.haystack == "files" else {}
        scoring_config = ProbeConfig.from_dict({**base.to_dict(), **moved})
    else:
        scoring_config = ProbeConfig.from_dict({**chosen.to_dict(), "seed": scores_seed})
    validation_config = ProbeConfig.from_dict({**chosen.to_dict(), "seed": scores_seed + 1}) \
        if args.probe_seed is None else chosen
    if chosen.haystack == "files":  # the scores file's own haystack files, before the (slow) load
        missing = [f for f in chosen.haystack_files if not Path(f).is_file()]
        if missing:
            raise ScoringError(f"{args.scores}: its probes' haystack file {missing[0]} is not found (paths are as "
                               "score was given them); pass --probes-file to name it from here")
    if args.probe_seed == scores_seed:
        print(f"note: --probe-seed {args.probe_seed} is the seed the scores were computed on: the ablation runs on "
              "the probes that chose the heads", flush=True)
    check_top_k(args.top_k, scores.values.size, "--top-k")  # the library's check, before the load
    if not args.no_agreement and "patching" not in sources:
        patching_note(args.device, "for the agreement table alone: --no-agreement skips it, --compare FILE takes "
                                   "patching scores made elsewhere")
    model, tokenizer = load_model_and_tokenizer(args, model_config)
    if not args.no_agreement:
        missing = [m for m in METHODS if m != scores.method and m not in compare]
        probes = build_probes(tokenizer, scoring_config, model=model, progress=True) if missing else []
        senders = next(x for x in (args.senders, scores.senders, True) if x is not None)  # flag, else the file's
        for method in missing:
            causal = method in ("patching", "attribution")
            print(f"computing {method} scores on {counted(len(probes), 'probe')} for the agreement table"
                  f"{(' (with senders)' if senders else ' (receiver term alone)') if causal else ''} ...", flush=True)
            options = {"max_rounds": 0} if causal and not senders else {}
            compare[method] = score_heads(model, tokenizer, method, probes, probe_config=scoring_config,
                                          batch_size=args.batch_size or 16, progress=True, **options)
    probes = build_probes(tokenizer, validation_config, model=model, progress=True)
    print(f"ablating on {counted(len(probes), 'probe')} of {validation_config.context_length} tokens "
          f"({describe_leads(probes, tokenizer, validation_config)})", flush=True)
    report = validate_scores(model, probes, scores, args.top_k, seeds=tuple(range(args.seeds)), mode=args.mode,
                             compare=compare, progress=True)
    if args.layer_plot:
        similarity = layer_similarity(model, probes)
        similarity.plot(args.layer_plot)
        report.layer_similarity = similarity.matrix.tolist()
    print(report.table())
    if args.out:
        report.to_json(args.out)
        print(f"saved report to {args.out}")
    if args.layer_plot:
        print(f"saved the layer-output similarity matrix to {args.layer_plot}")
    return 0
