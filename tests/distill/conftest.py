"""Fixtures for the distillation tests: a tiny teacher with a tiny word-level tokenizer saved next to it,
a head plan, a small synthetic corpus in .txt / .jsonl / .parquet, and a tiny recipe."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from hydrahead import HeadPlan
from tests.conftest import make_teacher

# A toy language with structure a 2-layer model learns in a few steps: subject verb object sentences.
SUBJECTS = ["the cat", "the dog", "a bird", "my friend", "the teacher", "a robot"]
VERBS = ["sees", "likes", "finds", "makes", "takes", "wants"]
OBJECTS = ["the ball", "a book", "the tree", "some food", "a small box", "the red car"]
WORDS = sorted({w for phrase in SUBJECTS + VERBS + OBJECTS for w in phrase.split()} | {".", "and", "then"})
SPECIALS = ["<pad>", "<unk>", "<eos>"]


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")


def make_documents(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(count):
        sentences = [
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ." for _ in range(rng.randint(2, 6))
        ]
        docs.append(" ".join(sentences))
    return docs


def write_corpus(path: Path, docs: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".txt":
        path.write_text("\n\n".join(docs) + "\n")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs)))
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": docs}), path)
    else:
        raise ValueError(path)
    return path



@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """teacher/ (tiny Qwen3 + tokenizer), plan.json, train.jsonl, eval.txt; shared, never written to."""
    root = tmp_path_factory.mktemp("distill")
    teacher = make_teacher("qwen3")
    teacher.save_pretrained(root / "teacher")
    make_tokenizer().save_pretrained(root / "teacher")
    HeadPlan(((0,), (3,)), 4, 2).to_json(root / "plan.json")
    write_corpus(root / "train.jsonl", make_documents(300, seed=1))
    write_corpus(root / "eval.txt", make_documents(20, seed=2))
    return root


def tiny_stage(**overrides) -> dict:
    stage = {"tokens": 6 * 4 * 32, "seq_len": 32, "batch_size": 4, "lr": 3.0e-3, "warmup_fraction": 0.0,
             "schedule": "constant"}
    return {**stage, **overrides}


def tiny_recipe(workspace: Path, out: Path, stages: dict | None = None, **top) -> dict:
    """A recipe over the shared workspace writing into `out`; all three stages of 6 steps unless given."""
    recipe = {
        "teacher": str(workspace / "teacher"),
        "plan": str(workspace / "plan.json"),
        "output_dir": str(out),
        "seed": 0,
        "hybrid": {"preset": "paper", "train_length": 64},
        "data": {"train_files": [str(workspace / "train.jsonl")], "cache_dir": str(out.parent / "token-cache")},
        "training": {"progress": False, "log_every": 1, "checkpoint_every": 0},
        "stages": stages if stages is not None else {
            "align": tiny_stage(),
            "distill": tiny_stage(lr=1.0e-3, loss_chunk=8),
            "long_context": tiny_stage(seq_len=64, batch_size=2, lr=1.0e-3, loss_chunk=16),
        },
    }
    for key, value in top.items():
        recipe[key] = {**recipe[key], **value} if isinstance(value, dict) and isinstance(recipe.get(key), dict) else value
    return recipe
