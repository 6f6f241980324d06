import json

import pytest
import torch
from transformers import GPT2Config

from hydrahead import HeadPlan, UnsupportedModelError
from hydrahead.models.heads import HeadHooks
from hydrahead.models.convert import teacher_head_statistics
from hydrahead.models.shape import ModelShape
from tests.conftest import make_teacher


def test_model_shape_reads_a_config_a_dict_and_itself(family):
    config = make_teacher(family).config
    shape = ModelShape.from_config(config)
    assert (shape.layers, shape.heads, shape.kv_heads) == (
        config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads)
    assert shape.head_dim == (getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    assert shape.group_size == config.num_attention_heads // config.num_key_value_heads
    assert ModelShape.from_config(json.loads(config.to_json_string())) == shape
    assert ModelShape.from_config(shape) is shape
    HeadPlan.full(config).validate(shape)  # plans take a shape where they take a config


def test_model_shape_defaults_kv_heads_to_heads():
    shape = ModelShape.from_config({"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32})
    assert (shape.kv_heads, shape.head_dim, shape.describe()) == (4, 8, "2 layers x 4 heads (4 KV heads)")


@pytest.mark.parametrize("config", [
    GPT2Config(n_layer=2, n_head=2, n_embd=8).to_dict(),  # GPT-2 names its fields otherwise
    {"num_hidden_layers": "four", "num_attention_heads": 4},
    {"num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 4},
    {"num_hidden_layers": 0, "num_attention_heads": 4},
])
def test_model_shape_rejects_what_is_not_a_decoder_shape(config):
    with pytest.raises(UnsupportedModelError, match="config"):
        ModelShape.from_config(config)


def test_head_statistics_and_overwrites_go_through_the_one_hook():
    model = make_teacher("llama")
    ids = torch.randint(0, 97, (2, 9))
    shape = ModelShape.from_config(model.config)
    with HeadHooks(model) as hooks, torch.no_grad():
        hooks.capture = {}
        base = model(input_ids=ids).logits
        heads = dict(hooks.capture)
    statistics = teacher_head_statistics(model, ids)
    assert statistics.rms.shape == statistics.centred_rms.shape == (shape.layers, shape.heads)
    assert statistics.mean.shape == (shape.layers, shape.heads, shape.head_dim)
    torch.testing.assert_close(statistics.rms[1], heads[1].pow(2).mean(dim=(0, 1, 3)).sqrt())
    torch.testing.assert_close(statistics.mean[1], heads[1].mean(dim=(0, 1)))
    torch.testing.assert_close(statistics.centred_rms[1], heads[1].std(dim=(0, 1), correction=0).pow(2).mean(-1).sqrt())
    value = torch.full((1, shape.head_dim), 0.5)
    with HeadHooks(model) as hooks, torch.no_grad():
        hooks.overwrites[0] = ([1], value)
        hooks.capture = {}
        changed = model(input_ids=ids).logits
        assert torch.equal(hooks.capture[0][:, :, 1], value.expand(2, 9, -1))
        torch.testing.assert_close(hooks.capture[0][:, :, 0], heads[0][:, :, 0])
    assert not torch.allclose(changed, base)
    with torch.no_grad():  # hooks removed on exit
        torch.testing.assert_close(model(input_ids=ids).logits, base)
