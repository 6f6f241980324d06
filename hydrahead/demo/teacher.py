"""The demo's teacher: a small Llama trained here from scratch, shipped inside the package.

No 20-minute CPU budget trains a model that retrieves (docs/method.md section 7), so the demo ships its teacher:
a Llama of 4 layers x 16 query heads (8 KV heads), 1.25M parameters, 24.6M tokens in two phases (induction,
then retrieval), greedy NIAH at its training length 256 in `assets/teacher/manifest.json` and docs/results.md
section 1 (mean and spread over ten evaluation seeds). `assets/teacher/` holds its weights (half precision
safetensors), tokenizer and manifest; `assets/teacher_recipe.yaml` is the one file that says how it is made
(`teacher_recipe.py` validates it, `teacher_training.py` rebuilds and ships it).

    load_teacher()        the shipped teacher (model, tokenizer), its files checked against the manifest
    export_teacher(dir)   the same as an ordinary Hugging Face checkpoint directory
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from hydrahead.errors import TeacherError

SHIPPED = Path(__file__).parent / "assets" / "teacher"
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"


_RETRAIN = "reinstall hydrahead, or rebuild it with `hydrahead demo --retrain-teacher`"


def read_manifest(path: Path = SHIPPED) -> dict[str, Any]:
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise TeacherError(f"the demo teacher is missing: no {file}; {_RETRAIN}")
    try:
        return json.loads(file.read_text())
    except (ValueError, RecursionError) as err:  # JSON or UTF-8
        raise TeacherError(f"the demo teacher's manifest {file} is corrupt ({err}); {_RETRAIN}") from err


def check_teacher(path: Path = SHIPPED) -> dict[str, Any]:
    """The manifest, after checking that the weights are the ones it names (TeacherError otherwise)."""
    manifest = read_manifest(path)
    weights = Path(path) / WEIGHTS
    if not weights.is_file():
        raise TeacherError(f"the demo teacher is missing its weights {weights}; {_RETRAIN}")
    if hashlib.sha256(weights.read_bytes()).hexdigest() != manifest.get("weights_sha256"):
        raise TeacherError(f"the demo teacher's weights {weights} do not match its manifest (damaged or "
                           f"replaced); {_RETRAIN}")
    return manifest


def load_teacher(path: Path = SHIPPED) -> tuple[Any, Any]:
    """The shipped teacher in fp32 and eval mode, and its tokenizer (TeacherError when damaged)."""
    from hydrahead.errors import CheckpointError
    from hydrahead.models.loading import load_model, load_tokenizer

    check_teacher(path)
    try:
        model, tokenizer = load_model(path, "float32"), load_tokenizer(path)
    except CheckpointError as err:
        raise TeacherError(f"the demo teacher in {path} cannot be loaded ({err}); {_RETRAIN}") from err
    return model, tokenizer


def export_teacher(dest: str | Path, path: Path = SHIPPED) -> Path:
    """The shipped teacher as an ordinary Hugging Face checkpoint directory (fp32), with its manifest."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise TeacherError(f"--export-teacher: {dest} exists and is not an empty directory")
    from hydrahead.models.loading import save_hybrid

    model, tokenizer = load_teacher(path)
    save_hybrid(model, dest, tokenizer, finish=lambda tmp: shutil.copy(Path(path) / MANIFEST, tmp / "demo_teacher_manifest.json"))
    return dest
