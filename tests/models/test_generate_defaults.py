"""What a plain `generate` defaults to: on CUDA the static cache (so transformers compiles the decode step and
replays it as a CUDA graph), unless the caller chose otherwise or the search needs a dynamic cache; on the
CPU, transformers' default cache (a long prompt's prefill in pieces: tests/models/test_forward_pieces.py).
The CUDA run itself is tests/models/test_cuda.py."""

from types import SimpleNamespace

import pytest
import torch
from transformers import GenerationConfig

import hydrahead
from hydrahead import HeadPlan
from hydrahead.models.hybrid import graph_decode_applies
from tests.conftest import make_teacher


@pytest.fixture(scope="module")
def model():
    return hydrahead.convert(make_teacher("qwen3"), HeadPlan(((0,), (1,)), 4, 2)).eval()


def on(model, device: str, **config):
    """The model as graph_decode_applies sees it, on `device`, with generation-config fields `config`."""
    return SimpleNamespace(device=torch.device(device), generation_config=GenerationConfig(**config),
                           family=model.family, config=model.config)


def test_cuda_defaults_to_the_static_cache(model):
    assert graph_decode_applies(on(model, "cuda"), {})
    assert graph_decode_applies(on(model, "cuda"), {"max_new_tokens": 8, "do_sample": True})


@pytest.mark.parametrize("kwargs", [{"cache_implementation": "dynamic"}, {"past_key_values": object()},
                                    {"disable_compile": True}, {"num_beams": 2}, {"assistant_model": object()},
                                    {"generation_config": GenerationConfig(cache_implementation="dynamic")}])
def test_the_callers_choice_and_dynamic_only_searches_keep_transformers_default(model, kwargs):
    assert not graph_decode_applies(on(model, "cuda"), kwargs)


def test_a_model_level_choice_is_kept(model):
    assert not graph_decode_applies(on(model, "cuda", cache_implementation="dynamic"), {})
    assert not graph_decode_applies(on(model, "cuda", num_beams=4), {})


def test_the_cpu_keeps_transformers_default(model):
    assert not graph_decode_applies(on(model, "cpu"), {})
    out = model.generate(torch.ones(1, 4, dtype=torch.long), max_new_tokens=2, do_sample=False)
    assert out.shape == (1, 6)


def test_sliding_window_models_stay_dynamic():
    teacher = make_teacher("mistral", sliding_window=8)
    model = hydrahead.convert(teacher, HeadPlan(((0,), (1,)), 4, 2))
    assert not graph_decode_applies(on(model, "cuda"), {})


def test_continuous_batching_is_refused_in_one_line(model):
    """A paged KV cache has no place for a GDN head's state: generate(cache_implementation="paged") and the
    continuous-batching entry points raise CacheError; `init_continuous_batching` is absent, so transformers'
    server falls back to sequential generation instead of computing something else."""
    ids = torch.randint(0, model.config.vocab_size, (1, 5))
    with pytest.raises(hydrahead.CacheError, match="continuous batching .*not supported for hydrahead models"):
        model.generate(ids, max_new_tokens=2, cache_implementation="paged")
    with pytest.raises(hydrahead.CacheError, match="continuous batching"):
        model.generate_batch([[1, 2, 3]])
    with pytest.raises(hydrahead.CacheError, match="continuous batching"):
        model.continuous_batching_context_manager()
    assert not hasattr(model, "init_continuous_batching")
