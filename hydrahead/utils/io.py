"""Atomic file writes: a temporary file in the same directory, fsync, then rename.

A reader (or a resumed job) sees either the old file or the new one, never half of one. The file gets
the permissions the user's umask gives a new file (a temporary file alone would be private, 0600).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydrahead.errors import OutputError


_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.EDQUOT}


def check_output(path: str | Path, kind: str = "file") -> Path:
    """`path` as somewhere a `kind` ("file" or "directory") can be written, checked before any work
    starts: OutputError when it is the other kind, sits under a file, or cannot be written."""
    if kind == "file" and str(path).endswith(("/", os.sep)):  # Path() would drop the slash and write a file
        raise OutputError(f"output {path} ends with a slash, which names a directory: give a file name")
    path = Path(path)
    other = "directory" if kind == "file" else "file"
    if path.exists():
        if path.is_dir() != (kind == "directory"):
            raise OutputError(f"output {path} is a {other}, not a {kind}")
        if not os.access(path, os.W_OK):
            raise OutputError(f"output {path} is not writable")
        _can_create_in(path if path.is_dir() else path.parent, path)  # an atomic write makes a file beside it
        return path
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"cannot write {path}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputError(f"cannot write {path}: no permission to create files in {parent}")
            _can_create_in(parent, path)
            break
    return path


def outputs_apart(outputs: dict, inputs: dict) -> None:
    """OutputError, before any work, when an output path (its flag -> path; None: not asked for) is one of the
    command's inputs (flag -> path or paths), lies inside an input directory (a model's), or is another output's
    path: writing it would destroy or change what the command reads (`plan --scores s.json --out s.json`,
    `generate M --json M/config.json`), or one output would replace the other."""
    given = {flag: Path(path) for flag, path in outputs.items() if path is not None}
    for flag, out in given.items():
        target = out.resolve()
        for source_flag, paths in inputs.items():
            for one in paths if isinstance(paths, (list, tuple)) else [paths]:
                if one is None or not Path(one).exists():
                    continue
                source = Path(one).resolve()
                kind = "directory" if source.is_dir() else "file"
                if target == source:
                    raise OutputError(f"{flag} {out} is the {source_flag} {kind} this command reads; choose another")
                if source in target.parents:
                    raise OutputError(f"{flag} {out} is inside the {source_flag} {kind} {one}, which this command "
                                      "reads; choose a path outside it")
    flags = list(given)
    for i, first in enumerate(flags):
        for second in flags[i + 1:]:
            if given[first].resolve() == given[second].resolve():
                raise OutputError(f"{first} and {second} are the same path, {given[first]}: one would replace the "
                                  "other; give each its own")


def _can_create_in(folder: Path, path: Path) -> None:
    """OutputError unless a file can be created in `folder`, tried (and removed): what os.access cannot say for
    root, whom it allows everything, or for a read-only or virtual file system (/proc)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".hydrahead-check-", dir=folder)
    except OSError as err:
        raise OutputError(f"cannot write {path}: no file can be created in {folder} ({err.strerror or err})") from None
    os.close(fd)
    os.unlink(name)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` and move the result to `path` atomically (OutputError when it cannot be
    written: a file in the way, no permission, a full disk)."""
    path = Path(path)
    check_output(path, "file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, new_file_mode())
        os.replace(tmp_path, path)
    except OSError as err:
        if isinstance(err, OutputError) or err.errno not in _UNWRITABLE:
            raise
        raise OutputError(f"cannot write {path}: {err.strerror}") from err
    finally:
        tmp_path.unlink(missing_ok=True)


def new_file_mode(directory: bool = False) -> int:
    """The mode the user's umask gives a newly created file (0o644 under the usual umask 022), or directory
    (0o755)."""
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def _finite(obj):
    import math

    if getattr(obj, "ndim", None) == 0 and hasattr(obj, "item"):  # numpy's scalars, 0-d arrays and tensors
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | Path, obj, indent: int | None = 1) -> None:
    """`obj` as strict JSON, atomically: NaN and infinities (a correlation of constant scores) become null,
    so every file we write parses anywhere; numpy's scalars (a caller's np.float32 threshold, say, kept in a
    file's metadata) are written as the numbers they hold, not refused after the work that made the file."""
    import json

    atomic_write_text(path, json.dumps(_finite(obj), indent=indent, allow_nan=False) + "\n")


FIGURE_FORMATS = ("png", "pdf", "svg")


def figure_format(path: str | Path) -> str:
    """The format a figure's file name asks for (its suffix, one of FIGURE_FORMATS), or OutputError: a figure
    saved as `scores.txt` would be PNG bytes under a text file's name."""
    suffix = Path(path).suffix.lower().removeprefix(".")
    if suffix not in FIGURE_FORMATS:
        names = ", ".join(f".{name}" for name in FIGURE_FORMATS[:-1]) + f" or .{FIGURE_FORMATS[-1]}"
        raise OutputError(f"figure {path}: the format is taken from the file name; give one ending in {names}")
    return suffix


def save_figure(fig, path: str | Path, **savefig_kwargs) -> None:
    """A matplotlib figure written atomically in the format its suffix names (keywords go to `savefig`, e.g.
    dpi)."""
    kind = figure_format(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=kind, **savefig_kwargs))


def read_text(path: str | Path, error: type[Exception], what: str) -> str:
    """A text file the user gave us, decoded strictly as UTF-8: `error` naming `what` and the path when it
    is missing, a directory, binary (NUL bytes) or not UTF-8, rather than text full of replacement marks."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a directory, not a file")
    if not path.exists():
        raise error(f"{what} not found: {path}")
    if not (path.is_file() or path.is_fifo()):  # a pipe (`<(...)`) is read like a file; a device is not
        raise error(f"{what} {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as err:  # permissions, a file that vanished
        raise error(f"{what} {path} cannot be read: {err.strerror or err}") from None
    return decode_text(data, error, f"{what} {path}")


def decode_text(data: bytes, error: type[Exception], what: str) -> str:
    """Bytes a user gave us (a file's, standard input's) as UTF-8 text, or `error` naming `what` when they are
    binary (NUL bytes) or not UTF-8."""
    if b"\x00" in data:
        raise error(f"{what} is a binary file, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{what} is not UTF-8 text (byte {err.start}: {data[err.start:err.start + 1]!r})") from err


def read_json(path: str | Path, error: type[Exception], what: str):
    """Parse a JSON file, raising `error` that names `what` and the path when it is missing or not JSON."""
    import json

    text = read_text(path, error, what)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # ValueError: also a number of more than 4300 digits
        raise error(f"{what} {path} is not valid JSON: {err}") from err


def read_yaml_mapping(path: str | Path, error: type[Exception], what: str) -> dict:
    """Parse a YAML file that must hold a mapping (a recipe), raising `error` naming `what` and the path when
    it is missing, not text, not YAML or not a mapping."""
    import yaml

    text = read_text(path, error, what)
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise error(f"{what} {path} is not valid YAML: nested too deeply") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise error(f"{what} {path} is not valid YAML: {problem}{where}") from err
    if data is None:
        raise error(f"{what} {path} is empty: it must be a mapping of keys to values")
    if not isinstance(data, dict):
        raise error(f"{what} {path} must be a mapping of keys to values, got {type(data).__name__}")
    return data


def json_sha256(data: Any) -> str:
    """SHA-256 (hex) of `data` as canonical JSON (sorted keys): the fingerprint of a recipe or of settings."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
