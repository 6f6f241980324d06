import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import hydrahead
from hydrahead import HeadPlan, HybridOptions
from tests.conftest import make_teacher


@pytest.fixture
def saved(tmp_path):
    teacher = make_teacher("qwen3")
    # layer 1: heads 0, 1 share KV group 0 and head 2 is alone in group 1 (K/V gathered per head)
    plan = HeadPlan(((1,), (0, 1, 2)), 4, 2, meta={"source": "test"})
    model = hydrahead.convert(teacher, plan, HybridOptions.preset("paper", train_length=64))
    model.save_pretrained(tmp_path)
    return model, tmp_path


@pytest.mark.parametrize("loader", ["hydrahead", "auto"])
def test_round_trip_gives_identical_logits(saved, loader):
    model, path = saved
    again = hydrahead.from_pretrained(path) if loader == "hydrahead" else AutoModelForCausalLM.from_pretrained(path)
    assert type(again) is type(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(ids).logits, model.eval()(ids).logits, rtol=0, atol=0)
    assert again.hydrahead_plan == model.hydrahead_plan
    assert again.hydrahead_plan.meta == {"source": "test"}
    assert again.hydrahead_options == HybridOptions.preset("paper", train_length=64)


def test_round_trip_each_family(family, tmp_path):
    teacher = make_teacher(family)
    model = hydrahead.convert(teacher, HeadPlan(((0, 1), (3,)), 4, 2)).eval()
    model.save_pretrained(tmp_path)
    again = hydrahead.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)


def test_missing_directory(tmp_path):
    with pytest.raises(hydrahead.CheckpointError, match="not found"):
        hydrahead.from_pretrained(tmp_path / "nope")


def test_missing_weights(saved):
    _, path = saved
    (path / "model.safetensors").unlink()
    with pytest.raises(hydrahead.CheckpointError, match="no weights"):
        hydrahead.from_pretrained(path)


def test_truncated_weights(saved):
    _, path = saved
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(hydrahead.CheckpointError, match="corrupt or truncated"):
        hydrahead.from_pretrained(path)


def test_garbage_weights(saved):
    _, path = saved
    (path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(hydrahead.CheckpointError, match="corrupt"):
        hydrahead.from_pretrained(path)


def test_corrupt_config(saved):
    _, path = saved
    (path / "config.json").write_text("{not json")
    with pytest.raises(hydrahead.CheckpointError, match="config.json is corrupt"):
        hydrahead.from_pretrained(path)


def test_not_a_hybrid(tmp_path):
    make_teacher("llama").save_pretrained(tmp_path)
    with pytest.raises(hydrahead.CheckpointError, match="not a hydrahead hybrid"):
        hydrahead.from_pretrained(tmp_path)


def test_hybrid_config_without_plan(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    del config["hydrahead"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(hydrahead.CheckpointError, match="hydrahead"):
        hydrahead.from_pretrained(path)
