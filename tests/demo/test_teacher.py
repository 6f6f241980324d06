"""The shipped demo teacher: present, intact, made by the recipe in the repo, and able to retrieve."""

import json
import shutil

import pytest
import torch

from hydrahead.demo import teacher as shipped
from hydrahead.demo import teacher_training as training
from hydrahead.demo.teacher_recipe import RECIPE, load_recipe, recipe_sha256


def test_shipped_teacher_matches_its_manifest_and_recipe():
    manifest = shipped.check_teacher()  # weights hash checked inside
    assert manifest["recipe_sha256"] == recipe_sha256()  # made by the recipe in the repo, unchanged since
    assert (shipped.SHIPPED / shipped.WEIGHTS).stat().st_size <= 10 * 2**20
    recipe = load_recipe()
    assert manifest["training_tokens"] >= 1_000_000
    assert manifest["niah_at_training_length"]["length"] == recipe.seq_len


def _niah_at_1x(seed: int, samples: int = 3) -> float:
    import hydrahead.eval as ev

    model, tokenizer = shipped.load_teacher()
    assert model.config.model_type == "llama" and model.dtype == torch.float32
    records = ev.niah({"teacher": model}, tokenizer, [256], [0.25, 0.75], tasks=["single_number", "single_word"],
                      samples=samples, seed=seed, progress=False)
    return sum(r.score for r in records) / len(records)


def test_manifest_niah_is_what_the_shipped_weights_score():
    """The manifest's measurement (per evaluation seed, never the training monitor's) is reproduced by the
    weights as shipped (fp16 storage, fp32 compute); two of its seeds, one task, to stay quick."""
    measured = shipped.check_teacher()["niah_at_training_length"]
    assert training.MONITOR_SEED not in measured["seeds"] and len(measured["seeds"]) >= 3
    model, tokenizer = shipped.load_teacher()
    seeds = tuple(measured["seeds"][:2])
    again = training.measure(model, tokenizer, measured["length"], ["single_word"],
                             samples=measured["samples_per_depth"], seeds=seeds)
    assert again["single_word"]["per_seed"] == measured["single_word"]["per_seed"][:2]


def test_shipped_teacher_retrieves_at_its_training_length():
    """A few greedy NIAH prompts (seeds the manifest's measurement did not use) at 1x: seconds."""
    assert _niah_at_1x(seed=123) >= 0.75


def test_a_damaged_or_missing_teacher_says_how_to_rebuild_it(tmp_path):
    copy = tmp_path / "teacher"
    shutil.copytree(shipped.SHIPPED, copy)
    weights = copy / shipped.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(shipped.TeacherError, match="do not match its manifest.*--retrain-teacher"):
        shipped.load_teacher(copy)
    (copy / shipped.MANIFEST).write_text("{not json")
    with pytest.raises(shipped.TeacherError, match="manifest .* is corrupt"):
        shipped.check_teacher(copy)
    (copy / shipped.MANIFEST).unlink()
    with pytest.raises(shipped.TeacherError, match="missing.*--retrain-teacher"):
        shipped.load_teacher(copy)


def test_export_writes_an_ordinary_checkpoint_with_the_same_logits(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hydrahead.cli import main

    assert main(["demo", "--export-teacher", str(tmp_path / "t")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "t").eval()
    assert AutoTokenizer.from_pretrained(tmp_path / "t").vocab_size > 0
    model, _ = shipped.load_teacher()
    ids = torch.randint(0, model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, model(ids).logits)
    assert json.loads((tmp_path / "t" / "demo_teacher_manifest.json").read_text())["recipe_sha256"]
    assert main(["demo", "--export-teacher", str(tmp_path / "t")]) == 2  # not over an existing checkpoint
    # its window is the length it was trained at, so `hydrahead score` probes it there by default (at the
    # old default, 1024, it solves none: an empty ablation)
    from hydrahead.scoring import default_context_length

    trained = load_recipe().seq_len
    assert exported.config.max_position_embeddings == trained == default_context_length(exported.config) == 256
    assert model.config.max_position_embeddings == trained  # the shipped files say so too


@pytest.mark.slow
def test_retrain_and_ship_a_tiny_recipe(tmp_path):
    """The whole teacher path on a tiny copy of the recipe: corpus, tokenizer, both phases (the second from the
    first's weights), resume, ship, load."""
    text = RECIPE.read_text()
    for old, new in (("code_bytes: 4000000", "code_bytes: 200000"), ("niah: 20000", "niah: 40"),
                     ("multiquery: 60000", "multiquery: 40"), ("induction: 60000", "induction: 60"),
                     ("induction: 20000", "induction: 10"), ("recall: 10000", "recall: 10"),
                     ("copy: 10000", "copy: 10"), ("tokens: 6M", "tokens: 4096"), ("tokens: 18731008", "tokens: 8192"),
                     ("checkpoint_every: 200", "checkpoint_every: 1"), ("eval_every: 250", "eval_every: 1")):
        assert old in text, old
        text = text.replace(old, new)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    work = tmp_path / "work"
    final = training.retrain(work, recipe_path=recipe, log=lambda _: None)
    assert final == work / "run" / "retrieval" / "final"
    metrics = training.training_metrics(work, load_recipe(recipe))
    assert any("niah_single_word" in m and "copy_loss_second" in m for m in metrics)
    assert [m["phase"] for m in metrics if "loss" in m][0] == "induction"
    assert max(m["tokens"] for m in metrics if m["phase"] == "induction") == 4096
    assert max(m["tokens"] for m in metrics) == 4096 + 8192  # tokens count on across phases
    # the second phase started from the first's weights, not from a fresh initialisation
    first = [m["loss"] for m in metrics if "loss" in m and m["phase"] == "retrieval"][0]
    fresh = [m["loss"] for m in metrics if "loss" in m and m["phase"] == "induction"][0]
    assert first < fresh - 0.05  # (one step of the first phase: a small but deterministic lead)
    assert training.retrain(work, recipe_path=recipe, log=lambda _: None) == final  # finished: nothing retrains
    assert len(training.training_metrics(work, load_recipe(recipe))) == len(metrics)
    dest = training.ship(work, dest=tmp_path / "shipped", recipe_path=recipe, log=lambda _: None, seeds=(1,))
    manifest = shipped.check_teacher(dest)
    assert manifest["recipe_sha256"] == recipe_sha256(recipe) and manifest["training_tokens"] == 12288
    assert manifest["phases"] == {"induction": 4096, "retrieval": 8192}
    model, tokenizer = shipped.load_teacher(dest)
    assert model.config.num_hidden_layers == 4 and len(tokenizer) == model.config.vocab_size
    assert model.config.max_position_embeddings == 256  # the training length (the recipe's model says 4096)
    training.plot_training(metrics, tmp_path / "training.png")
    assert (tmp_path / "training.png").stat().st_size > 0


@pytest.mark.parametrize("old, new, message", [
    ("  vocab_size: 2048", "  vocab_sise: 2048", r"unknown key 'corpus.vocab_sise'; did you mean 'vocab_size'\?"),
    ("      recall: 10000", "      recal: 10000", r"phases.retrieval.documents.recal is not a document kind"),
    ("    tokens: 6M", "    tokens: six", r"phases.induction.tokens: "),
    ("    seq_len: 256", "    seq_len: 256\n    sequence: 1", r"unknown key 'pretrain.stage.sequence'; did you mean 'seq_len'\?"),
    ("  niah_tasks: [single_number, single_word, multikey]", "  niah_tasks: [single_number, needle]",
     r"corpus.niah_tasks has unknown tasks \['needle'\]"),
    ("\ncorpus:\n", "\ntokenizer: here\ncorpus:\n", r"unknown key 'tokenizer'"),
])
def test_the_teacher_recipe_is_validated_like_every_recipe(tmp_path, old, new, message):
    """One schema for every recipe (hydrahead/distill/schema.py): the teacher's corpus, phases and pretrain
    sections get the same full-path errors and suggestions as a distillation recipe."""
    text = RECIPE.read_text()
    assert old in text
    (tmp_path / "recipe.yaml").write_text(text.replace(old, new, 1))
    with pytest.raises(shipped.TeacherError, match=message):
        load_recipe(tmp_path / "recipe.yaml")


def test_the_recipe_hash_is_its_data_not_its_comments(tmp_path):
    (tmp_path / "recipe.yaml").write_text("# another comment\n" + RECIPE.read_text().replace("  seed: 0", "  seed: 0   # !"))
    assert recipe_sha256(tmp_path / "recipe.yaml") == recipe_sha256()
    (tmp_path / "other.yaml").write_text(RECIPE.read_text().replace("vocab_size: 2048", "vocab_size: 4096"))
    assert recipe_sha256(tmp_path / "other.yaml") != recipe_sha256()


def test_held_out_sources_are_named_so_no_python_holds_out_what_the_teacher_trained_on():
    """The held-out files are the ones the shipped teacher never saw (Python 3.11.7's draw), on any Python: a draw
    over another version's files held out 9 of 10 files that teacher trained on."""
    import random
    import sys

    import hydrahead.demo.corpus as corpus

    code, held = corpus.code_split(4_000_000)
    names = dict((text, name) for name, text in corpus.stdlib_texts(4_000_000))
    assert {names[t] for t in held} <= set(corpus.HELDOUT_SOURCES) and len(held) >= 4
    assert not {names[t] for t in code} & set(corpus.HELDOUT_SOURCES)
    if sys.version_info[:3] == (3, 11, 7):  # the teacher's Python: the same split as the draw it trained with
        texts = [text for _, text in corpus.stdlib_texts(4_000_000)]
        random.Random(0).shuffle(texts)
        assert (code, held) == (texts[10:], texts[:10])
    small = corpus.stdlib_texts(20_000)  # a tiny recipe's few files, none of them named: the shuffle's first 4
    assert not {name for name, _ in small} & set(corpus.HELDOUT_SOURCES)
    code, held = corpus.code_split(20_000)
    assert len(held) == corpus.MIN_HELDOUT and len(code) + len(held) == len(small) and not set(code) & set(held)
