"""`hydrahead` command line: a thin layer over library functions.

Each subcommand is a module of this package with `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`. Errors hydrahead raises on purpose are printed as one line, without a traceback, and so are
its warnings (`HydraHeadWarning`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import warnings

from hydrahead.cli.args import Parser

# subcommand name -> module in hydrahead.cli (each is imported to build the parser, so each keeps its heavy
# imports inside its `run`)
COMMANDS = {
    "convert": "convert",
    "demo": "demo",
    "distill": "distill",
    "eval": "eval",
    "export": "export",
    "generate": "generate",
    "info": "info",
    "plan": "plan",
    "score": "score",
    "serve": "serve",
    "validate-scores": "validate_scores",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The command's docstring as written, and every option's default shown where its help does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = (action.default is None or action.default is False or action.default == []
                 or action.default == argparse.SUPPRESS)
        flag = isinstance(action, argparse.BooleanOptionalAction)
        if not action.option_strings or "default" in text or unset or flag:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from hydrahead import __version__

    parser = Parser(
        prog="hydrahead",
        description="Turn a Hugging Face Transformer LLM into a head-level hybrid of softmax and Gated DeltaNet "
        "attention: score heads -> plan -> convert -> distill -> evaluate -> generate -> serve.",
    )
    parser.add_argument("--version", action="version", version=f"hydrahead {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"hydrahead.cli.{module_name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.__doc__,
                                    formatter_class=HelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run, _keep_freed_memory=getattr(module, "KEEP_FREED_MEMORY", True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status. Output piped into a reader that stops early (`hydrahead plan ... | head`)
    ends the command quietly, as other Unix tools do, with the status of a process SIGPIPE ended (141)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
        return code
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush into the pipe at exit
        return 128 + signal.SIGPIPE


def _stdout_closed() -> bool:
    """Whether standard output is a pipe nobody reads any more (its write end reports an error)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's capture), or no poll here
        return False


def _main(argv: list[str] | None) -> int:
    from hydrahead.errors import HydraHeadError, TrainingInterrupted
    from hydrahead.utils.memory import keep_freed_memory

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help (0), or an argument refused while reading (2): printed already
        return exit.code if isinstance(exit.code, int) else 2
    keep = args._keep_freed_memory(args) if callable(args._keep_freed_memory) else args._keep_freed_memory
    if keep:  # large CPU tensors reuse freed memory instead of page-faulting (utils/memory.py)
        keep_freed_memory()
    # a command's messages are named as its usage is (`hydrahead eval niah: error: ...`)
    command = " ".join(filter(None, (args.command, getattr(args, "subcommand", None))))
    shown_by_python = warnings.showwarning
    warnings.showwarning = one_line_warnings(command, shown_by_python)
    try:
        return int(args._run(args) or 0)
    except TrainingInterrupted as err:  # a checkpoint was saved: the usual 128 + signal exit status
        print(f"hydrahead {command}: {err}", file=sys.stderr)
        return 128 + err.signum
    except HydraHeadError as err:
        print(f"hydrahead {command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hydrahead {command}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # a file the user may not read or write, a full disk: the system's own words name it
        if isinstance(err, BrokenPipeError) and _stdout_closed():
            raise  # main ends quietly
        print(f"hydrahead {command}: error: {err}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:  # torch's allocators raise RuntimeError (OutOfMemoryError on CUDA)
        if (what := out_of_memory(err)) is None:
            raise
        print(f"hydrahead {command}: error: out of memory ({what}); ask for less: a shorter input, fewer new "
              "tokens, a smaller batch or length", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown_by_python


def one_line_warnings(command: str, show):
    """A `warnings.showwarning` that prints hydrahead's own warnings as the CLI prints its errors, one line
    naming the command (not Python's file, line and source), and hands every other warning to `show`."""
    from hydrahead.errors import HydraHeadWarning, one_line

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, HydraHeadWarning):
            return show(message, category, filename, lineno, file, line)
        out = file or sys.stderr
        if out is None:  # started with stderr closed: nowhere to say it (not into stdout), as Python does
            return None
        try:
            print(f"hydrahead {command}: warning: {one_line(message)}", file=out)
        except OSError:  # stderr closed since: likewise
            pass
        return None

    return showwarning


def out_of_memory(err: BaseException) -> str | None:
    """What failed to be allocated when `err` is an allocation that failed (Python's MemoryError, torch's CPU
    allocator's "can't allocate memory", CUDA's OutOfMemoryError), else None."""
    import re

    import torch

    from hydrahead.errors import one_line

    message = one_line(err)
    if (tried := re.search(r"can't allocate memory: you tried to allocate (\d+) bytes", message)) is not None:
        return f"{int(tried[1]) / 2**30:,.1f} GiB asked of the CPU's memory"
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return message[:200] or type(err).__name__
    return None


if __name__ == "__main__":
    sys.exit(main())
