"""`hydrahead eval niah|ppl` end to end on saved tiny checkpoints, and its errors."""

import argparse
import json
import re

import pytest

from hydrahead.cli import main
from hydrahead.cli.args import length, lengths
from hydrahead.cli.eval import parse_depths
from hydrahead.eval import EvalError
from hydrahead.eval.report import model_labels


def test_niah_report_for_two_models_and_two_lengths(model_dirs, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["eval", "niah", "--models", str(model_dirs["teacher"]), str(model_dirs["hybrid"]),
            "--lengths", "256,300", "--depths", "0,1", "--tasks", "single_number", "--samples", "1",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    data = json.loads((out / "niah.json").read_text())
    assert {(r["model"], r["length"]) for r in data["records"]} == {
        (m, n) for m in ("teacher", "hybrid") for n in (256, 300)}
    assert data["meta"]["models"] == {"teacher": str(model_dirs["teacher"]), "hybrid": str(model_dirs["hybrid"])}
    md = (out / "niah.md").read_text()
    assert "| model | 256 | 300 | mean |" in md and "| teacher |" in md and "| hybrid |" in md
    assert (out / "niah_accuracy.png").is_file() and (out / "niah_heatmap.png").is_file()
    assert "| hybrid |" in capsys.readouterr().out


def test_ppl_report(model_dirs, tmp_path):
    data = tmp_path / "docs"
    data.mkdir()
    for i in range(2):
        (data / f"doc{i}.txt").write_text(" ".join(f"Sentence {j} of document {i}." for j in range(60)))
    out = tmp_path / "report"
    argv = ["eval", "ppl", "--models", str(model_dirs["teacher"]), str(model_dirs["hybrid"]), "--data", str(data),
            "--length", "128", "--bucket", "32", "--chunk", "48", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "ppl.json").read_text())["results"]
    assert [(r["model"], r["documents"], len(r["ppl"])) for r in results] == [
        ("teacher", ["doc0.txt", "doc1.txt"], 4), ("hybrid", ["doc0.txt", "doc1.txt"], 4)]
    assert (out / "ppl_by_position.png").is_file()


def test_errors_are_one_line(model_dirs, tmp_path, capsys):
    no_tokenizer = tmp_path / "bare"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizer / name).write_bytes((model_dirs["teacher"] / name).read_bytes())
    cases = [
        (["--models", str(tmp_path / "nope"), str(model_dirs["hybrid"])], "--models: model directory not found: .*nope"),
        (["--models", str(no_tokenizer)], "no usable tokenizer in .*bare"),
        (["--models", str(model_dirs["hybrid"] / "config.json")], "--models: .*config.json is a file, not a model"),
        (["--models", str(model_dirs["hybrid"]), "--lengths", "2x"], "--lengths: expected a length .*got '2x'"),
        (["--models", str(model_dirs["hybrid"]), "--lengths", "64", "--tasks", "single_number"],
         "length 64 is too short for task single_number"),
    ]
    for extra, message in cases:
        assert main(["eval", "niah", *extra, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hydrahead eval niah: error: ") and err.count("\n") == 1  # named as its usage is
        assert re.search(message, err), err
    assert main(["eval", "ppl", "--models", str(model_dirs["hybrid"]), "--data", str(tmp_path / "none.txt"),
                 "--out", str(tmp_path / "r")]) == 2
    out, err = capsys.readouterr()
    assert "data file(s) not found" in err and not out  # before the models' notes (8k is beyond their window)


def test_a_report_never_replaces_a_file_the_command_reads(model_dirs, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "niah.md").write_text("My own notes. " * 200)  # a haystack file where the report would go
    assert main(["eval", "niah", "--models", str(model_dirs["hybrid"]), "--haystack", "files", "--haystack-files",
                 str(notes / "niah.md"), "--out", str(notes), "--no-progress"]) == 2
    assert "is the --haystack-files file this command reads" in capsys.readouterr().err
    assert main(["eval", "ppl", "--models", str(model_dirs["hybrid"]), "--data", str(notes), "--out", str(notes),
                 "--no-progress"]) == 2
    assert "--out " + str(notes) + " is the --data directory this command reads" in capsys.readouterr().err


def test_every_models_prompts_are_built_before_any_model_runs(model_dirs, tmp_path, capsys, monkeypatch):
    """A second model whose tokenizer has no pad or EOS token (or cannot fit a task in the length) failed after the
    first model had run, and the first model's results were lost with it."""
    import hydrahead.eval
    from tests.conftest import make_teacher
    from tests.toy_tokenizer import char_tokenizer

    chars = tmp_path / "chars"  # a character tokenizer: the same template takes far more tokens
    make_teacher("qwen3").save_pretrained(chars)
    char_tokenizer().save_pretrained(chars)
    monkeypatch.setattr(hydrahead.eval, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["eval", "niah", "--models", str(model_dirs["hybrid"]), str(chars), "--lengths", "256",
                 "--tasks", "single_number", "--samples", "1", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "chars' has neither a pad nor an EOS token" in capsys.readouterr().err


def test_a_ppl_length_without_a_prediction_is_refused_before_any_model_loads(model_dirs, tmp_path, capsys,
                                                                              monkeypatch):
    import hydrahead.eval

    monkeypatch.setattr(hydrahead.eval, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    (tmp_path / "doc.txt").write_text("The grass is green. " * 20)
    assert main(["eval", "ppl", "--models", str(model_dirs["hybrid"]), "--data", str(tmp_path / "doc.txt"),
                 "--length", "1", "--out", str(tmp_path / "r")]) == 2
    assert "length must be at least 2 tokens, got 1" in capsys.readouterr().err
    assert main(["eval", "ppl", "--models", str(model_dirs["hybrid"]), "--data", str(tmp_path / "doc.txt"),
                 "--length", "64", "--bucket", "1", "--out", str(tmp_path / "r")]) == 2
    assert "--bucket must be >= 2 positions" in capsys.readouterr().err


def test_parsers():
    assert lengths("1k,2k, 4096,1.5k") == [1024, 2048, 4096, 1536]
    assert length("1M") == 1024 * 1024
    assert parse_depths("0,0.25,1,0") == [0.0, 0.25, 1.0] and lengths("1k,1024") == [1024]
    for bad in ("k", "-1", "0", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            lengths(bad)
    with pytest.raises(EvalError, match="in \\[0, 1\\]"):
        parse_depths("0,2")


def test_labels_disambiguate_same_names(tmp_path):
    assert model_labels([tmp_path / "a" / "ckpt", tmp_path / "b" / "ckpt", tmp_path / "teacher"]) == [
        "a/ckpt", "b/ckpt", "teacher"]


def test_a_length_beyond_a_learned_position_table_is_refused_and_rotary_ones_are_noted(model_dirs, tmp_path, capsys):
    """GPT-2 indexes a learned table of n_positions rows: a longer prompt is an IndexError deep in its forward,
    so it is refused before any work, naming the limit. A rotary model runs past max_position_embeddings:
    evaluated, and the report says the length tests extrapolation."""
    from transformers import GPT2Config, GPT2LMHeadModel

    import hydrahead
    from hydrahead.eval import evaluate_niah, make_examples, parse_tasks
    from hydrahead.eval.tasks import Haystack

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=400, n_positions=128)).eval()
    tokenizer = hydrahead.load_tokenizer(model_dirs["teacher"])
    examples = make_examples(tokenizer, parse_tasks("single_number"), [256], [0.5], 1, 0, Haystack.named("essay"))
    with pytest.raises(hydrahead.UnsupportedModelError, match="learned position table of 128 positions"):
        evaluate_niah(gpt2, tokenizer, examples, "gpt2", progress=False)
    gpt2.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    capsys.readouterr()
    assert main(["eval", "niah", "--models", str(tmp_path / "gpt2"), "--lengths", "256", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"hydrahead eval niah: error: {tmp_path / 'gpt2'} (a gpt2 model) has a learned position table of 128 "
        "positions: --lengths 256 is beyond it; use at most 128")
    assert not (tmp_path / "r").exists()

    config = json.loads((model_dirs["teacher"] / "config.json").read_text())  # a rotary model built for 512
    out = tmp_path / "beyond"
    assert main(["eval", "niah", "--models", str(model_dirs["teacher"]), "--lengths", str(config["max_position_embeddings"] + 64),
                 "--depths", "0.5", "--tasks", "single_number", "--samples", "1", "--out", str(out), "--no-progress"]) == 0
    assert "Note: teacher was built for 512 positions (max_position_embeddings); lengths above it test extrapolation" \
        in (out / "niah.md").read_text()


def test_auto_dtype_runs_half_precision_checkpoints_in_float32_on_the_cpu(model_dirs, tmp_path, monkeypatch):
    """generate's and serve's rule: a checkpoint saved in float16 would run slowly on the CPU and round more."""
    import hydrahead.eval

    seen = []
    real = hydrahead.eval.load_model

    def load_model(path, dtype="auto", device=None, **kwargs):
        seen.append(dtype)
        return real(path, dtype, device, **kwargs)

    monkeypatch.setattr(hydrahead.eval, "load_model", load_model)
    data = tmp_path / "doc.txt"
    data.write_text(" ".join(f"Sentence {j}." for j in range(40)))
    for dtype, expected in (("auto", "float32"), ("bfloat16", "bfloat16")):
        argv = ["eval", "ppl", "--models", str(model_dirs["teacher"]), "--data", str(data), "--length", "32",
                "--device", "cpu", "--dtype", dtype, "--out", str(tmp_path / dtype), "--no-progress"]
        assert main(argv) == 0
        assert seen.pop() == expected
