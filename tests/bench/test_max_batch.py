"""bench/inference.py's max-batch section runs on CUDA only (it asks the device for its free memory); here on a
CPU, with that answer stood in: the batch it finds is the free memory over the bytes a sequence's cache holds,
which for a hybrid include its GDN states and conv windows (the count once left them out, and an all-GDN model
divided by zero), and the batch is checked by filling that cache and decoding a token."""

import sys
import types
from pathlib import Path

import torch

from hydrahead.models.footprint import footprint

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import inference  # noqa: E402

FREE = 16 << 20  # bytes the stand-in device has free


def test_max_batch_divides_free_memory_by_what_a_sequence_holds(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (FREE, 80 << 30))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    args = types.SimpleNamespace(models=["teacher", "hydrahead-7:1", "all-gdn"], dtype="fp32", device="cpu")
    models = inference.build_models(args, layers=2, hidden=64, intermediate=128, vocab=512, head_dim=16)
    context = 256
    for name, model in models.items():
        row = inference.max_batch(model, context)
        if name == "teacher":
            config = model.config
            per_sequence = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4 * (context + 1)
        else:
            figures = footprint(model)
            per_sequence = figures["kv_bytes_per_token"] * (context + 1) + figures["state_bytes_per_sequence"]
        assert row == {"batch": int(0.9 * FREE // per_sequence), "bytes_per_sequence": per_sequence, "checked": True,
                       "first_failure": None}


def test_a_first_guess_that_does_not_fit_is_bisected_not_only_halved(monkeypatch):
    """On a GPU the first guess can miss by the filling's temporaries: halving alone reported about half the
    capacity. With batches above 19 out of memory (the first guess is 28), the search ends within 1/16 of the
    edge."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (FREE, 80 << 30))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    args = types.SimpleNamespace(models=["teacher"], dtype="fp32", device="cpu")
    model = inference.build_models(args, layers=2, hidden=64, intermediate=128, vocab=512, head_dim=16)["teacher"]
    real = inference.eager_step

    def step(model, token, position, cache):
        if token.shape[0] > 19:
            raise torch.OutOfMemoryError("CUDA out of memory (stand-in)")
        return real(model, token, position, cache)

    monkeypatch.setattr(inference, "eager_step", step)
    row = inference.max_batch(model, 256)
    assert row["checked"] and row["batch"] == 19 and row["first_failure"] == 20  # halving alone: 14
