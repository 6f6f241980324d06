"""LoRA target names on a hybrid: the backbone's fused FA projection is `qkv_proj`; a name matching nothing is
refused by name (the old q_proj / k_proj / v_proj with a hint) instead of silently adapting less."""

import pytest

import hydrahead
from hydrahead import HeadPlan, RecipeError
from hydrahead.distill.stages import lora_targets
from tests.conftest import make_teacher


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
