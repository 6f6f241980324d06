"""Generate text from a checkpoint (a hybrid, the model it was converted from, any transformers causal LM, or a
.gguf file) and say what it took: the time to the first token, decode tokens per second, and the cache's bytes
against what the plan implies and what the teacher's K/V would hold.

The new text goes to standard output as it is generated, the figures to standard error (and with --json to a
file). The prompt is --prompt (- reads standard input) or a file (--prompt-file); a final newline, which echo
and editors add, is dropped from those two. A checkpoint with a chat template (an instruct model) gets the
prompt as one user message; --no-chat feeds it as plain text. Greedy by default; --temperature above 0 samples
(with --top-p and --top-k as given here, not the checkpoint's). The model's own `generate` runs, as in a user's
code: a hybrid's default on CUDA is the static cache with the decode step compiled into a CUDA graph
(transformers compiles it during the first decode step, whose time is shown apart, and the decode rate is the
median step after it); --cache dynamic keeps the eager step. A plain model's default is the dynamic cache, eager:
on CUDA, --cache static gives it the compiled step too, for a like-for-like comparison. --warmup leaves one-time
compilation (fla's Triton kernels for the prompt's shapes, the compiled step) out of the figures.

Examples:
  hydrahead generate hybrid/ -p "The key is 7261. The key is" --max-new-tokens 16
  hydrahead generate hybrid/ --prompt-file long.txt --max-new-tokens 64 --json hybrid.json
  hydrahead generate teacher/ --prompt-file long.txt --max-new-tokens 64 --json teacher.json
  hydrahead generate hybrid/ --prompt-file long.txt --device cuda --cache static --warmup   # (and teacher/)
  echo "Write a haiku about caches." | hydrahead generate smollm2.gguf -p -
"""

from __future__ import annotations

import argparse
import math

from hydrahead.cli.args import device, model_path, nonnegative_int, output_file, positive_int, seed
from hydrahead.utils.io import outputs_apart

HELP = "generate text from a checkpoint and report time to first token, tokens/s and cache bytes"


def temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def top_p(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hydrahead.generation import CACHES

    parser.add_argument("model", type=model_path, help="checkpoint directory with its tokenizer, or a .gguf file")
    parser.add_argument("-p", "--prompt", help="the prompt; - reads it from standard input")
    parser.add_argument("--prompt-file", metavar="FILE", help="read the prompt from a UTF-8 text file")
    parser.add_argument("--max-new-tokens", type=positive_int, default=128, help="stop after this many new tokens")
    parser.add_argument("--temperature", type=temperature, default=0.0, help="0 is greedy; above 0 samples")
    parser.add_argument("--top-p", type=top_p, default=1.0, help="nucleus sampling's mass, when sampling")
    parser.add_argument("--top-k", type=nonnegative_int, default=0,
                        help="sample from the k likeliest tokens only, when sampling (0: off, whatever the "
                             "checkpoint says)")
    parser.add_argument("--seed", type=seed, default=0, help="the sampling seed")
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                        help="put the prompt in the checkpoint's chat template (default: when it has one)")
    parser.add_argument("--cache", choices=CACHES, default="auto",
                        help="auto: generate's own choice (a hybrid on CUDA: static, graph-captured decode; else "
                             "dynamic); dynamic or static ask for that cache")
    parser.add_argument("--device", type=device, default="auto", help="auto (CUDA when there is one), cpu, cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights' dtype (default auto: float32 on the CPU, the checkpoint's own on a GPU)")
    parser.add_argument("--warmup", action="store_true",
                        help="generate once, untimed, before the timed run: one-time compilation (fla's kernels, "
                             "the compiled decode step on CUDA) is then not in the figures")
    parser.add_argument("--json", type=output_file, metavar="FILE",
                        help="also write the text and the figures as JSON")
    parser.add_argument("--quiet", action="store_true", help="print the text only, not the figures")


def read_prompt(args: argparse.Namespace) -> str:
    import sys

    from hydrahead.errors import GenerationError
    from hydrahead.utils.io import decode_text, read_text

    if (args.prompt is None) == (args.prompt_file is None):
        raise GenerationError("give the prompt with --prompt (- reads standard input) or --prompt-file, one of "
                              "the two")
    if args.prompt_file is not None:
        text = read_text(args.prompt_file, GenerationError, "prompt file")
    elif args.prompt == "-":
        text = decode_text(sys.stdin.buffer.read(), GenerationError, "standard input")
    else:
        return args.prompt
    return text.removesuffix("\n").removesuffix("\r")  # the newline `echo` and editors end a text with (CRLF too)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from hydrahead.generation import decoding_settings, generate_text, prompt_ids
    from hydrahead.models.loading import inference_dtype, load_model, load_tokenizer, resolve_device
    from hydrahead.utils.io import write_json

    outputs_apart({"--json": args.json}, {"model": args.model, "--prompt-file": args.prompt_file})
    prompt = read_prompt(args)  # before the model loads: a missing file fails at once
    decoding_settings(args.temperature, args.top_p, args.top_k)
    target = resolve_device(args.device)
    tokenizer = load_tokenizer(args.model)
    prompt_ids(tokenizer, prompt, args.chat)  # an empty prompt, or --chat without a template, before the model loads
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if args.quiet:  # the text only: not transformers' bar of the weights it loads either
        hf_logging.disable_progress_bar()
    try:
        model = load_model(args.model, dtype=inference_dtype(args.dtype, target), device=target)
    finally:
        if bars:
            hf_logging.enable_progress_bar()

    def stream(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        result = generate_text(model, tokenizer, prompt, max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                               chat=args.chat, cache=args.cache, warmup=args.warmup, stream=stream)
        stream("\n")
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that exit's flush does not fail again
        return 141  # 128 + SIGPIPE
    if not args.quiet:
        print(result.summary(), file=sys.stderr)
    if args.json is not None:
        write_json(args.json, {"model": str(args.model), **result.to_dict()})
        if not args.quiet:
            print(f"saved the text, token ids, times and figures to {args.json}", file=sys.stderr)
    return 0
