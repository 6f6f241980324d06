"""Evaluate hybrids and teachers side by side; one report compares them all.

Example:
  hydrahead eval niah --models teacher/ hybrid/ --lengths 1k,2k,4k,8k --depths 0,0.25,0.5,0.75,1 --out report/
  hydrahead eval ppl  --models teacher/ hybrid/ --data docs/ --length 8k --out report/

Each --models entry is a model directory (a hybrid checkpoint or a plain transformers model) with its
tokenizer, or a .gguf file, labelled by its file or directory name. Models are loaded and evaluated one at a time.
niah writes niah.json (every generated answer), niah.md and niah_{accuracy,heatmap}.png;
ppl writes ppl.json, ppl.md and ppl_by_position.png.
For lm-evaluation-harness, run `python -m hydrahead.eval.lm_harness` with lm_eval's own arguments.
"""

from __future__ import annotations

import argparse

import time
from pathlib import Path

from hydrahead.cli.args import device, length, lengths, model_path, output_dir, positive_int
from hydrahead.utils.io import outputs_apart

HELP = "evaluate models: RULER-style NIAH grid (niah) or perplexity by position (ppl)"


def parse_depths(text: str) -> list[float]:
    from hydrahead.errors import EvalError

    try:
        depths = list(dict.fromkeys(float(t) for t in text.split(",") if t.strip()))  # one given twice: once
    except ValueError as err:
        raise EvalError(f"cannot read depths {text!r}: expected numbers in [0, 1] such as 0,0.5,1") from err
    bad = [d for d in depths if not 0.0 <= d <= 1.0]
    if bad or not depths:
        raise EvalError(f"depths must be numbers in [0, 1], got {text!r}")
    return depths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="subcommand", metavar="{niah,ppl}", required=True)
    from hydrahead.cli import HelpFormatter

    niah = sub.add_parser("niah", help="RULER-style retrieval over a depth x length grid", formatter_class=HelpFormatter,
                          description="Greedy answers to NIAH and variable-tracking prompts, scored by match.")
    ppl = sub.add_parser("ppl", help="perplexity by position bucket on long documents", formatter_class=HelpFormatter,
                         description="Per-token NLL on the first --length tokens of each document, by position.")
    for p in (niah, ppl):
        p.add_argument("--models", nargs="+", required=True, metavar="DIR", type=model_path,
                       help="model directories (with tokenizer) or .gguf files, teachers and hybrids alike")
        p.add_argument("--out", required=True, type=output_dir, help="report directory")
        p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="dtype to run the models in (auto: float32 on the CPU, as generate and serve run "
                            "there, each checkpoint's own on a GPU)")
        p.add_argument("--device", default=None, type=device, help="torch device (default: cuda if available, else cpu)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    niah.add_argument("--lengths", default="1k,2k,4k,8k", type=lengths, help="context lengths in tokens, e.g. 1k,2k,4096 (k = 1024)")
    niah.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="needle depths in [0, 1]")
    niah.add_argument("--tasks", default="all",
                      help="comma-separated (default all): single_number,single_word,single_uuid,multikey,"
                           "multivalue,multiquery,vt")
    niah.add_argument("--samples", type=positive_int, default=4, help="prompts per task, length and depth")
    niah.add_argument("--haystack", default="essay", choices=["essay", "noise", "files"],
                      help="filler text: generated prose (essay), RULER's repeated noise, or --haystack-files")
    niah.add_argument("--haystack-files", nargs="+", default=[], metavar="FILE",
                      help="text files whose sentences fill the haystack (with --haystack files)")
    niah.add_argument("--batch-tokens", type=positive_int, default=32768,
                      help="prompts per batch = batch_tokens // length (at least 1)")
    niah.add_argument("--seed", type=int, default=0, help="seed of the prompts (needles, filler, depths)")
    ppl.add_argument("--data", nargs="+", required=True, metavar="PATH",
                     help=".txt/.md files (one document each), .jsonl files ('text' per line) or directories")
    ppl.add_argument("--length", default="8k", type=length, help="tokens scored per document")
    ppl.add_argument("--bucket", default=None, type=length, help="tokens per position bucket (default: length/8)")
    ppl.add_argument("--chunk", default=None, type=length,
                     help="tokens per forward pass, carrying the cache (default: all)")
    ppl.add_argument("--max-docs", type=positive_int, default=None, help="score at most this many documents")


def _models(args, length: int, what: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(label, path) pairs, every directory and tokenizer checked before any model is loaded, and a note for
    each model evaluated beyond the length it was built for. A model whose positions index a learned table
    (GPT-2) cannot address more: refused here, in one line. A rotary one can: an extrapolation test, noted."""
    from hydrahead.eval.report import REPORT_FILES, model_labels
    from hydrahead.models.loading import check_model_dirs, read_config
    from hydrahead.models.shape import check_positions, positions

    # a report written into a model's directory, or over a document or haystack file this command reads
    reports = {f"--out {Path(args.out) / name}": Path(args.out) / name for name in REPORT_FILES[args.subcommand]}
    outputs_apart({"--out": args.out, **reports}, {"--models": args.models, "--data": getattr(args, "data", None),
                                                   "--haystack-files": getattr(args, "haystack_files", None)})
    check_model_dirs(args.models)
    models, notes = list(zip(model_labels(args.models), args.models)), []
    for label, path in models:
        config = read_config(path)
        check_positions(config, length, what, str(path))
        limit, _ = positions(config)
        if limit is not None and length > limit:
            notes.append(f"{label} was built for {limit} positions (max_position_embeddings); lengths above it "
                         "test extrapolation")
    for note in notes:  # now, not only in the report: a long run shows at once what it is doing
        print(f"note: {note}", flush=True)
    return models, notes


def run_niah(args: argparse.Namespace) -> list[Path]:
    from hydrahead.eval import Haystack, evaluate_niah, load_model, load_tokenizer, make_examples, parse_tasks
    from hydrahead.eval.niah import prepare_tokenizer
    from hydrahead.eval.report import write_report

    lengths, depths, tasks = args.lengths, parse_depths(args.depths), parse_tasks(args.tasks)
    haystack = Haystack.named(args.haystack, args.haystack_files, args.seed)
    models, notes = _models(args, max(lengths), "--lengths")
    records, started, prompts = [], time.time(), []
    for label, path in models:  # every model's prompts before any model runs: a length too short for a task or a
        tokenizer = prepare_tokenizer(load_tokenizer(path))  # tokenizer without pad or EOS stops the run at once,
        prompts.append((label, path, tokenizer, make_examples(  # not after the models before it (the report is
            tokenizer, tasks, lengths, depths, args.samples, args.seed, haystack,  # written at the end)
            progress=not args.no_progress)))
    for label, path, tokenizer, examples in prompts:
        model = load_model(path, run_dtype(args), args.device)
        records += evaluate_niah(model, tokenizer, examples, label, args.batch_tokens, not args.no_progress)
        del model
    meta = {"command": "niah", "models": dict(models), "lengths": lengths, "depths": depths,
            "tasks": [t.name for t in tasks], "samples": args.samples, "seed": args.seed, "haystack": haystack.name,
            "seconds": round(time.time() - started, 1), "notes": notes}
    return write_report(args.out, niah=records, meta=meta)


def run_dtype(args: argparse.Namespace) -> str:
    """--dtype as the models run: auto is float32 on the CPU (`inference_dtype`, generate's and serve's rule)."""
    from hydrahead.models.loading import inference_dtype, resolve_device

    return inference_dtype(args.dtype, resolve_device(args.device))


def run_ppl(args: argparse.Namespace) -> list[Path]:
    from hydrahead.eval import evaluate_perplexity, load_documents, load_model, load_tokenizer
    from hydrahead.eval.ppl import check_bucket, check_length
    from hydrahead.eval.report import write_report

    length, bucket, chunk = args.length, args.bucket, args.chunk
    check_length(length)  # before any model is read
    check_bucket(bucket, "--bucket")
    documents = load_documents(args.data)
    models, notes = _models(args, length, "--length")
    results, started = [], time.time()
    for label, path in models:
        model = load_model(path, run_dtype(args), args.device)
        results.append(evaluate_perplexity(model, load_tokenizer(path), documents, length, bucket, chunk,
                                           args.max_docs, label, not args.no_progress))
        del model
    meta = {"command": "ppl", "models": dict(models), "data": [str(p) for p in args.data], "length": length,
            "chunk": chunk, "seconds": round(time.time() - started, 1), "notes": notes}
    return write_report(args.out, perplexity=results, meta=meta)


def run(args: argparse.Namespace) -> int:
    paths = run_niah(args) if args.subcommand == "niah" else run_ppl(args)
    for path in paths:
        if path.suffix == ".md":
            print(path.read_text())
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
