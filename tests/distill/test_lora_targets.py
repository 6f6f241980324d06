"""LoRA target names on a hybrid: the backbone's fused FA projection is `qkv_proj`; a name matching nothing is
refused by name (the old q_proj / k_proj / v_proj with a hint) instead of silently adapting less, before any
stage of a run trains; an empty list is refused rather than read as "every layer"."""

import pytest

import hydrahead
from hydrahead import HeadPlan, RecipeError
from hydrahead.distill import run
from hydrahead.distill.stages import lora_targets
from tests.conftest import make_teacher
from tests.distill.conftest import tiny_recipe, tiny_stage


@pytest.fixture(scope="module")
def student():
    return hydrahead.convert(make_teacher("qwen3"), HeadPlan(((0,), (1, 3)), 4, 2))


def test_fused_names_match_the_fa_branch_and_never_the_hybrid_parameters(student):
    assert lora_targets(student, ["qkv_proj"]) == [f"model.layers.{i}.self_attn.fa.qkv_proj" for i in range(2)]
    every = lora_targets(student, None)
    assert not any(".gdn." in n or "gate_proj" in n and ".fa." in n for n in every)
    assert "model.layers.0.mlp.gate_proj" in every and "model.layers.1.self_attn.o_proj" in every


@pytest.mark.parametrize("name", ["q_proj", "v_proj"])
def test_the_unfused_names_are_refused_with_the_fused_one(student, name):
    with pytest.raises(RecipeError, match=f"'{name}' matches no backbone linear layer .*qkv_proj"):
        lora_targets(student, ["o_proj", name])


def test_any_name_that_matches_nothing_is_named(student):
    with pytest.raises(RecipeError, match="'out_proj' matches no backbone"):
        lora_targets(student, ["o_proj", "out_proj"])


def test_a_run_refuses_a_wrong_name_before_its_first_stage_trains(workspace, tmp_path):
    """The names were checked as the distill stage started: after align had trained and saved its checkpoint,
    which a corrected recipe could then not resume (another recipe)."""
    stages = {"align": tiny_stage(), "distill": tiny_stage(loss_chunk=8, lora={"r": 2, "target_modules": ["q_proj"]})}
    with pytest.raises(RecipeError, match="'q_proj' matches no backbone linear layer"):
        run(tiny_recipe(workspace, tmp_path / "run", stages))
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("stage, field", [({"lora": {"target_modules": []}}, "lora.target_modules"),
                                          ({"train_files": []}, "train_files")])
def test_an_empty_list_is_refused_not_read_as_the_default(workspace, tmp_path, stage, field):
    stages = {"distill": tiny_stage(loss_chunk=8, **stage)}
    with pytest.raises(RecipeError, match=f"stages.distill.{field}.*must name at least one"):
        run(tiny_recipe(workspace, tmp_path / "run", stages))
