import pytest
import torch
from torch import nn

from hydrahead.distill.losses import (
    IGNORE,
    chunked_kd_loss,
    hidden_state_loss,
    kd_loss_reference,
    next_token_labels,
)


def _setup(B=2, T=37, d=16, V=53, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, d, generator=g, dtype=torch.float64, requires_grad=True)
    teacher_hidden = torch.randn(B, T, d, generator=g, dtype=torch.float64)
    head, teacher_head = nn.Linear(d, V, bias=False).double(), nn.Linear(d, V, bias=False).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, d, generator=g))
        teacher_head.weight.copy_(torch.randn(V, d, generator=g))
    labels = next_token_labels(torch.randint(0, V, (B, T), generator=g))
    labels[0, 5] = IGNORE  # a hole in the targets, as padding would make
    return hidden, teacher_hidden, head, teacher_head, labels


@pytest.mark.parametrize("chunk", [1, 8, 37, 1000], ids=lambda c: f"chunk{c}")
@pytest.mark.parametrize("temperature,kl_weight,ce_weight", [(1.0, 1.0, 1.0), (2.0, 1.0, 0.3), (0.7, 0.0, 1.0)],
                         ids=["T1", "T2-ce0.3", "ce-only"])
def test_chunked_kd_equals_unchunked(chunk, temperature, kl_weight, ce_weight):
    hidden, teacher_hidden, head, teacher_head, labels = _setup()
    ref = kd_loss_reference(head(hidden), teacher_head(teacher_hidden), labels, temperature, kl_weight, ce_weight)
    grads_ref = torch.autograd.grad(ref.loss, [hidden, head.weight])
    out = chunked_kd_loss(hidden, head, labels, teacher_hidden, teacher_head, temperature, kl_weight, ce_weight, chunk)
    grads = torch.autograd.grad(out.loss, [hidden, head.weight])
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.ce, ref.ce.detach(), rtol=1e-12, atol=1e-12)
    if kl_weight:
        torch.testing.assert_close(out.kl, ref.kl.detach(), rtol=1e-12, atol=1e-12)
    for name, a, b in zip(("d hidden", "d head"), grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def test_chunked_without_teacher_is_next_token_ce():
    hidden, _, head, _, labels = _setup()
    out = chunked_kd_loss(hidden, head, labels, chunk=5)
    ce = torch.nn.functional.cross_entropy(head(hidden).flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    torch.testing.assert_close(out.loss, ce)


def test_kl_is_zero_when_student_equals_teacher():
    hidden, _, head, _, labels = _setup()
    out = chunked_kd_loss(hidden, head, labels, hidden.detach(), head, temperature=2.0, ce_weight=0.0, chunk=4)
    assert abs(out.kl.item()) < 1e-12


def test_chunked_keeps_no_full_logits_for_backward():
    """Only one chunk's logits are ever alive: the saved tensors for backward hold no (B, T, V) tensor."""
    hidden, teacher_hidden, head, teacher_head, labels = _setup(T=64, V=97)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunked_kd_loss(hidden, head, labels, teacher_hidden, teacher_head, chunk=8)
    assert max(sizes) < 2 * 64 * 97 / 4  # at most a chunk's worth (B * 8 * V), far below B * T * V


def test_hidden_state_mse_per_layer_mean():
    a = [torch.zeros(2, 3, 4), torch.ones(2, 3, 4)]
    b = [torch.ones(2, 3, 4), torch.ones(2, 3, 4)]
    loss, per_layer = hidden_state_loss(a, b, "mse")
    assert loss.item() == 0.5 and per_layer.tolist() == [1.0, 0.0]


def test_nmse_is_mse_over_teacher_variance_by_hand():
    """Two sequences of 2 positions x 2 features; layer 1 is layer 0 times 10."""
    teacher = torch.tensor([[[0.0, 0.0], [2.0, 4.0]],  # feature variances 1 and 4: var 2.5
                            [[1.0, 1.0], [1.0, 3.0]]])  # 0 and 1: var 0.5
    student = torch.stack([torch.zeros(2, 2), teacher[1] + 1])  # MSE 20 / 4 = 5 and 1
    nmse, per_layer = hidden_state_loss([student, 10 * student], [teacher, 10 * teacher])
    torch.testing.assert_close(per_layer, torch.tensor([2.0, 2.0]))  # mean(5 / 2.5, 1 / 0.5), at either scale
    torch.testing.assert_close(nmse, torch.tensor(2.0))
    _, mse = hidden_state_loss([student, 10 * student], [teacher, 10 * teacher], "mse")
    torch.testing.assert_close(mse, torch.tensor([3.0, 300.0]))  # what plain MSE makes of the same error
    mean_student = teacher.mean(dim=1, keepdim=True).expand_as(teacher)  # each sequence's per-feature mean
    assert hidden_state_loss([mean_student], [teacher])[0].item() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["nmse", "mse"])
def test_padding_counts_in_neither_term(kind):
    """A row padded to a longer length scores what the unpadded row scores, whatever the padding holds."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 5, 4, generator=g)
    student = teacher + 0.5 * torch.randn(2, 5, 4, generator=g)
    pad_t, pad_s = 100 * torch.randn(2, 3, 4, generator=g), -100 * torch.randn(2, 3, 4, generator=g)
    positions = torch.cat([torch.ones(2, 5, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    padded = hidden_state_loss([torch.cat([student, pad_s], 1)], [torch.cat([teacher, pad_t], 1)], kind,
                               positions=positions)
    torch.testing.assert_close(padded[1], hidden_state_loss([student], [teacher], kind)[1])


@pytest.mark.parametrize("scale", [1e-2, 1e3], ids=lambda c: f"x{c:g}")
def test_nmse_is_invariant_to_a_layers_scale(scale):
    """Scaling (and shifting) one layer's teacher and student outputs alike leaves every term as it was:
    a layer with massive activations weighs as much as any other."""
    g = torch.Generator().manual_seed(0)
    teacher = [torch.randn(3, 17, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    student = [t + 0.3 * torch.randn(t.shape, generator=g, dtype=torch.float64) for t in teacher]
    loss, per_layer = hidden_state_loss(student, teacher)
    shift = torch.randn(8, generator=g, dtype=torch.float64)
    student[1], teacher[1] = scale * student[1] + shift, scale * teacher[1] + shift
    scaled_loss, scaled = hidden_state_loss(student, teacher)
    torch.testing.assert_close(scaled.double(), per_layer.double(), rtol=1e-5, atol=0)
    torch.testing.assert_close(scaled_loss, loss, rtol=1e-5, atol=0)
    _, mse = hidden_state_loss(student, teacher, "mse")
    assert mse[1] / mse[0] == pytest.approx(scale**2, rel=0.5)  # plain MSE is not


def test_nmse_gradient_reaches_only_the_student_and_zero_variance_is_guarded():
    teacher = [torch.randn(2, 5, 4), torch.ones(2, 5, 4)]  # layer 1: the same vector everywhere, variance 0
    student = [t.clone().requires_grad_(True) for t in teacher]
    loss, per_layer = hidden_state_loss(student, teacher)
    loss.backward()
    assert per_layer.tolist() == [0.0, 0.0] and all(s.grad is not None for s in student)
    with pytest.raises(ValueError, match="kind must be nmse or mse"):
        hidden_state_loss(student, teacher, "l2")


@pytest.mark.parametrize("kind", ["nmse", "mse"])
def test_align_stage_loss_follows_the_recipe(kind):
    """stages.align.loss picks the loss; metrics carry every layer's term; the progress line a summary."""
    import hydrahead
    from hydrahead import HeadPlan, HybridOptions
    from hydrahead.distill.recipe import AlignStageConfig
    from hydrahead.distill.stages import AlignStage
    from tests.conftest import make_teacher

    teacher = make_teacher("qwen3")
    student = hydrahead.convert(teacher, HeadPlan(((0,), (1, 3)), 4, 2), HybridOptions.preset("paper", train_length=8))
    stage = AlignStage(AlignStageConfig(tokens=64, seq_len=12, batch_size=1, lr=1e-3, loss=kind), 0)
    ids = torch.randint(2, 90, (1, 12))
    with torch.no_grad():
        targets = stage.teacher_targets(teacher, ids)
        loss, metrics = stage.loss(student, ids, targets)
        hidden = student.model(input_ids=ids, use_cache=False, output_hidden_states=True).hidden_states[1:]
        wanted = [torch.nn.functional.mse_loss(s, t) for s, t in zip(hidden, targets)]  # Eq. 15's terms
        if kind == "nmse":  # one sequence: its variance is the batch's
            wanted = [m / t.flatten(0, 1).var(0, correction=0).mean() for m, t in zip(wanted, targets)]
    assert metrics["layer_loss"].shape == (2,)  # one term per decoder layer
    torch.testing.assert_close(metrics["layer_loss"], torch.stack(wanted))
    torch.testing.assert_close(loss, metrics["layer_loss"].mean())
    fields = stage.progress_fields({"layer_loss": [0.5, 2.0, 0.25]})
    assert fields == {"first": "0.5", "last": "0.25", "max": "2@L1"}


def test_next_token_labels():
    assert next_token_labels(torch.tensor([[5, 6, 7]])).tolist() == [[6, 7, IGNORE]]


def test_isolated_documents_give_each_documents_own_loss():
    """A document-packed row with isolated documents (restarting positions: FA block-diagonal mask, GDN
    cu_seqlens, no target across an EOS) has, per document, the loss of that document run alone."""
    import hydrahead
    from hydrahead import HeadPlan, HybridOptions
    from hydrahead.distill.recipe import DistillStageConfig
    from hydrahead.distill.stages import DistillStage
    from tests.conftest import make_teacher

    torch.manual_seed(0)
    teacher = make_teacher("qwen3")
    student = hydrahead.convert(teacher, HeadPlan(((0,), (1, 3)), 4, 2), HybridOptions.preset("paper", train_length=8))
    with torch.no_grad():  # a student that differs from its teacher, so KL is not 0
        for p in hydrahead.hybrid_parameters(student):
            p.add_(0.05 * torch.randn_like(p))
    eos, pad = 1, 0
    docs = [torch.cat([torch.randint(2, 90, (n,)), torch.tensor([eos])]) for n in (9, 4, 13)]
    row = torch.cat([*docs, torch.full((6,), pad)])[None]  # (1, 35): three documents and padding
    stage = DistillStage(DistillStageConfig(tokens=64, seq_len=35, batch_size=1, lr=1e-3, loss_chunk=8), 1, pad)
    stage.eos_id = eos

    def sums(ids, isolated):
        """(CE summed over targets, KL summed over non-pad positions, number of targets)."""
        stage.eos_id = eos if isolated else None
        _, metrics = stage.loss(student, ids, stage.teacher_targets(teacher, ids))
        targets, positions = int((stage.labels(ids) != -100).sum()), int((ids != pad).sum())
        return metrics["ce"] * targets, metrics["kl"] * positions, targets

    with torch.no_grad():
        ce, kl, n = sums(row, isolated=True)
        alone = [sums(d[None], isolated=False) for d in docs]
        leaky_ce, _, _ = sums(row, isolated=False)
    assert n == sum(a[2] for a in alone) == sum(len(d) - 1 for d in docs)  # no target after an EOS
    torch.testing.assert_close(ce, sum(a[0] for a in alone), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kl, sum(a[1] for a in alone), rtol=1e-4, atol=1e-7)  # KL: a small difference of logs
    assert kl > 1e-3  # the student differs from its teacher: a real KL was compared
    assert abs(float(leaky_ce) / (n + 2) - float(ce) / n) > 1e-3  # without isolation the documents see each other


def test_document_positions_restart_after_eos():
    from hydrahead.distill.losses import document_positions

    ids = torch.tensor([[5, 6, 1, 7, 1, 8, 9, 0]])
    assert document_positions(ids, eos_id=1).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
