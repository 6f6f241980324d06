"""An offline training corpus that exists on every machine: the Python standard library's source files.

Deterministic: files are read in sorted order up to a byte budget, so every machine builds the same
corpus from the same Python version.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from hydrahead.errors import HydraHeadError


def stdlib_texts(max_bytes: int) -> list[tuple[str, str]]:
    """Source files of the standard library (no tests, no site-packages), sorted, up to `max_bytes`: (path
    relative to the standard library, text) pairs."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py")
        if "site-packages" not in p.parts and "test" not in p.parts and "tests" not in p.parts
        and "idlelib" not in p.parts
    )
    texts, total = [], 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) < 500:
            continue
        texts.append((path.relative_to(root).as_posix(), text))
        total += len(text)
        if total >= max_bytes:
            break
    if not texts:
        raise HydraHeadError(f"no Python standard-library sources found under {root}")
    return texts


# The standard-library files kept out of training, for held-out perplexity: the ones the shipped teacher never saw.
# Named, not drawn: the teacher was trained on Python 3.11.7's files (its manifest), and a draw over another
# version's files (a few more or fewer) would hold out files that teacher trained on (9 of 10 on Python 3.11.2).
# These are the 5% that a `random.Random(0)` shuffle of 3.11.7's files held out; those a Python lacks are skipped.
HELDOUT_SOURCES = (
    "encodings/cp737.py", "cProfile.py", "colorsys.py", "email/mime/audio.py", "dataclasses.py", "datetime.py",
    "encodings/cp858.py", "distutils/command/build.py", "ctypes/wintypes.py", "email/_header_value_parser.py",
)


MIN_HELDOUT = 4


def code_split(code_bytes: int) -> tuple[list[str], list[str]]:
    """Standard-library sources split into (training, held-out): held out, the HELDOUT_SOURCES among them, and
    where fewer than MIN_HELDOUT are (a small recipe's few files), the first others of a fixed shuffle; training,
    the rest in that shuffled order (on Python 3.11.7, the order the shipped teacher trained in)."""
    import random

    sources = stdlib_texts(code_bytes)
    random.Random(0).shuffle(sources)
    named = [name for name, _ in sources if name in HELDOUT_SOURCES]
    others = [name for name, _ in sources if name not in HELDOUT_SOURCES]
    held = set(named + others[: max(0, MIN_HELDOUT - len(named))])
    return [text for name, text in sources if name not in held], [text for name, text in sources if name in held]


def write_jsonl(path: Path, texts: list[str]) -> None:
    """One {"text": ...} line per text, written atomically."""
    import json

    from hydrahead.utils.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps({"text": t}) + "\n" for t in texts))
