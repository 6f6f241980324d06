"""The demo teacher's recipe (`assets/teacher_recipe.yaml`), validated by the same schema as every recipe.

    corpus    what the tokenizer and the training documents are made of (`teacher_data.py`)
    phases    trained in order, each from the previous phase's weights, on its own documents
    pretrain  a `hydrahead.distill.PretrainRecipe` shared by the phases, less what is filled in at run time
              (tokenizer, output_dir, init, stage.tokens, data.train_files)

`load_recipe` rejects an unknown or misspelt key with its full path and a suggestion, a missing key, a value
of the wrong type or range (`hydrahead/distill/schema.py`), as a distillation recipe does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydrahead.distill.recipe import PretrainRecipe
from hydrahead.distill.schema import FieldError, build, check
from hydrahead.errors import RecipeError, TeacherError
from hydrahead.utils.io import json_sha256, read_yaml_mapping
from hydrahead.utils.units import parse_tokens

RECIPE = Path(__file__).parent / "assets" / "teacher_recipe.yaml"
# what `retrain` fills in for every phase: present in `pretrain` only to be validated
RUNTIME = {"tokenizer": "<work>/tokenizer", "output_dir": "<work>/run/<phase>"}
RUNTIME_DATA = ("train_files", "eval_files")  # pretrain.data keys `retrain` sets per phase


@dataclass(kw_only=True)
class CorpusConfig:
    code_bytes: int
    """Python standard-library sources read: tokenizer training text and code documents."""
    vocab_size: int
    """Byte-level BPE vocabulary (digits one per token, needle and haystack words whole)."""
    niah_tasks: list[str]
    """The NIAH tasks of the training documents and of the training monitor."""
    seed: int = 0
    documents: dict[str, int] = field(default_factory=dict)
    """Documents per kind, for a recipe without `phases` (one phase, "main")."""

    def __post_init__(self) -> None:
        from hydrahead.demo.teacher_data import KINDS
        from hydrahead.eval.tasks import TASKS

        check(self.code_bytes >= 1, "code_bytes", f"must be >= 1, got {self.code_bytes}")
        check(self.vocab_size >= 260, "vocab_size", f"must be >= 260 (bytes and specials), got {self.vocab_size}")
        unknown = [t for t in self.niah_tasks if t not in TASKS]
        check(not unknown and bool(self.niah_tasks), "niah_tasks", f"has unknown tasks {unknown}; choose from {list(TASKS)}")
        _check_documents(self.documents, "documents", KINDS)


@dataclass(kw_only=True)
class PhaseConfig:
    documents: dict[str, int]
    """Documents per kind (`teacher_data.KINDS`); code: at most this many source files."""
    tokens: int = field(metadata={"parse": parse_tokens})
    """Training tokens of the phase ("6M")."""

    def __post_init__(self) -> None:
        from hydrahead.demo.teacher_data import KINDS

        check(self.tokens >= 1, "tokens", f"must be >= 1, got {self.tokens}")
        check(bool(self.documents), "documents", "must name at least one kind")
        _check_documents(self.documents, "documents", KINDS)


def _check_documents(documents: dict[str, Any], name: str, kinds: tuple[str, ...]) -> None:
    for kind, count in documents.items():
        check(kind in kinds, f"{name}.{kind}", f"is not a document kind; choose from {', '.join(kinds)}")
        check(isinstance(count, int) and not isinstance(count, bool) and count >= 0, f"{name}.{kind}",
              f"must be a count >= 0, got {count!r}")


@dataclass(kw_only=True)
class TeacherRecipe:
    corpus: CorpusConfig
    pretrain: dict[str, Any]
    phases: dict[str, Any] | None = None
    """Phase name -> `PhaseConfig`, in training order; none: one phase of `corpus.documents`."""

    def __post_init__(self) -> None:
        self.phases = {str(k): build(PhaseConfig, v, f"phases.{k}") for k, v in (self.phases or {}).items()} or None
        stage = self.pretrain.get("stage")
        check(isinstance(stage, dict), "pretrain.stage", "must be a mapping")
        tokens = stage.get("tokens", 1) if self.phases else stage.get("tokens")
        check(tokens is not None, "pretrain.stage.tokens", "is needed without phases")
        data = self.pretrain.get("data") or {}
        check(isinstance(data, dict), "pretrain.data", "must be a mapping")
        for key in (*RUNTIME, "init"):
            check(key not in self.pretrain, f"pretrain.{key}", "is filled in at run time; leave it out")
        for key in RUNTIME_DATA:
            check(key not in data, f"pretrain.data.{key}", "is filled in at run time; leave it out")
        self._pretrain = build(PretrainRecipe, {**self.pretrain, **RUNTIME, "stage": {**stage, "tokens": tokens},
                                                "data": {**data, "train_files": ["<work>/data/<phase>/train.jsonl"]}},
                               "pretrain")
        if not self.phases:
            check(bool(self.corpus.documents), "corpus.documents", "must name documents when there are no phases")

    @property
    def seq_len(self) -> int:
        """The training length (pretrain.stage.seq_len)."""
        return self._pretrain.stage.seq_len

    def phase_list(self) -> list[tuple[str, dict[str, int], int]]:
        """The phases in order as (name, documents per kind, tokens)."""
        if not self.phases:
            return [("main", dict(self.corpus.documents), self._pretrain.stage.tokens)]
        return [(name, dict(p.documents), p.tokens) for name, p in self.phases.items()]


def load_recipe(path: str | Path = RECIPE) -> TeacherRecipe:
    """The recipe in `path`, validated; TeacherError naming the file and the key path otherwise."""
    try:
        return build(TeacherRecipe, read_yaml_mapping(path, TeacherError, "teacher recipe"), "")
    except (RecipeError, FieldError) as err:
        raise TeacherError(f"teacher recipe {path}: {err}") from err


def recipe_sha256(path: str | Path = RECIPE) -> str:
    """SHA-256 of the recipe's data (its keys and values as canonical JSON): comments do not count."""
    return json_sha256(read_yaml_mapping(path, TeacherError, "teacher recipe"))
