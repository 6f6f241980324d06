"""HeadPlan from scores and the comparison baselines."""

import numpy as np
import pytest

from hydrahead import HeadPlan, PlanError
from hydrahead.scoring import HeadScores
from tests.conftest import make_teacher


class Shape:
    def __init__(self, layers, heads, kv):
        self.num_hidden_layers, self.num_attention_heads, self.num_key_value_heads = layers, heads, kv


PAPER = Shape(28, 16, 8)  # Qwen3-1.7B


def random_scores(shape=PAPER, seed=0):
    values = np.random.default_rng(seed).random((shape.num_hidden_layers, shape.num_attention_heads))
    return HeadScores(values, "patching", shape.num_key_value_heads)


def fa_set(plan):
    return {(l, h) for l, heads in enumerate(plan.fa_heads) for h in heads}


@pytest.mark.parametrize("ratio, expected", [("7:1", 56), ("3:1", 112), ("15:1", 28), ("1:1", 224), ("0:1", 448)])
def test_ratio_and_min_per_layer_are_exact(ratio, expected):
    s = random_scores()
    plan = HeadPlan.from_scores(s, ratio=ratio, min_per_layer=1, config=PAPER)
    assert plan.num_fa == expected
    assert min(plan.fa_heads_per_layer) >= 1
    assert plan.meta == {"method": "patching", "ratio": ratio, "min_per_layer": 1, "granularity": "query_head"}


def test_constrained_global_screening():
    # layer 0 has all the best heads; min_per_layer still gives every layer its best head
    values = np.array([[9, 8, 7, 6], [1, 2, 0, 0], [0, 0, 3, 0]], dtype=float)
    plan = HeadPlan.from_scores(HeadScores(values, "patching", 2), ratio="2:1", min_per_layer=1)  # 4 of 12 FA
    assert plan.fa_heads == ((0, 1), (1,), (2,))
    plan = HeadPlan.from_scores(HeadScores(values, "patching", 2), ratio="2:1", min_per_layer=0)
    assert plan.fa_heads == ((0, 1, 2, 3), (), ())
    assert "tied_picks" not in plan.meta  # every pick beat what it was picked over
    plan = HeadPlan.from_scores(HeadScores(values, "patching", 2), ratio="1:1", min_per_layer=2)  # 6 of 12
    assert plan.fa_heads_per_layer == [2, 2, 2]
    assert plan.meta["tied_picks"] == 1  # layer 2's second head: 0.0, as its heads 1 and 3


def test_picks_the_scores_do_not_decide_are_counted_and_printed(tmp_path, capsys):
    """Heads of exactly 0 (patching's and attribution's 'no effect') tie: the lower layer and index pick among
    them; the plan records how many picks that decided and `hydrahead plan` says so."""
    from hydrahead.cli import main

    values = np.zeros((4, 4))
    values[3, 2] = 1.0
    scores = HeadScores(values, "patching", 2)
    plan = HeadPlan.from_scores(scores, ratio="3:1", min_per_layer=1)
    assert plan.fa_heads == ((0,), (0,), (0,), (2,)) and plan.meta["tied_picks"] == 3
    values = np.array([[0.5, 0.5], [0.9, 0.1]])  # layer 0's tie: its minimum takes head 0, the global pick head 1
    both = HeadPlan.from_scores(HeadScores(values, "patching", 1), ratio="1:3", min_per_layer=1)
    assert both.fa_heads == ((0, 1), (0,)) and "tied_picks" not in both.meta  # both kept: the tie decided nothing
    scores.to_json(tmp_path / "scores.json")
    assert main(["plan", "--scores", str(tmp_path / "scores.json"), "--ratio", "3:1", "--out",
                 str(tmp_path / "plan.json")]) == 0
    assert "note: 3 of the FA heads were picked among equal scores" in capsys.readouterr().out
    assert HeadPlan.from_json(tmp_path / "plan.json").meta["tied_picks"] == 3


def test_kv_group_granularity_keeps_whole_groups():
    s = random_scores()
    plan = HeadPlan.from_scores(s, ratio="7:1", granularity="kv_group")
    assert all(len(heads) % 2 == 0 for heads in plan.fa_heads)
    for heads in plan.fa_heads:  # group g = heads 2g, 2g+1: both or neither
        assert all((h ^ 1) in heads for h in heads)
    assert plan.kv_cache_fraction == pytest.approx(1 / 8)  # exact: 28 of 224 groups
    assert plan.num_fa == 56
    # a group is scored by its best head: the single best head's group is always chosen
    best = np.unravel_index(np.argmax(s.values), s.values.shape)
    assert best[1] in plan.fa_heads[best[0]]
    # query-head selection at the same ratio spreads over more KV groups
    assert HeadPlan.from_scores(s, "7:1").kv_cache_fraction > plan.kv_cache_fraction


def test_layerwise():
    plan = HeadPlan.layerwise(PAPER, "3:1")
    assert [l for l, h in enumerate(plan.fa_heads) if h] == [3, 7, 11, 15, 19, 23, 27]
    assert all(len(h) in (0, 16) for h in plan.fa_heads) and plan.kv_cache_fraction == pytest.approx(0.25)
    assert HeadPlan.layerwise(PAPER, "7:1").meta["layers"] == [6, 13, 20, 27]
    given = HeadPlan.layerwise(PAPER, layers=[0, 5])
    assert [l for l, h in enumerate(given.fa_heads) if h] == [0, 5]


def test_random_baseline():
    a, b, c = HeadPlan.random(PAPER, "7:1", seed=0), HeadPlan.random(PAPER, "7:1", seed=0), HeadPlan.random(PAPER, "7:1", seed=1)
    assert a == b and a != c
    assert a.num_fa == 56 and min(a.fa_heads_per_layer) >= 1
    assert a.meta["method"] == "random" and a.meta["seed"] == 0


def test_fixed_per_layer():
    s = random_scores()
    plan = HeadPlan.fixed_per_layer(s, 2)
    assert plan.fa_heads_per_layer == [2] * 28 and plan.la_fa_ratio == 7
    for layer, heads in enumerate(plan.fa_heads):
        assert set(heads) == set(np.argsort(-s.values[layer])[:2])
    assert plan.meta == {"method": "patching", "allocation": "fixed_per_layer", "k": 2}


def test_baselines_take_whole_numbers_and_save_numpy_ones(tmp_path):
    import numpy as np

    from hydrahead.models.shape import ModelShape

    HeadPlan.random(ModelShape(2, 4, 2), "1:1", seed=np.int64(3)).to_json(tmp_path / "p.json")  # was a TypeError
    assert HeadPlan.from_json(tmp_path / "p.json").meta["seed"] == 3
    scores = np.random.rand(2, 4)
    for k, message in ((2.0, "k must be an integer, got 2.0"), (True, "k must be an integer, got True")):
        with pytest.raises(PlanError, match=message):  # a slice's TypeError; True was taken as 1
            HeadPlan.fixed_per_layer(scores, k)


def test_plans_print_their_summary():
    plan = HeadPlan.from_scores(random_scores(), "7:1")
    text = plan.summary()
    assert "FA heads 56" in text and "KV cache" in text and len(text.splitlines()) == 30


@pytest.mark.parametrize("call, match", [
    (lambda s: HeadPlan.from_scores(s, "7-1"), "ratio must be 'LA:FA'"),
    (lambda s: HeadPlan.from_scores(s, "a:b"), "ratio must be"),
    (lambda s: HeadPlan.from_scores(s, "1:0"), "leaves no full-attention heads"),
    (lambda s: HeadPlan.from_scores(s, "1000:1", min_per_layer=0), "leaves no full-attention"),
    (lambda s: HeadPlan.from_scores(s, "31:1", min_per_layer=1), "fewer than min_per_layer=1.*--min-per-layer 0"),
    (lambda s: HeadPlan.from_scores(s, "7:1", min_per_layer=17), "min_per_layer must be between"),
    (lambda s: HeadPlan.from_scores(s, "7:1", granularity="layer"), "granularity"),
    (lambda s: HeadPlan.from_scores(s, "7:1", config=Shape(2, 4, 2)), "28 layers x 16 heads .* 2 layers x 4 heads"),
    (lambda s: HeadPlan.fixed_per_layer(s, 17), "k must be between 1 and 16"),
    (lambda s: HeadPlan.fixed_per_layer(s, 2, config=Shape(28, 16, 4)), "8 KV heads.*4 KV heads"),
    (lambda s: HeadPlan.layerwise(PAPER, "100:1"), "no full-attention layer"),
    (lambda s: HeadPlan.layerwise(PAPER, layers=[28]), "distinct indices in 0..27"),
    (lambda s: HeadPlan.random(PAPER, "1:0"), "leaves no"),
])
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(PlanError, match=match):
        call(random_scores())


def test_scores_that_rank_nothing_make_no_plan():
    """Probes a model cannot solve (longer than its window, say) give every head the effect 0: a plan from them
    would be the heads' index order, and is refused."""
    flat = HeadScores(np.zeros((28, 16)), "patching", 8)
    for build in (lambda: HeadPlan.from_scores(flat), lambda: HeadPlan.fixed_per_layer(flat, 2)):
        with pytest.raises(PlanError, match="every head scores 0.0: the scores rank no head above another"):
            build()


def test_plan_from_scores_fits_the_model():
    teacher = make_teacher("qwen3")
    s = HeadScores(np.arange(8, dtype=float).reshape(2, 4), "attribution", 2)
    plan = HeadPlan.from_scores(s, "3:1", config=teacher.config).validate(teacher.config)
    assert fa_set(plan) == {(0, 3), (1, 3)}  # 2 of 8: one per layer (min_per_layer=1)
