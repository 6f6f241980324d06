import pytest
import torch

import hydrahead
from hydrahead import HeadPlan, PlanError
from hydrahead.models.shape import ModelShape
from tests.conftest import make_teacher


@pytest.fixture(scope="module")
def config():
    return make_teacher("qwen3").config  # 2 layers x 4 heads, 2 KV heads


def test_full_and_none(config):
    full, none = HeadPlan.full(config), HeadPlan.none(config)
    assert full.fa_heads_per_layer == [4, 4] and full.kv_cache_fraction == 1.0 and full.la_fa_ratio == 0
    assert none.fa_heads_per_layer == [0, 0] and none.kv_cache_fraction == 0.0
    assert none.la_fa_ratio == float("inf")


def test_derived_properties():
    plan = HeadPlan(((3, 0), (2,), ()), num_heads=4, num_kv_heads=2)
    assert plan.fa_heads == ((0, 3), (2,), ())  # sorted
    assert plan.fa_kv_heads == ((0, 1), (1,), ())  # head h is in group h // 2
    assert plan.fa_kv_heads_per_layer == [2, 1, 0]
    assert plan.kv_cache_fraction == pytest.approx(3 / 6)
    assert plan.la_fa_ratio == pytest.approx(9 / 3)
    assert plan.gdn_heads(0) == (1, 2)
    assert "KV cache 50.0%" in plan.summary()


def test_json_round_trip(tmp_path):
    plan = HeadPlan(((1,), (0, 3)), 4, 2, meta={"method": "patching"})
    plan.to_json(tmp_path / "plan.json")
    again = HeadPlan.from_json(tmp_path / "plan.json")
    assert again == plan and again.meta == {"method": "patching"}
    assert HeadPlan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize(
    "fa_heads, match",
    [
        (((0,), (1,), (2,)), "3 layers but the model has 2"),
        (((0,), (7,)), "layer 1: head index 7 out of range"),
        (((0, 0), (1,)), "layer 0: head listed twice"),
        (((-1,), (1,)), "layer 0: head index -1"),
        ((), "the plan has no layers"),  # its summary divided by zero
    ],
)
def test_bad_plans_name_the_problem(config, fa_heads, match):
    with pytest.raises(PlanError, match=match):
        HeadPlan(fa_heads, 4, 2).validate(config)


def test_plan_for_another_head_count(config):
    with pytest.raises(PlanError, match="8 query heads per layer but the model has 4"):
        HeadPlan(((0,), (1,)), 8, 2).validate(config)
    with pytest.raises(PlanError, match="KV heads"):
        HeadPlan(((0,), (1,)), 4, 4).validate(config)
    with pytest.raises(PlanError, match="multiple"):
        HeadPlan(((0,), (1,)), 4, 3)


def test_convert_rejects_plan_that_does_not_fit(config):
    teacher = make_teacher("qwen3")
    with pytest.raises(PlanError, match="3 layers"):
        hydrahead.convert(teacher, HeadPlan(((0,), (1,), (2,)), 4, 2))


def test_bad_plan_files(tmp_path):
    with pytest.raises(PlanError, match="not found"):
        HeadPlan.from_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(PlanError, match="not valid JSON"):
        HeadPlan.from_json(tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text('{"layers": 3}')
    with pytest.raises(PlanError, match="expected a JSON object with keys"):
        HeadPlan.from_json(tmp_path / "wrong.json")
    # integers only: a float head or a count spelt out is refused, never rounded
    for text, message in [('{"fa_heads": [[0.5], [1]], "num_heads": 4, "num_kv_heads": 2}', r"fa_heads\[0\] must be an integer, got 0.5"),
                          ('{"fa_heads": [[0], [1]], "num_heads": "four", "num_kv_heads": 2}', "num_heads must be an integer, got 'four'"),
                          ('{"fa_heads": [0, 1], "num_heads": 4, "num_kv_heads": 2}', "must be a list of lists")]:
        (tmp_path / "typed.json").write_text(text)
        with pytest.raises(PlanError, match=message):
            HeadPlan.from_json(tmp_path / "typed.json")
    (tmp_path / "latin1.json").write_bytes('{"meta": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(PlanError, match="not UTF-8"):
        HeadPlan.from_json(tmp_path / "latin1.json")
    with pytest.raises(PlanError, match="layer 0: a head index must be an integer, got 0.5"):
        HeadPlan(((0.5,), (1,)), 4, 2)


def test_a_plan_built_in_python_takes_whole_numbers_only(tmp_path):
    import numpy as np

    plan = HeadPlan(((np.int64(0),), (1,)), np.int64(4), np.int64(2))  # numpy's integers: saved as JSON ints
    plan.to_json(tmp_path / "p.json")
    assert HeadPlan.from_json(tmp_path / "p.json") == plan and type(plan.num_heads) is int
    for args, message in [((((True,), (1,)), 4, 2), "a head index must be an integer, got True"),
                          ((((0,), (1,)), 4.0, 2), r"num_heads must be an integer, got 4.0 \(a float\)"),
                          (((0, 1), 4, 2), "one list of head indices per layer; layer 0 is 0"),
                          (("01", 4, 2), "one list of FA heads per decoder layer, got '01'")]:
        with pytest.raises(PlanError, match=message):
            HeadPlan(*args)
    with pytest.raises(PlanError, match="meta must be a dict"):
        HeadPlan(((0,), (1,)), 4, 2, meta=None)
    shape = ModelShape(2, 4, 2)
    for layers, message in [([0.7], "got 0.7"), ([True], "got True"), ("10", "a list of layer indices, got '10'")]:
        with pytest.raises(PlanError, match=message):  # never rounded, a string never split into layers
            HeadPlan.layerwise(shape, layers=layers)


def test_a_model_stands_for_its_config():
    teacher = make_teacher("qwen3")
    assert HeadPlan.full(teacher) == HeadPlan.full(teacher.config)
    HeadPlan.full(teacher).validate(teacher)


def test_scores_may_be_a_tensor():
    values = torch.tensor([[0.1, 0.9, 0.2, 0.3], [0.4, 0.5, 0.8, 0.7]])
    from_numpy = HeadPlan.from_scores(values.numpy(), ratio="3:1")
    assert HeadPlan.from_scores(values, ratio="3:1").fa_heads == from_numpy.fa_heads
    assert HeadPlan.from_scores(values, ratio="3:1").fa_heads == ((1,), (2,))


def test_plain_score_values_take_the_models_kv_heads_from_config():
    """Plain values carry no KV-head count: with config= the model's grouping is used (the plan fits it); without
    it kv_group is refused rather than grouping each head alone, and convert's refusal names the fix."""
    teacher = make_teacher("qwen3")  # 4 query heads in 2 KV groups
    values = torch.tensor([[0.1, 0.9, 0.2, 0.3], [0.4, 0.5, 0.8, 0.7]])
    plan = HeadPlan.from_scores(values, ratio="1:1", granularity="kv_group", config=teacher.config)
    assert plan.num_kv_heads == 2 and plan.fa_heads == ((0, 1), (2, 3)) and plan.kv_cache_fraction == 0.5
    plan.validate(teacher)
    assert HeadPlan.from_scores(values, ratio="3:1", config=teacher.config).validate(teacher).fa_heads == ((1,), (2,))
    with pytest.raises(PlanError, match="plain score values do not say which heads share K/V, which kv_group needs: "
                                        "give config=model.config"):
        HeadPlan.from_scores(values, ratio="1:1", granularity="kv_group")
    with pytest.raises(PlanError, match="plan is for 4 KV heads per layer but the model has 2 .*pass config="):
        HeadPlan.from_scores(values, ratio="3:1").validate(teacher)


def test_min_per_layer_and_seed_must_be_integers():
    """min_per_layer 1.5 took 2 heads per layer while the plan's meta said 1.5; seed None gave another plan at
    every call, recorded as seed None."""
    teacher = make_teacher("qwen3")
    values = torch.tensor([[0.1, 0.9, 0.2, 0.3], [0.4, 0.5, 0.8, 0.7]])
    with pytest.raises(PlanError, match="min_per_layer must be an integer, got 1.5"):
        HeadPlan.from_scores(values, ratio="1:1", min_per_layer=1.5, config=teacher.config)
    with pytest.raises(PlanError, match="seed must be an integer, got None"):
        HeadPlan.random(teacher.config, "1:1", seed=None)
