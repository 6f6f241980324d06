"""Shared fixtures: tiny random models of every supported family (CPU, fp32)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

# head_dim (24) differs from hidden/heads (16) on purpose; 4 query heads share 2 KV heads (GQA).
TINY = dict(
    vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=24, max_position_embeddings=512,
    rms_norm_eps=1e-6, tie_word_embeddings=False,
)
FAMILIES = {
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, dict(attention_bias=True)),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
    "llama": (LlamaConfig, LlamaForCausalLM, dict(attention_bias=True)),
    "mistral": (MistralConfig, MistralForCausalLM, dict(sliding_window=None)),
}


def make_teacher(family: str = "qwen3", seed: int = 0, **overrides) -> torch.nn.Module:
    config_class, model_class, extra = FAMILIES[family]
    config = config_class(**{**TINY, **extra, **overrides})
    torch.manual_seed(seed)
    model = model_class(config).eval()
    # Random init leaves norms at 1 and biases at 0; perturb them so copies are really tested.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(params=list(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Every model here is tiny: a second intra-op thread buys nothing, and on a shared 2-core machine
    OpenMP's spin-waiting makes a step up to 30x slower. Restored at the end of the session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
