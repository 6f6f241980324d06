import pytest

import hydrahead
from hydrahead import HeadPlan, HybridOptions, OptionsError, UnsupportedModelError
from tests.conftest import make_teacher


def test_presets():
    paper = HybridOptions.preset("paper")
    assert (paper.fa_rope, paper.fa_log_scale, paper.fa_gate, paper.fusion) == ("none", True, True, "scale_norm")
    assert (paper.gdn_rope, paper.conv_size) == (True, 4)
    exact = HybridOptions.preset("exact")
    assert (exact.fa_rope, exact.fa_log_scale, exact.fa_gate, exact.fusion) == ("keep", False, False, "none")
    assert HybridOptions.preset("paper", train_length=16384).train_length == 16384


def test_round_trip():
    options = HybridOptions.preset("paper", conv_size=0)
    assert HybridOptions.from_dict(options.to_dict()) == options


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(fa_log_scale=True), "fa_log_scale=True needs train_length"),
        (dict(fa_rope="alibi"), "fa_rope must be one of"),
        (dict(fusion="softmax_gate"), "fusion must be one of"),
        (dict(conv_size=1), r"conv_size must be an integer, 0 \(off\) or >= 2, got 1"),
        (dict(train_length=1), "train_length must be >= 2"),
    ],
)
def test_contradictory_or_invalid_options(kwargs, match):
    with pytest.raises(OptionsError, match=match):
        HybridOptions(**kwargs)


def test_unknown_preset_and_option():
    with pytest.raises(OptionsError, match="unknown preset"):
        HybridOptions.preset("fast")
    with pytest.raises(OptionsError, match=r"unknown hybrid option\(s\) \['conv'\]"):
        HybridOptions.preset("paper", conv=3)
    with pytest.raises(OptionsError, match=r"unknown hybrid option\(s\) \['rope'\]"):
        HybridOptions.from_dict({"rope": "keep"})
    with pytest.raises(OptionsError, match=r"must be a mapping of option to value, got 'paper' \(a string\)"):
        HybridOptions.from_dict("paper")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(fa_gate="False"), r"fa_gate must be true or false, got 'False' \(a string\)"),
        (dict(gdn_rope="no"), r"gdn_rope must be true or false, got 'no'"),
        (dict(gdn_shared_kv=1), r"gdn_shared_kv must be true or false, got 1"),
        (dict(fa_log_scale=None), r"fa_log_scale must be true or false, got None"),
        (dict(conv_size=2.5), r"conv_size must be an integer, 0 \(off\) or >= 2, got 2.5 \(a float\)"),
        (dict(conv_size="4"), r"conv_size must be an integer.*got '4' \(a string\)"),
        (dict(conv_size=True), r"conv_size must be an integer.*got True"),
        (dict(conv_size=None), r"conv_size must be an integer.*got None"),
        (dict(train_length="16q"), r"train_length: expected a length in tokens such as 4096, 4k.*got '16q'"),
        (dict(train_length=[4096]), r"train_length: expected a length in tokens"),
        (dict(fa_rope=None), r"fa_rope must be one of \('keep', 'none'\), got None"),
        (dict(fusion=["none"]), r"fusion must be one of .*got \['none'\] \(a list\)"),
    ],
)
def test_values_of_the_wrong_type_are_refused(kwargs, match):
    """Never coerced: the string "False" is truthy and would build the very feature it turns off."""
    for build in (lambda: HybridOptions(**kwargs), lambda: HybridOptions.from_dict(kwargs),
                  lambda: HybridOptions.preset("paper", **kwargs)):
        with pytest.raises(OptionsError, match=match):
            build()


def test_train_length_takes_a_length_with_a_suffix():
    assert HybridOptions.preset("paper", train_length="16k").train_length == 16384
    assert HybridOptions.from_dict({"train_length": "1.5k"}) == HybridOptions(train_length=1536)
    assert HybridOptions.from_dict(HybridOptions.preset("paper", train_length="4k").to_dict()).train_length == 4096


def test_a_recipe_names_the_bad_hybrid_option():
    from hydrahead.distill import Recipe

    recipe = {"teacher": "t", "plan": "p.json", "output_dir": "out", "data": {"train_files": ["a.jsonl"]},
              "stages": {"align": {"tokens": 1000, "seq_len": 8, "batch_size": 2, "lr": 1e-3}}}
    for hybrid, match in (({"fa_gate": "False"}, "hybrid is invalid: fa_gate must be true or false, got 'False'"),
                          ({"conv_size": "abc"}, "hybrid is invalid: conv_size must be an integer")):
        with pytest.raises(hydrahead.RecipeError, match=match):
            Recipe.from_dict({**recipe, "hybrid": {"preset": "paper", **hybrid}})
    assert Recipe.from_dict({**recipe, "hybrid": {"train_length": "16k"}}).hybrid_options().train_length == 16384


def test_unsupported_model_class():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel.*Qwen3ForCausalLM, Qwen2ForCausalLM"):
        hydrahead.convert(model, HeadPlan(((0,),), 2, 2))


def test_converting_a_hybrid_again_is_refused():
    teacher = make_teacher("qwen3")
    model = hydrahead.convert(teacher, HeadPlan.full(teacher.config))
    with pytest.raises(UnsupportedModelError, match="HydraHeadQwen3ForCausalLM"):
        hydrahead.convert(model, HeadPlan.full(teacher.config))
