"""Score every attention head of a teacher for retrieval, on counterfactual needle-in-a-haystack probes.

Methods: patching (the paper's receiver + sender activation patching, Eq. 9-12), attribution (the same two
scores to first order, from gradients: one backward per probe for the receiver term, then per probe and round one
clean backward plus one per receiver layer for the sender term, instead of a forward per head), retrieval (Wu et
al. 2024 copy-paste score).

Example:
  hydrahead score --model path/to/Qwen3-1.7B --method patching --out scores.json --plot heads.png
  hydrahead score --model teacher/ --method attribution --probes-file essays.txt --context-length 4096 --out attr.json
"""

from __future__ import annotations

import argparse

from hydrahead.cli.args import (
    device, length, model_path, nonnegative_int, output_figure, output_file, positive_int, tokenizer_path,
)
from hydrahead.utils.io import outputs_apart
from hydrahead.utils.units import counted

HELP = "score attention heads (patching, attribution or retrieval) and save them as JSON"


def add_probe_arguments(parser: argparse.ArgumentParser, description: str | None = None) -> None:
    """Probe options shared by `score` and `validate-scores` (unset ones keep their defaults; `description`
    says where those come from when not from the defaults in the help)."""
    group = parser.add_argument_group("probes", description)
    group.add_argument("--probes-file", action="append", default=None, metavar="TXT",
                       help="haystack text file (repeatable); default: a built-in essay generator")
    group.add_argument("--haystack", choices=["essay", "noise"], default=None, help="built-in haystack kind")
    group.add_argument("--context-length", type=length, default=None,
                       help="prompt length in tokens (default 1024, or the model's max_position_embeddings if shorter)")
    group.add_argument("--samples", type=positive_int, default=None, help="pairs per (capability, needle type) (default 6)")
    group.add_argument("--needle-types", default=None, help="comma list of number,word,uuid (default all)")
    group.add_argument("--capabilities", default=None, help="comma list of single_key,multi_key (default both)")
    group.add_argument("--num-keys", type=positive_int, default=None, help="needles in a multi-key probe (default 4)")
    group.add_argument("--probe-seed", type=int, default=None, help="probe generator seed (default 0)")
    group.add_argument("--answer-lead", type=nonnegative_int, default=None,
                       help="formatting tokens the model may write before the answer (\": \", a quote), found by "
                            "greedy decoding and kept in the probe (default 4; 0 = teacher-force the bare value)")


def probe_config_from(args: argparse.Namespace, base=None, model_config=None):
    """A ProbeConfig: `base` (or the defaults, with a context length inside `model_config`'s window) with the
    options given on the command line."""
    from hydrahead.scoring import ProbeConfig, default_context_length

    from hydrahead.errors import ProbeError
    from hydrahead.models.shape import positions
    from hydrahead.needles import file_sentences

    if args.probes_file and args.haystack:
        raise ProbeError(f"--probes-file gives the haystack; --haystack {args.haystack} would ignore it: give one")
    overrides = {}
    if base is None and model_config is not None:
        overrides["context_length"] = default_context_length(model_config)
    if args.probes_file:  # read now, before the (slow) load: a missing, binary or empty file is named at once
        file_sentences(args.probes_file)
        overrides.update(haystack="files", haystack_files=tuple(args.probes_file))
    if args.haystack:
        overrides["haystack"] = args.haystack
    for name in ("context_length", "samples", "num_keys", "answer_lead"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.needle_types:
        overrides["needle_types"] = tuple(t.strip() for t in args.needle_types.split(","))
    if args.capabilities:
        overrides["capabilities"] = tuple(c.strip() for c in args.capabilities.split(","))
    if args.probe_seed is not None:
        overrides["seed"] = args.probe_seed
    config = ProbeConfig(**{**(base.to_dict() if base is not None else {}), **overrides})
    limit = positions(model_config)[0] if model_config is not None else None
    if limit is not None and config.context_length > limit:  # a learned table is refused when probes are built
        print(f"note: probes of {config.context_length} tokens are longer than the {limit} positions the model was "
              "built for (max_position_embeddings): scores from probes a model cannot solve say little about its "
              "retrieval", flush=True)
    return config


def describe_leads(probes, tokenizer, config) -> str:
    """How many probes let the model's own formatting through, and which ("': '" x 14)."""
    from collections import Counter

    if not config.answer_lead:
        return "answers forced right after the prompt: --answer-lead 0"
    leads = Counter(tokenizer.decode(list(p.lead)) for p in probes if p.lead)
    if not leads:
        return "the model writes each answer right after the prompt, or does not answer"
    shown = ", ".join(f"{text!r} x {n}" for text, n in leads.most_common(3))
    return f"{sum(leads.values())} with the model's own lead-in before the answer: {shown}"


def patching_note(device: str, instead: str) -> None:
    """A note that patching on a CPU takes a model's forward per batch of heads per probe (hours for a real model),
    and what to do `instead`."""
    from hydrahead.models.loading import resolve_device

    if resolve_device(device).type == "cpu":
        print(f"note: patching on the CPU runs the model once per batch of heads per probe, hours for a real model; "
              f"{instead}", flush=True)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=model_path,
                        help="teacher: a checkpoint directory (config.json, weights, tokenizer) or a .gguf file")
    parser.add_argument("--tokenizer", default=None, type=tokenizer_path, help="tokenizer directory (default: --model)")
    parser.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16", "float16"],
                        help="dtype to load the teacher in (default float32)")
    parser.add_argument("--device", default="cpu", type=device, help="torch device, e.g. cpu or cuda (default cpu)")


def load_model_and_tokenizer(args: argparse.Namespace, model_config):
    """The teacher named by --model (in --dtype, on --device) and the tokenizer of --tokenizer or --model, the
    tokenizer loaded and checked against the model's vocabulary (`model_config`, its config.json) first,
    before the slow load."""
    from hydrahead.models.loading import check_vocabulary, load_model, load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer or args.model)
    check_vocabulary(tokenizer, model_config, args.tokenizer or args.model)
    return load_model(args.model, args.dtype, args.device, supported=True), tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--method", default="patching", choices=["patching", "attribution", "retrieval"],
                        help="patching: the paper's causal score, a forward per batch of heads (a GPU's job); "
                             "attribution: its first-order approximation from gradients (a CPU's); retrieval: "
                             "Wu et al.'s copy-paste score")
    parser.add_argument("--out", required=True, type=output_file, help="output JSON for the scores")
    parser.add_argument("--plot", default=None, metavar="FIGURE", type=output_figure,
                        help="also save a layers x heads heatmap (.png, .pdf or .svg)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="patched heads per forward (patching; default 16)")
    parser.add_argument("--no-senders", action="store_true",
                        help="patching, attribution: the receiver score alone (faster, but blind to heads that act "
                             "through later heads' queries and keys)")
    parser.add_argument("--top", type=nonnegative_int, default=10, help="how many top heads to print")
    add_probe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from hydrahead.models.loading import read_config
    from hydrahead.scoring import ScoringError, build_probes, score_heads
    from hydrahead.scoring.readout import unsolved_note

    if args.no_senders and args.method == "retrieval":
        raise ScoringError("--no-senders applies to patching and attribution; the retrieval score has no sender term")
    if args.batch_size is not None and args.method != "patching":  # it was ignored
        raise ScoringError(f"--batch-size applies to patching (patched heads per forward); {args.method} runs "
                           "each probe whole")
    outputs_apart({"--out": args.out, "--plot": args.plot},
                  {"--model": args.model, "--tokenizer": args.tokenizer, "--probes-file": args.probes_file})
    model_config = read_config(args.model)
    config = probe_config_from(args, model_config=model_config)  # checked before the (slow) load
    if args.method == "patching":
        patching_note(args.device, "--method attribution gives both scores to first order from gradients, in "
                                   "minutes (docs/real_models.md)")
    model, tokenizer = load_model_and_tokenizer(args, model_config)
    probes = build_probes(tokenizer, config, model=model, progress=True)
    print(f"{counted(len(probes), 'probe')} of {config.context_length} tokens "
          f"({describe_leads(probes, tokenizer, config)})", flush=True)
    options = {"max_rounds": 0} if args.no_senders else {}  # patching, attribution: the receiver term alone
    scores = score_heads(model, tokenizer, args.method, probes, probe_config=config, batch_size=args.batch_size or 16,
                         progress=True, **options)
    scores.to_json(args.out)
    if args.plot:
        scores.plot(args.plot, mark_top=args.top)
    meta = scores.metadata
    print(f"{args.method} scores of {scores.num_layers} layers x {scores.num_heads} heads on "
          f"{counted(len(probes), 'probe')} in {meta['wall_seconds']:.1f} s ({meta['forward_calls']} forward calls, "
          f"{meta['backwards']} backward)")
    if meta["clean_accuracy"] is not None:
        print(f"the model solves {meta['clean_accuracy']:.0%} of the probes (teacher-forced, greedy)")
    if note := unsolved_note(meta["clean_accuracy"], "changed", "these scores say little about retrieval"):
        print(note, flush=True)
    if top := scores.top_k(min(args.top, scores.values.size)):  # --top 0: none printed
        print(f"top {len(top)} heads (layer, head): " + ", ".join(f"({l}, {h}) {scores.values[l, h]:.3f}"
                                                                   for l, h in top))
    print(f"saved scores to {args.out}" + (f" and heatmap to {args.plot}" if args.plot else ""))
    return 0
