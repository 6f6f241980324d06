"""Loading the models an evaluation compares: hybrid checkpoints and plain teachers, each with its tokenizer.

Every directory is checked before any model is evaluated, so that a typo in the third path fails at once
rather than after hours spent on the first two.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydrahead.eval.errors import EvalError


def check_model_dirs(paths: Sequence[str | Path]) -> None:
    """EvalError naming every directory that is missing or has no config.json."""
    bad = [f"{p} ({'no config.json' if Path(p).is_dir() else 'not found'})"
           for p in paths if not (Path(p) / "config.json").is_file()]
    if bad:
        raise EvalError(f"model director{'ies' if len(bad) > 1 else 'y'} unusable: {', '.join(bad)}")
    if not paths:
        raise EvalError("no model directories given")


def model_labels(paths: Sequence[str | Path]) -> list[str]:
    """Label each model by its directory name; where names collide, parent directories are added until they differ."""
    parts = [Path(p).resolve().parts for p in paths]
    depths = [1] * len(parts)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depths)]
        clashing = [i for i, label in enumerate(labels) if labels.count(label) > 1 and depths[i] < len(parts[i])]
        if not clashing:
            return labels
        for i in clashing:
            depths[i] += 1


_SAVE_ONE = "save the tokenizer next to the weights (`hydrahead convert` copies the teacher's)"


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved with a model (left padding, a pad token), or EvalError if there is none."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError) as err:
        raise EvalError(f"no usable tokenizer in {path}: {err}; {_SAVE_ONE}") from err
    # transformers builds an empty tokenizer from config.json alone when no tokenizer files are there
    if len(tokenizer) < 2 or not tokenizer("The grass is green.", add_special_tokens=False)["input_ids"]:
        raise EvalError(f"no usable tokenizer in {path} (it encodes text to nothing); {_SAVE_ONE}")
    return prepare_tokenizer(tokenizer)


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding (so batched prompts end where generation starts) and a pad token (the EOS if none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise EvalError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str | Path, dtype: str = "auto", device: str | None = None) -> Any:
    """A hybrid checkpoint (hydrahead.from_pretrained) or a plain transformers causal LM, in eval mode."""
    import torch

    from hydrahead.cli.convert import load_teacher
    from hydrahead.models.hybrid import HYBRID_CLASSES
    from hydrahead.models.io import from_pretrained, read_config

    hybrid_types = {config_class.model_type for config_class, _ in HYBRID_CLASSES.values()}
    if read_config(path).get("model_type") in hybrid_types:
        model = from_pretrained(path, dtype="auto" if dtype == "auto" else getattr(torch, dtype))
    else:
        model = load_teacher(str(path), dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()
