"""Argument types and the parser every subcommand shares: bad values are refused while the command line
is read, before any work, in one line that names the argument.

    parser.add_argument("--samples", type=positive_int)
    parser.add_argument("--out", type=output_file)
"""

from __future__ import annotations

import argparse
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse's parser with its errors on one line (argparse prints the usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extra = super().parse_known_args(args, namespace)
        if not hasattr(namespace, "_parser"):  # a subcommand's parser reads its part of the line first
            namespace._parser = self
        return namespace, extra

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an argument nobody knows is refused by the subcommand that read the line, so the
        message points at that subcommand's --help."""
        namespace, extra = self.parse_known_args(args, namespace)
        if extra:
            namespace._parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return namespace


def _int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int(text, 1)


def nonnegative_int(text: str) -> int:
    return _int(text, 0)


def seed(text: str) -> int:
    """A seed torch's generator takes: a whole number from 0 to 2**64 - 1 (the recipes' `seed` range)."""
    value = _int(text, 0)
    if value >= 2**64:
        raise argparse.ArgumentTypeError(f"must be below 2**64, got {text}")
    return value


def length(text: str) -> int:
    """A token count with the length units (hydrahead/utils/units.py): 2048, 2k, 1.5k (k = 1024)."""
    from hydrahead.utils.units import parse_length

    try:
        value = parse_length(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 token, got {text!r}")
    return value


def lengths(text: str) -> list[int]:
    """Comma-separated token counts, each as `length`: 1k,2k,4096 (one given twice: once)."""
    values = list(dict.fromkeys(length(t) for t in text.split(",") if t.strip()))
    if not values:
        raise argparse.ArgumentTypeError(f"no length in {text!r}; give comma-separated tokens such as 1k,4k")
    return values


def _output(text: str, kind: str):
    from hydrahead.errors import OutputError
    from hydrahead.utils.io import check_output

    try:
        return check_output(text, kind)
    except OutputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def output_file(text: str):
    """A path a file can be written to (not a directory, not under a file, writable)."""
    return _output(text, "file")


def output_figure(text: str):
    """An output_file whose name says a figure format matplotlib writes: .png, .pdf or .svg."""
    from hydrahead.errors import OutputError
    from hydrahead.utils.io import figure_format

    path = output_file(text)
    try:
        figure_format(path)
    except OutputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return path


def output_dir(text: str):
    """A path a directory can be made or written in (not a file, not under a file, writable)."""
    return _output(text, "directory")


def model_path(text: str) -> str:
    """A model argument: a checkpoint directory (config.json that parses, weights that open) or a .gguf file,
    checked from its files alone (hydrahead/models/files.py), so that a wrong path fails at once."""
    from hydrahead.models.files import check_model_path

    try:
        check_model_path(text)
    except OSError as err:  # CheckpointError, or a file the user may not read
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


TEXT_FILE_CHARACTERS = 200_000  # what `text_file` reads of a file: far more than the 2 x 512 tokens a sample needs


def text_file(text: str) -> str:
    """A UTF-8 text file with some text in it: checked at once, its first TEXT_FILE_CHARACTERS returned (a
    sample of text, however large the file)."""
    try:
        with open(text, encoding="utf-8") as f:
            contents = f.read(TEXT_FILE_CHARACTERS)
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"text file not found: {text}") from None
    except IsADirectoryError:
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a text file") from None
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise argparse.ArgumentTypeError(f"{text} is not UTF-8 text (byte {err.start})") from None
    if not contents.strip():
        raise argparse.ArgumentTypeError(f"{text} holds no text")
    return contents


def tokenizer_path(text: str) -> str:
    """A tokenizer directory (or .gguf file) that exists: checked at once, and never taken for a Hub name."""
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"tokenizer directory not found: {text}")
    return text


def device(text: str) -> str:
    """A torch device this machine has ("auto", "cpu", "cuda", "cuda:1")."""
    from hydrahead.errors import DeviceError
    from hydrahead.models.loading import resolve_device

    try:
        resolve_device(text)
    except DeviceError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text
