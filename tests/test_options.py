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
        (dict(conv_size=1), "conv_size must be 0"),
        (dict(train_length=1), "train_length must be >= 2"),
    ],
)
def test_contradictory_or_invalid_options(kwargs, match):
    with pytest.raises(OptionsError, match=match):
        HybridOptions(**kwargs)


def test_unknown_preset_and_option():
    with pytest.raises(OptionsError, match="unknown preset"):
        HybridOptions.preset("fast")
    with pytest.raises(OptionsError, match="unknown option"):
        HybridOptions.preset("paper", conv=3)
    with pytest.raises(OptionsError, match=r"unknown hybrid option\(s\) \['rope'\]"):
        HybridOptions.from_dict({"rope": "keep"})


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
