import json
import shutil

import pytest
import torch

import hydrahead
from hydrahead import HeadPlan
from hydrahead.cli import main
from tests.conftest import make_teacher


@pytest.fixture
def teacher_dir(tmp_path):
    teacher = make_teacher("qwen3")
    teacher.save_pretrained(tmp_path / "teacher")
    HeadPlan(((0, 1), (3,)), 4, 2).to_json(tmp_path / "plan.json")
    return tmp_path


def test_convert_then_info(teacher_dir, capsys):
    out = teacher_dir / "hybrid"
    assert main(["convert", "--model", str(teacher_dir / "teacher"), "--plan", str(teacher_dir / "plan.json"),
                 "--out", str(out), "--option", "train_length=256"]) == 0
    model = hydrahead.from_pretrained(out)
    assert model.hydrahead_options.train_length == 256
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # layer 0: heads 0,1 share KV group 0; layer 1: head 3 in group 1 -> 2 of 4 KV heads cached
    assert report["kv_cache_fraction"] == 0.5
    assert report["kv_bytes_per_token"] == report["teacher_kv_bytes_per_token"] // 2
    assert report["parameters_added"] > 0
    assert report["dtype"] == "float32" and report["kv_bytes_per_token"] % 4 == 0
    assert main(["info", str(out)]) == 0
    assert "in float32, the checkpoint's dtype\n" in capsys.readouterr().out
    # the teacher itself: its shape and K/V bytes from its config, the figure its hybrid is measured against
    assert main(["info", str(teacher_dir / "teacher"), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["hybrid"] is False and report["hybrid"] is True
    assert plain["kv_bytes_per_token"] == report["teacher_kv_bytes_per_token"] and plain["layers"] == 2
    assert main(["info", str(teacher_dir / "teacher")]) == 0
    assert "a plain qwen3 model, not a hybrid: 2 layers x 4 query heads (2 KV heads" in capsys.readouterr().out
    half = teacher_dir / "half"
    hydrahead.save_hybrid(model, half, dtype=torch.float16)  # the bytes are a half precision model's
    assert main(["info", str(half), "--json"]) == 0
    halved = json.loads(capsys.readouterr().out)
    assert (halved["dtype"], halved["kv_bytes_per_token"]) == ("float16", report["kv_bytes_per_token"] // 2)
    assert main(["info", str(half)]) == 0
    assert "in float16, the checkpoint's dtype (`generate` and `eval` run float32" in capsys.readouterr().out


def test_convert_options_take_boolean_words_and_lengths(teacher_dir):
    """--option fa_gate=False once built the gate (the string "False" is truthy) and saved "False"."""
    out = teacher_dir / "hybrid"
    assert main(["convert", "--model", str(teacher_dir / "teacher"), "--plan", str(teacher_dir / "plan.json"),
                 "--out", str(out), "--option", "fa_gate=False", "--option", "gdn_rope=No",
                 "--option", "gdn_shared_kv=TRUE", "--option", "train_length=1k", "--option", "fa_rope=none"]) == 0
    options = hydrahead.from_pretrained(out).hydrahead_options
    assert options == hydrahead.HybridOptions.preset("paper", fa_gate=False, gdn_rope=False, gdn_shared_kv=True,
                                                     train_length=1024)
    saved = json.loads((out / "config.json").read_text())["hydrahead"]["options"]
    assert (saved["fa_gate"], saved["gdn_rope"], saved["train_length"]) == (False, False, 1024)


def test_cli_errors_are_one_line(teacher_dir, capsys):
    code = main(["convert", "--model", str(teacher_dir / "missing"), "--plan", str(teacher_dir / "plan.json"),
                 "--out", str(teacher_dir / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "model directory not found" in err and "Traceback" not in err
    HeadPlan(((0,), (1,), (2,)), 4, 2).to_json(teacher_dir / "bad.json")
    code = main(["convert", "--model", str(teacher_dir / "teacher"), "--plan", str(teacher_dir / "bad.json"),
                 "--out", str(teacher_dir / "x")])
    assert code == 2 and "3 layers but the model has 2" in capsys.readouterr().err
    code = main(["convert", "--model", str(teacher_dir / "teacher"), "--plan", str(teacher_dir / "plan.json"),
                 "--out", str(teacher_dir / "x"), "--option", "fa_rope=alibi"])
    assert code == 2 and "fa_rope must be one of" in capsys.readouterr().err


def test_convert_calibrates_on_a_text_file(teacher_dir, capsys):
    """--calibration: the text, in the teacher's tokenizer, sets the gains and the GDN heads' mean output."""
    from hydrahead.models.convert import calibration_rows
    from tests.distill.conftest import make_documents, make_tokenizer

    text = teacher_dir / "sample.txt"
    text.write_text(" ".join(make_documents(80, seed=0)))
    args = ["convert", "--model", str(teacher_dir / "teacher"), "--plan", str(teacher_dir / "plan.json"),
            "--calibration", str(text)]
    assert main([*args, "--out", str(teacher_dir / "x")]) == 2  # the teacher has no tokenizer yet
    assert "tokenised with the teacher's tokenizer" in capsys.readouterr().err
    tokenizer = make_tokenizer()
    tokenizer.save_pretrained(teacher_dir / "teacher")
    assert main([*args, "--out", str(teacher_dir / "hybrid")]) == 0
    # what it took and what it set, said
    assert "calibrated the fusion gains and the GDN heads' mean output on 2 x 512 tokens of --calibration\n" in (
        capsys.readouterr().out)
    for options, said in ((["--preset", "exact"], "calibrated the GDN heads' mean output on 2 x 512"),
                          (["--preset", "exact", "--option", "gdn_mean_output=false"], "--calibration went unused")):
        assert main([*args, *options, "--out", str(teacher_dir / "other")]) == 0
        assert said in capsys.readouterr().out
        shutil.rmtree(teacher_dir / "other")
    got = hydrahead.from_pretrained(teacher_dir / "hybrid")
    calibration = calibration_rows(tokenizer(text.read_text())["input_ids"])
    assert calibration.shape == (2, 512)
    teacher = hydrahead.load_model(teacher_dir / "teacher", "float32")
    expected = hydrahead.convert(teacher, HeadPlan.from_json(teacher_dir / "plan.json"), calibration=calibration)
    for a, b in zip(got.parameters(), expected.parameters()):
        assert torch.equal(a, b)
    assert main([*args[:-1], str(teacher_dir / "none.txt"), "--out", str(teacher_dir / "y")]) == 2
    assert "text file not found" in capsys.readouterr().err
    (teacher_dir / "short.txt").write_text("the cat sees the ball .")
    assert main([*args[:-1], str(teacher_dir / "short.txt"), "--out", str(teacher_dir / "y")]) == 2
    assert "--calibration holds 6 tokens" in capsys.readouterr().err


def test_calibration_text_beyond_the_model_vocabulary_is_one_line(tmp_path, capsys):
    from tests.distill.conftest import make_documents, make_tokenizer

    make_teacher("qwen3", vocab_size=20).save_pretrained(tmp_path / "teacher")
    make_tokenizer().save_pretrained(tmp_path / "teacher")  # ids up to 32
    HeadPlan(((0, 1), (3,)), 4, 2).to_json(tmp_path / "plan.json")
    (tmp_path / "sample.txt").write_text(" ".join(make_documents(40, seed=0)))
    code = main(["convert", "--model", str(tmp_path / "teacher"), "--plan", str(tmp_path / "plan.json"),
                 "--calibration", str(tmp_path / "sample.txt"), "--out", str(tmp_path / "hybrid")])
    err = capsys.readouterr().err
    assert code == 2 and "but the model has 20 tokens" in err and "Traceback" not in err
