import pytest
import torch

from hydrahead.scoring import ScoringError, ablate, head_means
from hydrahead.models.heads import HeadHooks
from tests.conftest import make_teacher


def head_outputs(model, ids):
    with HeadHooks(model) as hooks, torch.no_grad():
        hooks.capture = {}
        logits = model(input_ids=ids).logits
        return logits, dict(hooks.capture)


def test_zero_and_mean_ablation_overwrite_only_the_chosen_heads():
    model = make_teacher("qwen2")
    ids = torch.randint(0, 97, (2, 12))
    reference = torch.randint(0, 97, (3, 10))
    base, _ = head_outputs(model, ids)
    with ablate(model, [(1, 2), (0, 0)], mode="zero"):
        _, heads = head_outputs(model, ids)
    # the hooks see o_proj's input after ablation: layer 0 head 0 and layer 1 head 2 are zero
    assert heads[0][:, :, 0].abs().max() == 0 and heads[1][:, :, 2].abs().max() == 0
    assert heads[0][:, :, 1].abs().max() > 0
    means = head_means(model, reference)
    assert len(means) == 2 and means[0].shape == (4, 24)
    with ablate(model, [(1, 3)], reference=reference):
        logits, heads = head_outputs(model, ids)
    torch.testing.assert_close(heads[1][:, :, 3], means[1][3].expand(2, 12, 24))
    assert not torch.allclose(logits, base)
    after, _ = head_outputs(model, ids)
    torch.testing.assert_close(after, base)  # hooks removed on exit


def test_mean_ablation_of_a_head_with_a_constant_output_changes_nothing():
    model = make_teacher("llama")  # has a v bias
    with torch.no_grad():  # KV head 0 (v rows 0..23) sees only its bias: query heads 0 and 1 output that constant
        model.model.layers[0].self_attn.v_proj.weight[:24] = 0
    ids = torch.randint(0, 97, (1, 9))
    base, _ = head_outputs(model, ids)
    with ablate(model, [(0, 1)], reference=torch.randint(0, 97, (2, 5))):
        logits, _ = head_outputs(model, ids)
    torch.testing.assert_close(logits, base)
    with ablate(model, [(0, 2)], reference=torch.randint(0, 97, (2, 5))):
        logits, _ = head_outputs(model, ids)
    assert not torch.allclose(logits, base)


def test_ablation_errors():
    model = make_teacher("qwen3")
    with pytest.raises(ScoringError, match=r"head \(2, 0\) does not exist"):
        with ablate(model, [(2, 0)], mode="zero"):
            pass
    with pytest.raises(ScoringError, match="needs `reference`"):
        with ablate(model, [(0, 0)]):
            pass
    with pytest.raises(ScoringError, match="mode must be one of"):
        with ablate(model, [(0, 0)], mode="resample"):
            pass


def test_means_of_another_model_are_refused():
    """Another model's means ablated with whatever they held (more heads: the logits changed, no error), or
    failed with an IndexError (fewer layers)."""
    model, ids = make_teacher("qwen3"), torch.randint(0, 97, (1, 6))
    wider = head_means(make_teacher("qwen3", num_attention_heads=8, num_key_value_heads=2), ids)
    for means, got in ((wider, r"2 layers of shapes \[\(8, 24\)\]"), (head_means(model, ids)[:1], "1 layer of "),
                       ([], r"\[\] \(a list\)"), ("x", "'x'")):
        with pytest.raises(ScoringError, match=r"means are not this model's: it needs 2 layers of \(4 heads, 24\) "
                                               f"means, got {got}.*; compute them with head_means"):
            with ablate(model, [(0, 1)], means=means):
                pass
    with ablate(model, [(0, 1)], means=torch.stack(head_means(model, ids))):  # one (layers, heads, dim) tensor
        model(ids)


@pytest.mark.parametrize(("heads", "message"), [
    ([(0, 1.7)], r"head \(0, 1.7\): each number must be an integer, got 1.7"),  # ablated head 1 before
    ([(0,)], r"must be \(layer, head\) pairs, got \(0,\)"),
    ([(0, 1, 2)], r"must be \(layer, head\) pairs"),
    (5, "must be a list of"),
], ids=["float-head", "one-number", "three-numbers", "not-a-list"])
def test_ablation_names_heads_that_are_not_integer_pairs(heads, message):
    with pytest.raises(ScoringError, match=message):
        with ablate(make_teacher("qwen3"), heads, mode="zero"):
            pass
