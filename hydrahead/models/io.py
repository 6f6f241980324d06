"""`from_pretrained`: load a hybrid checkpoint written by `save_pretrained`, with errors that name the problem.

A checkpoint is a normal transformers directory (config.json + safetensors). We check it before handing
it to transformers, so that a missing file, a truncated download or a non-hydrahead directory produce a
`CheckpointError` saying which, rather than a deep stack trace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open

from hydrahead.errors import CheckpointError
from hydrahead.models.hybrid import HYBRID_CLASSES

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no config.json; is it a model directory?")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_file} is corrupt (not valid JSON: {err})") from err


def weight_files(path: Path) -> list[Path]:
    if (path / WEIGHTS).is_file():
        return [path / WEIGHTS]
    if (path / WEIGHTS_INDEX).is_file():
        try:
            index = json.loads((path / WEIGHTS_INDEX).read_text())
            names = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{path / WEIGHTS_INDEX} is corrupt: {err!r}") from err
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise CheckpointError(f"{path} is incomplete: missing weight shard(s) {missing}")
        return [path / n for n in names]
    raise CheckpointError(f"{path} has no weights ({WEIGHTS} or {WEIGHTS_INDEX})")


def check_weights(path: Path) -> None:
    """Open every safetensors file's header: catches truncated or overwritten files before loading."""
    for file in weight_files(path):
        try:
            with safe_open(str(file), framework="pt") as f:
                f.keys()
        except Exception as err:  # safetensors raises its own error types for a bad header
            raise CheckpointError(f"weights file {file} is corrupt or truncated: {err}") from err


def from_pretrained(path: str | Path, **kwargs: Any):
    """Load a hybrid model saved with `save_pretrained`; keyword arguments go to transformers' `from_pretrained`."""
    path = Path(path)
    config = read_config(path)
    model_type = config.get("model_type")
    hybrid_types = {cfg.model_type: model for cfg, model in HYBRID_CLASSES.values()}
    if model_type not in hybrid_types:
        raise CheckpointError(
            f"{path} holds a {model_type!r} model, not a hydrahead hybrid "
            f"(expected one of {sorted(hybrid_types)}); convert it first with `hydrahead convert`"
        )
    check_weights(path)
    try:
        return hybrid_types[model_type].from_pretrained(str(path), **kwargs)
    except (OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"could not load {path}: {err}") from err
