"""Smoke test of the demo path at minimal scale, and the report's honest verdicts."""

import json

import pytest

from hydrahead.demo.report import PlanResult, plan_results, verdicts


@pytest.mark.slow
def test_demo_runs_end_to_end_on_the_shipped_teacher(tmp_path):
    from hydrahead.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    index = (out / "report" / "index.md").read_text()
    assert "| teacher |" in index and "| hydrahead-7:1 |" in index and "| all-gdn |" in index
    for name in ("random-7:1", "fixed-per-layer-7:1", "layerwise-3:1", "layerwise-7:1"):
        assert f"| {name} |" in index or f"- {name} is not run separately" in index  # a duplicate plan is said so
    assert "Ablating the teacher's top-" in index
    for png in ("heads.png", "niah_accuracy.png", "kv_bytes.png", "ppl_by_position.png"):
        assert (out / "report" / png).stat().st_size > 1000
    records = json.loads((out / "report" / "niah.json").read_text())["records"]
    assert {r["length"] for r in records} == {256, 512}
    assert (out / "scores" / "validation.json").is_file()


def _result(name, per_seed):
    """A PlanResult from {length: [score per seed]}."""
    lengths = list(per_seed)
    seeds = len(per_seed[lengths[0]])
    overall = [sum(per_seed[n][s] for n in lengths) / len(lengths) for s in range(seeds)]
    return PlanResult(name, per_seed, overall, [3.0] * seeds)


def test_verdicts_compare_with_the_seed_spread():
    results = {
        "teacher": _result("teacher", {256: [1.0], 512: [0.5]}),
        "hydrahead-7:1": _result("hydrahead-7:1", {256: [0.9, 0.8], 512: [0.5, 0.4]}),
        "random-7:1": _result("random-7:1", {256: [0.2, 0.3], 512: [0.1, 0.1]}),
        "all-gdn": _result("all-gdn", {256: [0.85, 0.95], 512: [0.45, 0.55]}),
    }
    text = "\n".join(verdicts(results))
    assert "teacher scores 100.0" in text
    assert "Best student on NIAH (mean over lengths, tasks and 2 seeds): **all-gdn**" in text
    assert "**beats** random-7:1" in text and "larger than the seed spread" in text
    assert "**ties** all-gdn" in text and "-5.0 points, within the seed spread" in text  # inside the spread: a tie
    results["all-gdn"] = _result("all-gdn", {256: [0.95, 0.95], 512: [0.9, 0.9]})
    assert "**does not beat** all-gdn" in "\n".join(verdicts(results))


def test_verdicts_warn_when_the_teacher_cannot_retrieve():
    results = {"teacher": _result("teacher", {256: [0.0]}), "hydrahead-7:1": _result("hydrahead-7:1", {256: [0.0]}),
               "all-gdn": _result("all-gdn", {256: [0.0]})}
    lines = verdicts(results)
    assert "The teacher itself scores 0.0" in lines[0]
    assert any("Every student scores the same on NIAH" in line and "no plan wins" in line for line in lines)
    assert any("**ties** all-gdn" in line and "one seed" in line for line in lines)


def test_plan_results_group_seeds_of_one_plan():
    table = {"teacher": {256: 1.0}, "hydrahead-7:1/seed0": {256: 0.5}, "hydrahead-7:1/seed1": {256: 0.7}}
    results = plan_results(table, {"hydrahead-7:1/seed0": 2.0, "hydrahead-7:1/seed1": 4.0})
    assert set(results) == {"teacher", "hydrahead-7:1"}
    assert results["hydrahead-7:1"].per_length == {256: [0.5, 0.7]}
    assert results["hydrahead-7:1"].spread == pytest.approx(0.2) and results["hydrahead-7:1"].ppl == [2.0, 4.0]


def test_tokenizer_splits_digits_and_keeps_the_needle_vocabulary_whole():
    from hydrahead.demo.tokenizer import train_tokenizer
    from hydrahead.needles import vocabulary

    words = vocabulary()
    tok = train_tokenizer(["def f(x):\n    return x + 1\n"] * 50, vocab_size=2048, whole_words=words)
    assert [tok.decode([i]) for i in tok(" 1960230")["input_ids"]] == [" ", "1", "9", "6", "0", "2", "3", "0"]
    assert all(len(tok(" " + w)["input_ids"]) == 1 for w in words)


@pytest.mark.slow
def test_the_random_baseline_draws_its_heads_anew_for_every_seed(tmp_path):
    """Its spread is then over head sets, not over trainings of one draw; the report says which it shows."""
    import dataclasses

    from hydrahead import HeadPlan
    from hydrahead.demo.pipeline import run
    from hydrahead.demo.scale import SCALES

    scale = dataclasses.replace(SCALES["tiny"], seeds=(0, 1), plans=("hydrahead-7:1", "random-7:1"),
                                eval_multipliers=(1,))
    index = run(tmp_path, scale, quiet=True, command="hydrahead demo --scale tiny").read_text()
    first, second = (HeadPlan.from_json(tmp_path / "plans" / f"random-7to1-seed{s}.json") for s in (0, 1))
    assert first.fa_heads != second.fa_heads and first.num_fa == second.num_fa
    assert first.meta["seed"] == 0 and second.meta["seed"] == 1
    for seed, plan in ((0, first), (1, second)):  # each seed's student was built with its own draw
        config = json.loads((tmp_path / "runs" / f"random-7to1-seed{seed}" / "final" / "config.json").read_text())
        assert HeadPlan.from_dict(config["hydrahead"]["plan"]).fa_heads == plan.fa_heads
    assert "heads drawn anew for every seed; seed 0's shown" in index
    assert "Command: `hydrahead demo --scale tiny`" in index and "training length 256" in index


def test_the_report_names_the_command_as_given():
    import argparse

    from hydrahead.cli.demo import add_arguments, command_line

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert command_line(parser.parse_args([])) == "hydrahead demo"
    args = parser.parse_args(["--length", "512", "--budget", "0.5", "--plans", "hydrahead-7:1,all-gdn",
                              "--scale", "tiny", "--retrain-teacher"])
    assert command_line(args) == ("hydrahead demo --scale tiny --length 512 --budget 0.5 "
                                  "--plans hydrahead-7:1,all-gdn --retrain-teacher")


def test_the_demo_commands_options_are_checked_where_they_are_used(tmp_path, monkeypatch, capsys):
    """--export-teacher checked the unused --out default (a file demo_out stopped it) and ignored --device; --out
    inside --teacher failed at the first distillation, after scoring; the demo keeps freed memory for the
    shipped teacher only (a pretrained one's distillations peaked 60% higher)."""
    from hydrahead.cli import build_parser, main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo_out").write_text("a file of the user's")
    assert main(["demo", "--export-teacher", str(tmp_path / "t")]) == 0
    capsys.readouterr()
    assert main(["demo", "--export-teacher", str(tmp_path / "t2"), "--device", "cpu"]) == 2
    assert "--device would be ignored" in capsys.readouterr().err
    assert main(["demo", "--teacher", str(tmp_path / "t"), "--out", str(tmp_path / "t" / "demo")]) == 2
    assert "--out " + str(tmp_path / "t" / "demo") + " is inside the --teacher directory" in capsys.readouterr().err
    assert main(["demo", "--scale", "tiny"]) == 2  # the default --out, a file here: one line, not a traceback
    assert "output demo_out is a file" in capsys.readouterr().err
    shipped = build_parser().parse_args(["demo"])
    pretrained = build_parser().parse_args(["demo", "--teacher", str(tmp_path / "t")])
    assert shipped._keep_freed_memory(shipped) and not pretrained._keep_freed_memory(pretrained)


def test_a_stopped_distillation_says_how_the_demo_goes_on():
    """It said "Continue with --resume", which `hydrahead demo` refuses as an unknown argument."""
    from hydrahead.demo.log import rerun_to_continue
    from hydrahead.distill.trainer import RESUME_ADVICE
    from hydrahead.errors import TrainingInterrupted

    stopped = TrainingInterrupted(f"stopped by SIGINT at stage align, step 3/8; checkpoint saved: c. "
                                  f"{RESUME_ADVICE}", 2)
    assert rerun_to_continue(stopped) == ("stopped by SIGINT at stage align, step 3/8; checkpoint saved: c. Rerun "
                                          "the same hydrahead demo command to continue.")


def test_plans_a_teachers_shape_cannot_have_are_noted_before_any_scoring(tmp_path, monkeypatch):
    """2 layers x 4 heads: 7:1 leaves one FA head for two layers that each need one, and layer-wise 7:1 no FA
    layer. Both are said (and left out) before the scoring, which is where this test stops."""
    import dataclasses

    import hydrahead.scoring
    from hydrahead.demo.pipeline import Teacher, score_and_plan
    from hydrahead.demo.scale import SCALES
    from tests.conftest import make_teacher
    from tests.toy_tokenizer import char_tokenizer

    class Scored(Exception):
        pass

    def score_heads(*args, **kwargs):
        raise Scored

    monkeypatch.setattr(hydrahead.scoring, "score_heads", score_heads)
    lines = []
    teacher = Teacher(make_teacher("llama"), char_tokenizer(), tmp_path, {}, 1000)
    scale = dataclasses.replace(SCALES["tiny"], plans=("hydrahead-7:1", "layerwise-7:1", "all-gdn"))
    with pytest.raises(Scored):
        score_and_plan(tmp_path, teacher, scale, lines.append)
    assert [line.split(" left out")[0] for line in lines if "left out" in line] == ["hydrahead-7:1", "layerwise-7:1"]
    assert all("impossible for this teacher (2 layers x 4 heads)" in line for line in lines if "left out" in line)
