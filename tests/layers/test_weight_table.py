"""Tables made from weights alone (the q/k norm tables of both branches, the fusion's gains, the GDN decay rate) are kept between
inference forwards, so a decode step launches no kernels for them; they must follow every change of the
weights. The reference is the same forward with autograd on, which always builds them afresh."""

import pytest
import torch

import hydrahead
from hydrahead import HeadPlan, HybridOptions
from tests.conftest import make_teacher


def hybrid():
    # layer 0: FA and GDN heads (both q/k norm tables and the fusion's); layer 1: GDN only
    teacher = make_teacher("qwen3")
    return hydrahead.convert(teacher, HeadPlan(((0,), ()), 4, 2), HybridOptions.preset("paper")).eval()


def logits(model, ids, grad: bool):
    with torch.set_grad_enabled(grad):
        return model(ids, use_cache=False).logits.detach()


def kept(model):
    return {(name, key): table for name, module in model.named_modules()
            for key, (_, table) in module.__dict__.get("_weight_tables", {}).items()}


def test_tables_are_kept_between_inference_forwards():
    model = hybrid()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    logits(model, ids, grad=False)
    first = kept(model)
    assert {key for _, key in first} >= {"qk_norm", "qk_norm torch.float32", "fusion torch.float32", "gate"}
    logits(model, ids, grad=False)
    assert all(kept(model)[k] is t for k, t in first.items())  # reused, not rebuilt


@pytest.mark.parametrize("change", ["in-place", "optimizer step", "load_state_dict", "to float64"])
def test_kept_tables_follow_the_weights(change):
    model = hybrid()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    before = logits(model, ids, grad=False)  # tables kept now
    if change == "in-place":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(("gain", "norm.weight", "A_log", "dt_bias")):
                    p.mul_(torch.rand_like(p) + 0.5)
    elif change == "optimizer step":
        model.train()
        logits(model, ids, grad=True)
        model(ids, labels=ids, use_cache=False).loss.backward()
        torch.optim.SGD(model.parameters(), lr=1.0).step()
        model.eval()
    elif change == "load_state_dict":
        other = hybrid()
        with torch.no_grad():
            for p in other.parameters():
                p.add_(0.3 * torch.randn_like(p))
        model.load_state_dict(other.state_dict())
    else:
        model.to(torch.float64)
    after = logits(model, ids, grad=False)
    assert not torch.allclose(after.to(before.dtype), before)
    torch.testing.assert_close(after, logits(model, ids, grad=True))
