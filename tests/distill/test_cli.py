"""`hydrahead distill` end to end, and bad input reported as one line before any training."""

import pytest
import yaml

import hydrahead
from hydrahead import HeadPlan, PlanError
from hydrahead.cli import main
from hydrahead.distill import DataError, read_metrics, run
from tests.distill.conftest import tiny_recipe, tiny_stage, write_corpus


def write(tmp_path, recipe) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_cli_runs_a_recipe_and_resumes_a_finished_run(workspace, tmp_path, capsys):
    path = write(tmp_path, tiny_recipe(workspace, tmp_path / "run", {"long_context": tiny_stage()}))
    assert main(["distill", path, "--set", "stages.long_context.tokens=256"]) == 0
    assert f"saved hybrid to {tmp_path / 'run' / 'final'}" in capsys.readouterr().out
    assert [m["step"] for m in read_metrics(tmp_path / "run") if "loss" in m] == [1, 2]  # 256 tokens = 2 steps
    assert main(["distill", path, "--set", "stages.long_context.tokens=256", "--resume"]) == 0  # nothing left to do
    assert hydrahead.is_hybrid(hydrahead.from_pretrained(tmp_path / "run" / "final"))


def test_missing_data_fails_before_training(workspace, tmp_path, capsys):
    recipe = tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage()},
                         data={"train_files": [str(tmp_path / "missing.jsonl")]})
    assert main(["distill", write(tmp_path, recipe)]) == 2
    err = capsys.readouterr().err
    assert "data.train_files: data file not found" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_empty_stage_data_and_bad_plan_fail_before_training(workspace, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    stages = {"align": tiny_stage(), "long_context": tiny_stage(train_files=[str(tmp_path / "empty.txt")])}
    with pytest.raises(DataError, match="stages.long_context.train_files: data file is empty"):
        run(tiny_recipe(workspace, tmp_path / "run", stages))
    short = write_corpus(tmp_path / "short.jsonl", ["the cat sees a book ."])
    with pytest.raises(DataError, match="fewer than one sequence of seq_len 32"):
        run(tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage()}, data={"train_files": [str(short)]}))
    few = write_corpus(tmp_path / "few.jsonl", ["the cat sees a book . " * 5] * 3)  # 3 x 31 tokens with EOS
    with pytest.raises(DataError, match=r"stages.align.batch_size 4 is more sequences than data.train_files hold "
                                        r"\(2 of seq_len 32\).*at most 2, or add data"):
        run(tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage()}, data={"train_files": [str(few)]}))
    HeadPlan(((0,), (1,), (2,)), 4, 2).to_json(tmp_path / "plan3.json")
    with pytest.raises(PlanError, match="plan has 3 layers but the model has 2"):
        run(tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage()}, plan=str(tmp_path / "plan3.json")))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
