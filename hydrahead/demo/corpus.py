"""An offline training corpus that exists on every machine: the Python standard library's source files.

Deterministic: files are read in sorted order up to a byte budget, so every machine builds the same
corpus from the same Python version.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from hydrahead.errors import HydraHeadError


def stdlib_texts(max_bytes: int) -> list[str]:
    """Source files of the standard library (no tests, no site-packages), sorted, up to `max_bytes`."""
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
        texts.append(text)
        total += len(text)
        if total >= max_bytes:
            break
    if not texts:
        raise HydraHeadError(f"no Python standard-library sources found under {root}")
    return texts


HELDOUT_FRACTION = 0.05  # standard-library files kept out of training, for held-out perplexity


def code_split(code_bytes: int) -> tuple[list[str], list[str]]:
    """Standard-library sources, split into (training, held-out) by a fixed shuffle."""
    import random

    texts = stdlib_texts(code_bytes)
    random.Random(0).shuffle(texts)
    held = max(4, int(len(texts) * HELDOUT_FRACTION))
    return texts[held:], texts[:held]


def write_jsonl(path: Path, texts: list[str]) -> None:
    """One {"text": ...} line per text, written atomically."""
    import json

    from hydrahead.utils.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps({"text": t}) + "\n" for t in texts))
