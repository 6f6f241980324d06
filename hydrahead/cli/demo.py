"""Run the whole story at small scale, offline, on the small Llama teacher shipped with hydrahead (trained
here from scratch by `hydrahead/demo/assets/teacher_recipe.yaml` in two phases, induction then retrieval;
about 77 minutes on 2 cores): score its heads, validate
the scores by ablation, build HydraHead 7:1 and the baseline plans (random 7:1, fixed per-layer 7:1,
layer-wise 3:1 and 7:1, all-GDN), distil every plan with the same recipe and budget over several seeds,
evaluate NIAH at 1x-8x the training length and held-out perplexity, and write <out>/report/index.md
with the verdict, tables and plots.

Examples:
  hydrahead demo                                 # default scale: 10-15 minutes on a 2-core CPU
  hydrahead demo --scale tiny --out /tmp/demo    # smoke test, about a minute
  hydrahead demo --export-teacher teacher/       # the shipped teacher as a Hugging Face checkpoint
  hydrahead demo --retrain-teacher --out run/    # rebuild the teacher from its recipe (about 77 minutes on
                                                 # 2 cores; rerun the same command to resume)
  hydrahead demo --teacher SmolLM2.gguf --length 1024 --scale study --device cuda --out study/
                                                 # the same comparison on a pretrained model (a checkpoint
                                                 # directory or a GGUF file), sized for one GPU
"""

from __future__ import annotations

import argparse

from hydrahead.cli.args import device, length, model_path, output_dir

DEFAULT_OUT, DEFAULT_SCALE = "demo_out", "default"
HELP = "score -> plan -> distill -> evaluate on the shipped small teacher, over several seeds, and write a report"


def KEEP_FREED_MEMORY(args: argparse.Namespace) -> bool:  # noqa: N802 - the name every command module defines
    """glibc keeps freed memory for the shipped teacher's small runs (faster), not with a pretrained --teacher,
    whose distillations it made peak about 60% higher (why `distill` never keeps it: utils/memory.py)."""
    return args.teacher is None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hydrahead.demo.scale import PLAN_NAMES, SCALES

    parser.add_argument("--out", default=None, type=output_dir,  # None: checked only where it is used
                        help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--scale", default=DEFAULT_SCALE, choices=list(SCALES),
                        help="how big a run: tiny (a smoke test, about a minute), default (10-15 minutes on a 2-core "
                             "CPU), gpu (a larger run for one CUDA GPU), study (a pretrained --teacher on one GPU) "
                             "(default: default)")
    parser.add_argument("--device", default="auto", type=device,
                        help="torch device: auto (CUDA if there is one), cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--preset", default=None, choices=["exact", "paper"],
                        help="how the students' heads are built (default: exact: the FA heads stay the teacher's, "
                             "RoPE included; paper: NoPE + log scale + gate + fusion norm, which this teacher "
                             "cannot re-learn within a CPU budget, docs/history.md section 0)")
    parser.add_argument("--retrain-teacher", action="store_true",
                        help="rebuild the teacher from its recipe in <out>/teacher_work (resumable) instead of "
                             "using the shipped one")
    parser.add_argument("--export-teacher", metavar="DIR", default=None, type=output_dir,
                        help="write the shipped teacher to DIR as an ordinary Hugging Face checkpoint and stop")
    parser.add_argument("--teacher", metavar="MODEL", default=None, type=model_path,
                        help="run the comparison on this pretrained model (a checkpoint directory or a .gguf file) "
                             "instead of the shipped teacher")
    parser.add_argument("--length", type=length, default=None,
                        help="tokens the probes, the distillation rows and 1x of the evaluation use (default: the "
                             "shipped teacher's training length; with --teacher, 1024 or its window if shorter)")
    parser.add_argument("--budget", type=float, default=None,
                        help="multiply the scale's align, distill and long-context tokens (e.g. 0.25 or 4; "
                             "default 1)")
    parser.add_argument("--plans", default=None,
                        help="comma-separated plans to distil (default: the scale's; " + ", ".join(PLAN_NAMES) + ")")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from hydrahead.demo.scale import get_scale, with_budget, with_plans
    from hydrahead.errors import HydraHeadError

    hf_logging.disable_progress_bar()  # the demo prints its own progress lines
    if args.export_teacher is not None:
        from hydrahead.demo.teacher import export_teacher

        given = {"--out": args.out, "--scale": args.scale != DEFAULT_SCALE, "--device": args.device != "auto",
                 "--preset": args.preset, "--retrain-teacher": args.retrain_teacher, "--teacher": args.teacher,
                 "--length": args.length, "--budget": args.budget, "--plans": args.plans}
        if ignored := [flag for flag, value in given.items() if value not in (None, False)]:
            raise HydraHeadError(f"--export-teacher writes the shipped teacher and stops; {', '.join(ignored)} "
                                 "would be ignored: give it alone")
        print(f"exported the demo teacher to {export_teacher(args.export_teacher)}")
        return 0
    from hydrahead.demo.pipeline import run as run_demo

    import dataclasses

    from hydrahead.utils.io import check_output, outputs_apart

    if args.out is None:
        args.out = check_output(DEFAULT_OUT, "directory")  # here, not for --export-teacher, which never writes it
    # a report and runs written into the model's own directory failed only at the first distillation
    outputs_apart({"--out": args.out}, {"--teacher": args.teacher})
    scale = get_scale(args.scale)
    if args.preset is not None:
        scale = dataclasses.replace(scale, preset=args.preset)
    if args.budget is not None:
        scale = with_budget(scale, args.budget)
    if args.plans is not None:
        scale = with_plans(scale, args.plans)
    if args.teacher is not None:
        if args.retrain_teacher:
            raise HydraHeadError("--teacher and --retrain-teacher exclude each other: choose a pretrained model or "
                                 "the shipped teacher's recipe")
        from hydrahead.models.families import family_of_config
        from hydrahead.models.loading import read_config

        family_of_config(read_config(args.teacher), str(args.teacher))  # a wrong model stops before any work
    index = run_demo(args.out, scale, device=args.device, quiet=args.quiet,
                     retrain_teacher=args.retrain_teacher, teacher=args.teacher, length=args.length,
                     command=command_line(args))
    print(f"report: {index}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The demo command as given (every flag that changes the run), for the report."""
    import shlex

    flags = {"--out": args.out if args.out is not None and str(args.out) != DEFAULT_OUT else None,
             "--scale": args.scale if args.scale != DEFAULT_SCALE else None,
             "--device": args.device if str(args.device) != "auto" else None, "--preset": args.preset,
             "--teacher": args.teacher, "--length": args.length, "--budget": args.budget, "--plans": args.plans}
    given = [f"{flag} {shlex.quote(str(value))}" for flag, value in flags.items() if value is not None]
    return " ".join(["hydrahead demo", *given, *(["--retrain-teacher"] if args.retrain_teacher else [])])
