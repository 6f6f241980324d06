"""Convert a Hugging Face Qwen3 / Qwen2 / Llama / Mistral checkpoint into a head-level hybrid.

Example:
  hydrahead convert --model path/to/Qwen3-1.7B --plan plan.json --out hybrid/
  hydrahead convert --model teacher/ --plan plan.json --preset paper --option train_length=16k --out hybrid/
  hydrahead convert --model teacher/ --plan plan.json --calibration sample.txt --out hybrid/
"""

from __future__ import annotations

import argparse

from hydrahead.cli.args import model_path, output_dir, text_file

HELP = "convert a teacher checkpoint with a head plan into a hybrid checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=model_path, help="teacher: a checkpoint directory (config.json + weights) or a .gguf file")
    parser.add_argument("--plan", required=True, help="head plan JSON (from `hydrahead plan` or HeadPlan.to_json)")
    parser.add_argument("--out", required=True, type=output_dir, help="output directory for the hybrid checkpoint")
    parser.add_argument("--preset", default="paper", choices=["paper", "exact"],
                        help="hybrid options preset (default paper: NoPE, log-length scale and output gate on FA heads; "
                             "exact: FA heads compute what the teacher's did, as the demo's students do)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="override one hybrid option (repeatable), e.g. conv_size=0, train_length=16k, "
                             "fa_gate=false; VALUE true/false/yes/no/on/off (any case) is a boolean, a number or "
                             "null is read as JSON, anything else is a string (fa_rope=none)")
    parser.add_argument("--calibration", type=text_file, default=None, metavar="TEXT_FILE",
                        help="a UTF-8 text file like what the hybrid will be trained on: its first 2 x 512 tokens set "
                             "the fusion gains and the GDN heads' mean output (docs/method.md section 2); without "
                             "it the gains come from random tokens and the mean output starts at zero (`hydrahead "
                             "distill` calibrates on its own training data)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="dtype to load the teacher in (default: the checkpoint's)")


MIN_CALIBRATION_TOKENS = 64

BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def parse_overrides(items: list[str]) -> dict:
    """--option KEY=VALUE items as HybridOptions keywords: VALUE a boolean word (`BOOLEANS`, any case), else
    JSON (numbers, null), else the text itself. HybridOptions checks each value's type and range."""
    import json

    from hydrahead.errors import OptionsError

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionsError(f"--option expects KEY=VALUE, got {item!r}")
        key = key.strip()
        if value.strip().lower() in BOOLEANS:
            overrides[key] = BOOLEANS[value.strip().lower()]
            continue
        try:
            overrides[key] = json.loads(value)
        except (ValueError, RecursionError):  # not JSON (or a number of more than 4300 digits)
            overrides[key] = value  # plain strings such as fa_rope=none, lengths such as train_length=16k
    return overrides


def run(args: argparse.Namespace) -> int:
    from hydrahead import HeadPlan, HybridOptions, convert
    from hydrahead.errors import CheckpointError, OptionsError
    from hydrahead.models.convert import CALIBRATION_ROWS, calibrated, calibration_rows
    from hydrahead.models.families import family_of_config
    from hydrahead.models.loading import check_output_dir, load_model, load_tokenizer, read_config, save_hybrid
    from hydrahead.models.shape import ModelShape

    out = check_output_dir(args.out, keep=[args.model], hybrid=True)  # before any work
    plan = HeadPlan.from_json(args.plan)
    config = read_config(args.model)
    family_of_config(config, str(args.model))  # a model hydrahead converts, and the plan fits it: before the load
    plan.validate(ModelShape.from_config(config))
    options = HybridOptions.preset(args.preset, **parse_overrides(args.option))
    try:  # keep the teacher's tokenizer next to the weights when it has one
        tokenizer = load_tokenizer(args.model)
    except CheckpointError as err:
        if args.calibration is not None:
            raise CheckpointError(f"--calibration is tokenised with the teacher's tokenizer: {err}") from err
        tokenizer = None
    calibration = None
    if args.calibration is not None:  # the file's first characters (`text_file`)
        calibration = calibration_rows(tokenizer(args.calibration)["input_ids"])
        if calibration.numel() < MIN_CALIBRATION_TOKENS:
            raise OptionsError(f"--calibration holds {calibration.numel()} tokens in the teacher's tokenizer; give "
                               f"at least {MIN_CALIBRATION_TOKENS} (it takes {CALIBRATION_ROWS[0]} x "
                               f"{CALIBRATION_ROWS[1]} tokens of text like the training data)")
    teacher = load_model(args.model, args.dtype, supported=True)
    if calibration is not None and int(calibration.max()) >= teacher.config.vocab_size:
        raise CheckpointError(f"the tokenizer of {args.model} gives token id {int(calibration.max())} but the model "
                              f"has {teacher.config.vocab_size} tokens")
    model = convert(teacher, plan, options, calibration=calibration)
    save_hybrid(model, out, tokenizer)
    print(plan.summary())
    if calibration is not None and (what := calibrated(options)):
        rows, length = calibration.shape
        short = rows * length < CALIBRATION_ROWS[0] * CALIBRATION_ROWS[1]
        print(f"calibrated {' and '.join(what)} on {rows} x {length} tokens of --calibration"
              + (f" (the text holds fewer than the {CALIBRATION_ROWS[0]} x {CALIBRATION_ROWS[1]} it can use)"
                 if short else ""))
    elif calibration is not None:
        print("note: --calibration went unused: these options have neither fusion gains (fusion=scale_norm) nor the "
              "GDN heads' mean output (gdn_mean_output)")
    print(f"saved hybrid to {out}" + ("" if tokenizer else " (the teacher has no tokenizer to copy)"))
    return 0
