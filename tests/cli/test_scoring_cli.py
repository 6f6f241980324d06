"""hydrahead score / plan / validate-scores end to end on a tiny random teacher with a character tokenizer."""

import json

import numpy as np
import pytest
import torch

from hydrahead import HeadPlan
from hydrahead.cli import main
from hydrahead.scoring import HeadScores
from tests.toy_tokenizer import char_tokenizer
from tests.conftest import make_teacher

PROBES = ["--context-length", "500", "--samples", "2", "--needle-types", "word", "--capabilities", "single_key"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("scoring_cli")
    make_teacher("qwen3").save_pretrained(path / "teacher")
    char_tokenizer().save_pretrained(path / "teacher")
    return path


def test_score_plan_validate(teacher_dir, capsys):
    model, out = str(teacher_dir / "teacher"), teacher_dir
    assert main(["score", "--model", model, "--method", "patching", "--out", str(out / "scores.json"),
                 "--plot", str(out / "heads.png"), *PROBES]) == 0
    printed = capsys.readouterr().out
    assert "patching scores of 2 layers x 4 heads on 2 probes" in printed and "top 8 heads" in printed
    scores = HeadScores.from_json(out / "scores.json")
    # a random model answers none of its probes: said, with the note that such scores say little
    assert scores.metadata["clean_accuracy"] == 0.0 and "the model solves 0% of the probes" in printed
    assert "note: the model solves only 0% of the probes with nothing changed, so these scores say little" in printed
    assert "note: patching on the CPU runs the model once per batch of heads per probe" in printed  # and what else
    assert scores.values.shape == (2, 4) and scores.metadata["probe_config"]["context_length"] == 500
    assert (out / "heads.png").read_bytes()[:4] == b"\x89PNG"

    assert main(["plan", "--scores", str(out / "scores.json"), "--ratio", "3:1", "--min-per-layer", "1",
                 "--out", str(out / "plan.json"), "--model", model]) == 0
    assert "FA heads 2" in capsys.readouterr().out
    plan = HeadPlan.from_json(out / "plan.json")
    assert plan.fa_heads_per_layer == [1, 1] and plan.meta["method"] == "patching"

    assert main(["validate-scores", "--model", model, "--scores", str(out / "scores.json"), "--top-k", "2",
                 "--seeds", "2", "--out", str(out / "report.json"), "--layer-plot", str(out / "layers.png")]) == 0
    printed = capsys.readouterr().out
    assert "| top-2 |" in printed and "| attribution | patching |" in printed and "| retrieval | patching |" in printed
    assert "note: patching on the CPU" not in printed  # the scores are patching's: nothing to compute
    assert "note: the model solves only 0% of the probes with nothing ablated, so the ablation check says little" in (
        printed)
    report = json.loads((out / "report.json").read_text())
    assert len(report["accuracy_random"]) == 2 and len(report["layer_similarity"]) == 2
    assert set(report["agreement"]) == {"attribution", "retrieval"}
    assert (out / "layers.png").exists() and f"similarity matrix to {out / 'layers.png'}" in printed


@pytest.mark.parametrize("method", ["attribution", "patching"])
def test_no_senders_scores_the_receiver_term_alone(teacher_dir, capsys, method):
    model, out = str(teacher_dir / "teacher"), teacher_dir
    for flags, name in (([], "with.json"), (["--no-senders"], "without.json")):
        assert main(["score", "--model", model, "--method", method, "--out", str(out / name), *flags, *PROBES]) == 0
    capsys.readouterr()
    with_senders, without = HeadScores.from_json(out / "with.json"), HeadScores.from_json(out / "without.json")
    assert with_senders.metadata["senders"] and with_senders.metadata["rounds"] >= 1
    assert not without.metadata["senders"] and without.metadata["rounds"] == 0
    assert without.metadata["backwards"] == (2 if method == "attribution" else 0)  # one per probe
    assert with_senders.metadata["receiver_sets"]
    assert "sender/single_key" in with_senders.components and "sender/single_key" not in without.components
    # the receiver term is the same computation with or without the sender rounds
    np.testing.assert_allclose(without.components["receiver/single_key"], with_senders.components["receiver/single_key"])


def test_validate_scores_computes_the_methods_as_the_scores_were_made(teacher_dir, capsys):
    """Receiver-only scores are compared with receiver-only patching; --senders overrides the file."""
    model, out = str(teacher_dir / "teacher"), teacher_dir
    assert main(["score", "--model", model, "--method", "attribution", "--no-senders", "--out", str(out / "recv.json"),
                 "--top", "0", *PROBES]) == 0
    assert "top 0 heads" not in capsys.readouterr().out  # --top 0: no empty list
    assert HeadScores.from_json(out / "recv.json").senders is False
    for flags, senders in (([], False), (["--senders"], True)):
        assert main(["validate-scores", "--model", model, "--scores", str(out / "recv.json"), "--top-k", "2",
                     "--seeds", "1", "--out", str(out / "report.json"), *flags]) == 0
        printed = capsys.readouterr().out
        agreement = json.loads((out / "report.json").read_text())["agreement"]
        assert agreement["attribution"]["senders"] is False and agreement["attribution"]["against_senders"] is senders
        assert agreement["retrieval"]["senders"] is None
        patching = "patching" if senders else "patching (receiver term alone)"
        assert f"| attribution (receiver term alone) | {patching} |" in printed
        assert "--no-agreement skips it" in printed  # patching computed on the CPU: said before the load


def test_probe_seed_picks_the_ablation_probes_and_leaves_the_agreement_on_the_scores_own(teacher_dir, capsys,
                                                                                          monkeypatch):
    import hydrahead.scoring

    model, out = str(teacher_dir / "teacher"), teacher_dir
    assert main(["score", "--model", model, "--method", "retrieval", "--out", str(out / "retr.json"), *PROBES]) == 0
    seeds = []
    real = hydrahead.scoring.build_probes

    def build_probes(tokenizer, config, **kwargs):
        seeds.append((config.seed, config.samples))
        return real(tokenizer, config, **kwargs)

    monkeypatch.setattr(hydrahead.scoring, "build_probes", build_probes)
    samples = HeadScores.from_json(out / "retr.json").metadata["probe_config"]["samples"]
    for flags, ablation_seed, ablation_samples in (([], 1, samples), (["--probe-seed", "5"], 5, samples),
                                                   (["--probe-seed", "0"], 0, samples),
                                                   (["--samples", str(samples + 1)], 1, samples + 1)):
        capsys.readouterr()
        assert main(["validate-scores", "--model", model, "--scores", str(out / "retr.json"), "--top-k", "2",
                     "--seeds", "1", *flags]) == 0
        # agreement on the scores' probes (seed 0, their samples; --samples was applied to it too), then the ablation's
        assert seeds == [(0, samples), (ablation_seed, ablation_samples)]
        seeds.clear()
        assert ("the ablation runs on the probes that chose the heads" in capsys.readouterr().out) == (
            ablation_seed == 0)


def test_a_scores_files_haystack_file_is_checked_before_the_model_loads(teacher_dir, tmp_path, capsys, monkeypatch):
    import hydrahead.cli.score as score_cli

    model = str(teacher_dir / "teacher")
    haystack = tmp_path / "haystack.txt"
    haystack.write_text(" ".join(f"Sentence number {i} of my own text." for i in range(400)))
    assert main(["score", "--model", model, "--method", "retrieval", "--out", str(tmp_path / "s.json"),
                 "--probes-file", str(haystack), *PROBES]) == 0
    haystack.unlink()
    monkeypatch.setattr(score_cli, "load_model_and_tokenizer", lambda *a: pytest.fail("loaded the model first"))
    capsys.readouterr()
    assert main(["validate-scores", "--model", model, "--scores", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert "haystack file" in err and "haystack.txt is not found" in err and len(err.strip().splitlines()) == 1
    # a --probes-file given here, missing or empty: read before the load (it was read when the probes were built)
    (tmp_path / "empty.txt").write_text(" \n")
    for name, message in (("missing.txt", "missing.txt"), ("empty.txt", "contain no text")):
        for command in (["score", "--method", "retrieval", "--out", str(tmp_path / "t.json")],
                        ["validate-scores", "--scores", str(tmp_path / "s.json")]):
            assert main([*command, "--model", model, "--probes-file", str(tmp_path / name)]) == 2
            err = capsys.readouterr().err
            assert message in err and len(err.strip().splitlines()) == 1, (command, err)


def test_baseline_plans(teacher_dir, capsys):
    model = str(teacher_dir / "teacher")
    assert main(["plan", "--baseline", "layerwise", "--model", model, "--ratio", "1:1", "--out", str(teacher_dir / "lw.json")]) == 0
    assert HeadPlan.from_json(teacher_dir / "lw.json").fa_heads == ((), (0, 1, 2, 3))
    assert "note" not in capsys.readouterr().out
    # 2 layers cannot be 3:1 in whole layers: the plan says what it is instead of passing for 3:1
    assert main(["plan", "--baseline", "layerwise", "--model", model, "--ratio", "3:1",
                 "--out", str(teacher_dir / "lw.json")]) == 0
    assert HeadPlan.from_json(teacher_dir / "lw.json").fa_heads == ((), (0, 1, 2, 3))
    assert "note: LA:FA is 1.00:1, not the 3:1 asked for: the nearest this model's shape allows (1 of 2 layers FA)" in (
        capsys.readouterr().out)
    assert main(["plan", "--baseline", "random", "--model", model, "--ratio", "2:1",
                 "--out", str(teacher_dir / "r.json")]) == 0
    assert "note: LA:FA is 1.67:1, not the 2:1 asked for" in capsys.readouterr().out  # 3 of 8 heads
    assert main(["plan", "--baseline", "random", "--model", model, "--ratio", "3:1", "--seed", "1",
                 "--out", str(teacher_dir / "rnd.json")]) == 0
    assert HeadPlan.from_json(teacher_dir / "rnd.json").meta["seed"] == 1
    capsys.readouterr()


def test_cli_errors_are_one_line(teacher_dir, capsys):
    model = str(teacher_dir / "teacher")
    HeadScores(torch.arange(12.0).reshape(3, 4).numpy(), "patching", 2).to_json(teacher_dir / "other.json")
    HeadScores(torch.arange(8.0).reshape(2, 4).numpy(), "patching", 2).to_json(teacher_dir / "fits.json")
    cases = [
        (["plan", "--scores", str(teacher_dir / "other.json"), "--ratio", "3:1", "--model", model, "--out", str(teacher_dir / "x.json")],
         "scores are for a model with 3 layers"),
        (["plan", "--scores", str(teacher_dir / "other.json"), "--ratio", "1:0", "--out", str(teacher_dir / "x.json")], "leaves no full-attention"),
        (["plan", "--scores", str(teacher_dir / "missing.json"), "--out", str(teacher_dir / "x.json")], "score file not found"),
        (["plan", "--baseline", "random", "--out", str(teacher_dir / "x.json")], "needs --model"),
        (["plan", "--model", model, "--out", str(teacher_dir / "x.json")], "--baseline scores needs --scores"),
        (["plan", "--out", str(teacher_dir / "x.json")], "--baseline scores needs --scores"),
        (["score", "--model", str(teacher_dir / "missing"), "--out", str(teacher_dir / "x.json")], "model directory not found"),
        (["score", "--model", model, "--out", str(teacher_dir / "x.json"), "--context-length", "500"], "too short"),
        (["validate-scores", "--model", model, "--scores", str(teacher_dir / "other.json")], "3 layers x 4 heads"),
        # options that change nothing in the run asked for: refused, as --no-senders with retrieval is (ignored)
        (["score", "--model", model, "--method", "attribution", "--batch-size", "4", "--out",
          str(teacher_dir / "x.json")], "--batch-size applies to patching"),
        (["validate-scores", "--model", model, "--scores", str(teacher_dir / "fits.json"), "--no-agreement",
          "--senders"], "neither is"),
        (["validate-scores", "--model", model, "--scores", str(teacher_dir / "fits.json"), "--batch-size", "4"],
         "here it is not"),  # the scores are patching's
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


def test_the_default_probe_length_stays_inside_the_models_window(tmp_path, capsys):
    """A model whose window is shorter than the default 1024 is probed at its window, and the probes say
    how many let the model's own answer format through."""
    path = tmp_path / "short"
    make_teacher("llama", max_position_embeddings=600).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    assert main(["score", "--model", str(path), "--method", "retrieval", "--out", str(tmp_path / "s.json"),
                 "--samples", "1", "--needle-types", "word", "--capabilities", "single_key"]) == 0
    assert "1 probe of 600 tokens" in capsys.readouterr().out
    assert HeadScores.from_json(tmp_path / "s.json").metadata["probe_config"]["context_length"] == 600
    assert main(["score", "--model", str(path), "--method", "retrieval", "--out", str(tmp_path / "s2.json"),
                 "--samples", "1", "--needle-types", "word", "--capabilities", "single_key",
                 "--context-length", "0.5k"]) == 0
    assert HeadScores.from_json(tmp_path / "s2.json").metadata["probe_config"]["context_length"] == 512
