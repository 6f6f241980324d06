"""Atomic file writes: a temporary file in the same directory, fsync, then rename.

A reader (or a resumed job) sees either the old file or the new one, never half of one. The file gets
the permissions the user's umask gives a new file (a temporary file alone would be private, 0600).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` and move the result to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def save_figure(fig, path: str | Path, **savefig_kwargs) -> None:
    """A matplotlib figure written atomically as PNG (keywords go to `savefig`, e.g. dpi)."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", **savefig_kwargs))


def read_json(path: str | Path, error: type[Exception], what: str):
    """Parse a JSON file, raising `error` that names `what` and the path when it is missing or not JSON."""
    import json

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise error(f"{what} {path} is not valid JSON: {err}") from err
