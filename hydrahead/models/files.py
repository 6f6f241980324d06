"""A model path's files, checked without loading anything (no torch, no transformers): whether it exists, is a
checkpoint directory or a GGUF file, has a config.json that parses, weights that open and a generation config
that parses. The loader (loading.py) starts from these, and the command line checks every model argument with
them while it reads the arguments (`hydrahead.cli.args.model_path`), so a wrong path is one line at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open

from hydrahead.errors import CheckpointError

SUFFIX = ".gguf"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
GENERATION_CONFIG = "generation_config.json"


def is_gguf_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == SUFFIX


def find_gguf(path: str | Path) -> Path | None:
    """The GGUF file `path` names: `path` itself when it is a .gguf file, or the one .gguf file in a directory
    without a config.json. None for anything else (an ordinary checkpoint directory, a path that does not
    exist); CheckpointError for a directory holding several, naming them."""
    path = Path(path)
    if path.is_file():
        return path if is_gguf_file(path) else None
    if not path.is_dir() or (path / "config.json").exists():
        return None
    files = sorted(p for p in path.iterdir() if is_gguf_file(p))
    if len(files) > 1:
        raise CheckpointError(f"{path} holds {len(files)} GGUF files ({', '.join(p.name for p in files)}); "
                              "give the path of the one to use")
    return files[0] if files else None


def locate(path: str | Path) -> Path | None:
    """The GGUF file `path` names, or None for a directory (that may be a checkpoint); CheckpointError when it
    does not exist or is some other file."""
    path = Path(path)
    if not path.exists():
        what = "GGUF file" if path.suffix.lower() == SUFFIX else "model directory"
        raise CheckpointError(f"{what} not found: {path}")
    if (gguf := find_gguf(path)) is not None:
        return gguf
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file, not a model directory (nor a .gguf file)")
    return None


def config_json(path: str | Path) -> dict[str, Any]:
    """config.json of a checkpoint directory, or CheckpointError naming what is missing or corrupt."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no config.json (nor a .gguf file); is it a model directory?")
    return _json_object(config_file)


def _json_object(file: Path) -> dict[str, Any]:
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # JSON or UTF-8; a number of more than 4300 digits
        raise CheckpointError(f"{file} is corrupt (not valid JSON: {err})") from err
    except OSError as err:
        raise CheckpointError(f"{file} cannot be read: {err.strerror or err}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{file} is corrupt (not a JSON object)")
    return obj


def weight_files(path: Path) -> list[Path]:
    if (gguf := find_gguf(path)) is not None:
        return [gguf]
    if (path / WEIGHTS).is_file():
        return [path / WEIGHTS]
    if (path / WEIGHTS_INDEX).is_file():
        try:
            index = json.loads((path / WEIGHTS_INDEX).read_text())
            names = sorted(set(index["weight_map"].values()))
            if bad := [n for n in names if not (isinstance(n, str) and n)]:  # null: a TypeError in `path / name`
                raise TypeError(f"shard names that are not file names: {bad[:3]}")
        except (ValueError, RecursionError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{path / WEIGHTS_INDEX} is corrupt: {err!r}") from err
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise CheckpointError(f"{path} is incomplete: missing weight shard(s) {missing}")
        return [path / n for n in names]
    if any((path / name).is_file() for name in PICKLED):
        raise CheckpointError(f"{path} holds pickled weights ({PICKLED[0]}); hydrahead reads safetensors only "
                              "(it never unpickles a file it is given): re-save the model with save_pretrained()")
    raise CheckpointError(f"{path} has no weights ({WEIGHTS} or {WEIGHTS_INDEX})")


def check_files(path: Path) -> None:
    """Open every safetensors file's header, and parse generation_config.json when there is one: catches
    truncated or overwritten files before loading (transformers loads a model whose generation config is not
    JSON with default generation settings instead, and says so only at the info log level)."""
    for file in weight_files(path):
        try:
            with safe_open(str(file), framework="pt") as f:
                f.keys()
        except Exception as err:  # safetensors raises its own error types for a bad header
            raise CheckpointError(f"weights file {file} is corrupt or truncated: {err}") from err
    if (path / GENERATION_CONFIG).exists():
        _json_object(path / GENERATION_CONFIG)


def check_model_path(path: str | Path) -> None:
    """Everything about a model path that can be checked without loading it: a GGUF file, or a directory with a
    valid config.json, weights whose headers open and a generation config that parses (CheckpointError naming
    the first problem)."""
    if locate(path) is None:
        config_json(path)
        check_files(Path(path))
