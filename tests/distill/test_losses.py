import warnings

import pytest
import torch
from torch import nn

from hydrahead import HydraHeadWarning
from hydrahead.distill.data import Batch
from hydrahead.distill.losses import (
    IGNORE,
    StepCounts,
    chunked_kd_loss,
    hidden_state_loss,
    kd_loss_reference,
    next_token_labels,
    step_counts,
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
@pytest.mark.parametrize("temperature,kl_weight,ce_weight",
                         [(1.0, 1.0, 1.0), (2.0, 1.0, 0.3), (0.7, 0.0, 1.0), (1.0, 0.0, 0.5)],
                         ids=["T1", "T2-ce0.3", "ce-only", "ce-only-0.5"])
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


@pytest.mark.parametrize("chunk", [1, 8, 1000], ids=lambda c: f"chunk{c}")
def test_chunked_kd_with_padding_and_step_counts_equals_the_reference(chunk):
    """KL over the real positions only, and both terms divided by given (step) counts, as the reference does."""
    hidden, teacher_hidden, head, teacher_head, labels = _setup()
    lengths = torch.tensor([37, 20])
    positions = torch.arange(37) < lengths[:, None]
    labels = labels.masked_fill(~(torch.arange(37) < lengths[:, None] - 1), IGNORE)
    for counts in (None, StepCounts(5.0, 123.0, 97.0)):
        ref = kd_loss_reference(head(hidden), teacher_head(teacher_hidden), labels, 2.0, 1.0, 0.5, positions, counts)
        out = chunked_kd_loss(hidden, head, labels, teacher_hidden, teacher_head, 2.0, 1.0, 0.5, chunk,
                              kl_positions=positions, counts=counts)
        torch.testing.assert_close(out.loss, ref.loss, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out.kl, ref.kl.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(torch.autograd.grad(out.loss, hidden)[0], torch.autograd.grad(ref.loss, hidden)[0],
                                   rtol=1e-10, atol=1e-12)
    # by hand: the KL mean over positions skips the padded tail of row 1
    p_t, p_s = teacher_head(teacher_hidden).softmax(-1), head(hidden).softmax(-1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(-1)  # (B, T)
    out = chunked_kd_loss(hidden, head, labels, teacher_hidden, teacher_head, ce_weight=0.0, kl_positions=positions)
    torch.testing.assert_close(out.kl, (kl[0].sum() + kl[1, :20].sum()) / 57)


def test_loss_split_over_micro_batches_sums_to_the_one_batch_loss():
    """With the step's counts, the shares of two micro-batches (or two processes) add up to the loss and the
    gradient of the whole batch, however unevenly padded (the review's r4: 2.6084 vs 2.5437 before)."""
    torch.manual_seed(0)
    V, d, pad = 11, 8, 0
    head = nn.Linear(d, V, bias=False)
    ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10], [3, 4, pad, pad, pad, pad, pad, pad]])
    batch = Batch(ids, torch.tensor([8, 2]))
    hidden = torch.randn(2, 8, d, requires_grad=True)
    teacher_hidden, teacher_head = torch.randn(2, 8, d), nn.Linear(d, V, bias=False)
    labels = next_token_labels(ids, lengths=batch.lengths)

    def loss(rows, counts):
        return chunked_kd_loss(hidden[rows], head, labels[rows], teacher_hidden[rows], teacher_head, ce_weight=0.5,
                               kl_positions=batch.real()[rows], counts=counts).loss

    one = loss(slice(0, 2), None)  # the plain mean over the whole batch
    total = step_counts(labels, batch.real())
    assert [float(c) for c in total] == [2.0, 10.0, 8.0]
    split = loss(slice(0, 1), total) + loss(slice(1, 2), total)
    torch.testing.assert_close(split, one)
    torch.testing.assert_close(torch.autograd.grad(split, hidden)[0], torch.autograd.grad(one, hidden)[0])
    # two processes: each divides by the step's counts over 2, DDP averages the two gradients
    halves = StepCounts(*(torch.stack(list(total)) / 2))
    ddp = (loss(slice(0, 1), halves) + loss(slice(1, 2), halves)) / 2
    torch.testing.assert_close(ddp, one)


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
        targets = stage.teacher_targets(teacher, Batch.full(ids))
        loss, metrics = stage.loss(student, Batch.full(ids), targets)
        hidden = student.model(input_ids=ids, use_cache=False, output_hidden_states=True).hidden_states[1:]
        wanted = [torch.nn.functional.mse_loss(s, t) for s, t in zip(hidden, targets)]  # Eq. 15's terms
        if kind == "nmse":  # one sequence: its variance is the batch's
            wanted = [m / t.flatten(0, 1).var(0, correction=0).mean() for m, t in zip(wanted, targets)]
    assert metrics["layer_loss"].shape == (2,)  # one term per decoder layer
    torch.testing.assert_close(metrics["layer_loss"], torch.stack(wanted))
    torch.testing.assert_close(loss, metrics["layer_loss"].mean())
    fields = stage.progress_fields({"layer_loss": [0.5, 2.0, 0.25]})
    assert fields == {"first": "0.5", "last": "0.25", "max": "2@L1"}


@pytest.mark.filterwarnings("ignore:stages.align")  # the sink warning, checked at the end
@pytest.mark.parametrize("isolate", [False, True], ids=["one-sequence", "isolated"])
def test_align_sink_tokens_leave_each_documents_first_positions_out(isolate):
    """stages.align.sink_tokens: a massive teacher activation at a document's first token (an attention
    sink) moves neither the loss nor its variance; at any other position it does. Not isolated, only the
    row's first token is a document start."""
    from hydrahead import RecipeError
    from hydrahead.distill.recipe import AlignStageConfig
    from hydrahead.distill.stages import AlignStage

    teacher, student = _teacher_and_student()
    eos = 1
    docs = [torch.cat([torch.randint(2, 90, (n,)), torch.tensor([eos])]) for n in (9, 4, 13)]
    row = torch.cat(docs)[None]  # (1, 29): documents start at 0, 10 and 15
    batch = Batch.full(row)
    starts = [0, 10, 15] if isolate else [0]

    def loss(sink_tokens, boost=()):
        stage = AlignStage(AlignStageConfig(tokens=64, seq_len=29, batch_size=1, lr=1e-3, sink_tokens=sink_tokens), 0)
        stage.eos_id = eos if isolate else None
        with torch.no_grad():
            targets = stage.teacher_targets(teacher, batch)
            for t in targets:
                t[0, list(boost), 0] += 1e4  # one massive feature at these positions
            return stage.loss(student, batch, targets)[1]["layer_loss"]

    clean = loss(1)
    torch.testing.assert_close(loss(1, starts), clean)  # the sinks count nowhere
    assert not torch.allclose(loss(1, [12]), clean)  # a position inside a document counts
    assert not torch.allclose(loss(0, starts), loss(0))  # sink_tokens: 0 counts every position
    if not isolate:
        assert not torch.allclose(loss(1, [10]), clean)  # one sequence: 10 is no document start
    with pytest.raises(RecipeError, match="sink_tokens"):
        AlignStageConfig(tokens=64, seq_len=8, batch_size=1, lr=1e-3, sink_tokens=-1)

    # the stage's first loss warns of such a sink while it still counts (either loss kind), naming the setting
    # and the layers, once per stage, and only then
    def warnings_of(sink_tokens, boost, kind="nmse", calls=1):
        stage = AlignStage(AlignStageConfig(tokens=64, seq_len=29, batch_size=1, lr=1e-3, sink_tokens=sink_tokens,
                                            loss=kind), 0)
        stage.eos_id = eos if isolate else None
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            targets = stage.teacher_targets(teacher, batch)
            for t in targets:
                t[0, list(boost), 0] += 1e4
            for _ in range(calls):
                stage.loss(student, batch, targets)
        sinks = [w for w in caught if "sink_tokens: 1" in str(w.message)]
        assert all(w.category is HydraHeadWarning for w in sinks)
        return [str(w.message) for w in sinks]

    once = warnings_of(0, starts, calls=2)
    assert len(once) == 1 and "in 2 of the teacher's 2 layers (0-1)" in once[0]
    assert len(warnings_of(0, starts, kind="mse")) == 1
    for sink_tokens, boost in ((1, starts), (0, ()), (0, [12])):
        assert warnings_of(sink_tokens, boost) == [], (sink_tokens, boost)


def test_layer_ranges_and_position_share_per_row():
    from hydrahead.distill.losses import position_share
    from hydrahead.distill.stages import layer_ranges

    assert layer_ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10" and layer_ranges([4]) == "4"
    teacher = torch.zeros(2, 4, 1)
    teacher[0, :, 0] = torch.tensor([3.0, -1.0, -1.0, -1.0])  # row 0: position 0 holds 9 of 12 -> 0.75
    teacher[1, :, 0] = torch.tensor([1.0, -1.0, 1.0, -1.0])  # row 1: each position 1/4
    real = torch.ones(2, 4, dtype=torch.bool)
    first = torch.zeros_like(real)
    first[:, 0] = True
    assert position_share(teacher, real, first) == pytest.approx((0.75 + 0.25) / 2)  # per row, then the mean
    real[1] = False  # a row of padding counts for nothing
    assert position_share(teacher, real, first) == pytest.approx(0.75)


def test_next_token_labels():
    assert next_token_labels(torch.tensor([[5, 6, 7]])).tolist() == [[6, 7, IGNORE]]


def test_padding_is_found_by_position_so_a_pad_equal_to_eos_keeps_eos_a_target():
    """SmolLM2 and Qwen3-Base pad with their EOS: every EOS of a row is still a target, the padding none
    (the review's r2: EOS targets were dropped)."""
    eos = pad = 2
    ids = torch.tensor([[5, 6, 7, eos, 8, 9, eos, pad], [10, 11, 12, 13, eos, pad, pad, pad]])
    lengths = torch.tensor([7, 5])
    assert next_token_labels(ids, lengths=lengths).tolist() == [
        [6, 7, eos, 8, 9, eos, IGNORE, IGNORE], [11, 12, 13, eos, IGNORE, IGNORE, IGNORE, IGNORE]]
    assert next_token_labels(ids, lengths=lengths, eos_id=eos).tolist() == [  # isolated: none after an EOS
        [6, 7, eos, IGNORE, 9, eos, IGNORE, IGNORE], [11, 12, 13, eos, IGNORE, IGNORE, IGNORE, IGNORE]]
    assert Batch(ids, lengths).real().int().tolist() == [[1] * 7 + [0], [1] * 5 + [0] * 3]


def _teacher_and_student():
    """A tiny teacher and a hybrid of it that differs from it (so KL is not 0)."""
    import hydrahead
    from hydrahead import HeadPlan, HybridOptions
    from tests.conftest import make_teacher

    torch.manual_seed(0)
    teacher = make_teacher("qwen3")
    student = hydrahead.convert(teacher, HeadPlan(((0,), (1, 3)), 4, 2), HybridOptions.preset("paper", train_length=8))
    with torch.no_grad():
        for p in hydrahead.hybrid_parameters(student):
            p.add_(0.05 * torch.randn_like(p))
    return teacher, student


def _stages_and_models():
    from hydrahead.distill.recipe import AlignStageConfig, DistillStageConfig, LongContextStageConfig
    from hydrahead.distill.stages import AlignStage, DistillStage, LongContextStage

    teacher, student = _teacher_and_student()
    config = dict(tokens=64, seq_len=16, batch_size=1, lr=1e-3)
    stages = {"align": AlignStage(AlignStageConfig(**config), 0),
              "distill": DistillStage(DistillStageConfig(**config, loss_chunk=4), 1),
              "long_context": LongContextStage(LongContextStageConfig(**config), 2)}
    return teacher, student, stages


@pytest.mark.parametrize("pad_is_eos", [True, False], ids=["pad=eos", "pad!=eos"])
@pytest.mark.parametrize("isolate", [False, True], ids=["one-sequence", "isolated"])
def test_a_padded_row_scores_what_it_scores_alone_in_every_stage(pad_is_eos, isolate):
    """Every loss term (align's per-layer MSE, KL, CE, held-out CE) of a document-packed row padded to the
    stage length equals that of the row without its padding, whatever the padding holds, with documents
    isolated or not (KL counted the padding unless they were isolated; EOS counted as padding when pad
    == EOS)."""
    teacher, student, stages = _stages_and_models()
    eos = 1
    pad = eos if pad_is_eos else 0
    row = torch.tensor([5, 6, 7, 8, eos, 9, 10, eos, 11, 12])  # two documents, then a third's start
    padded = Batch(torch.cat([row, torch.full((6,), pad)])[None], torch.tensor([10]))
    alone = Batch.full(row[None])
    with torch.no_grad():
        for name, stage in stages.items():
            stage.eos_id = eos if isolate else None
            got, want = [stage.loss(student, b, stage.teacher_targets(teacher, b) if stage.needs_teacher else None)
                         for b in (padded, alone)]
            for key in want[1]:
                torch.testing.assert_close(got[1][key], want[1][key], rtol=1e-5, atol=1e-6, msg=f"{name} {key}")
            torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6, msg=name)
            torch.testing.assert_close(stage.heldout_loss(student, padded)[0], stage.heldout_loss(student, alone)[0])
            counts = stage.counts(padded)
            assert (float(counts.positions), float(counts.targets)) == (10, 9 - (2 if isolate else 0))


def test_isolated_documents_give_each_documents_own_loss():
    """A document-packed row with isolated documents (restarting positions: FA block-diagonal mask, GDN
    cu_seqlens, no target across an EOS) has, per document, the loss of that document run alone."""
    from hydrahead.distill.recipe import DistillStageConfig
    from hydrahead.distill.stages import DistillStage

    teacher, student = _teacher_and_student()
    eos, pad = 1, 0
    docs = [torch.cat([torch.randint(2, 90, (n,)), torch.tensor([eos])]) for n in (9, 4, 13)]
    row = torch.cat([*docs, torch.full((6,), pad)])[None]  # (1, 35): three documents and padding
    stage = DistillStage(DistillStageConfig(tokens=64, seq_len=35, batch_size=1, lr=1e-3, loss_chunk=8), 1)
    stage.eos_id = eos

    def sums(batch, isolated):
        """(CE summed over targets, KL summed over non-pad positions, number of targets)."""
        stage.eos_id = eos if isolated else None
        _, metrics = stage.loss(student, batch, stage.teacher_targets(teacher, batch))
        targets, positions = int((stage.labels(batch) != -100).sum()), int(batch.lengths.sum())
        return metrics["ce"] * targets, metrics["kl"] * positions, targets

    with torch.no_grad():
        padded = Batch(row, torch.tensor([35 - 6]))
        ce, kl, n = sums(padded, isolated=True)
        alone = [sums(Batch.full(d[None]), isolated=False) for d in docs]
        leaky_ce, _, _ = sums(padded, isolated=False)
    assert n == sum(a[2] for a in alone) == sum(len(d) - 1 for d in docs)  # no target after an EOS
    torch.testing.assert_close(ce, sum(a[0] for a in alone), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kl, sum(a[1] for a in alone), rtol=1e-4, atol=1e-7)  # KL: a small difference of logs
    assert kl > 1e-3  # the student differs from its teacher: a real KL was compared
    assert abs(float(leaky_ce) / (n + 2) - float(ce) / n) > 1e-3  # without isolation the documents see each other


def test_distill_without_kl_runs_no_teacher_and_weighs_its_ce():
    """kl_weight 0: the stage is next-token CE times ce_weight (it was CE at weight 1), the teacher is not run, and
    the metrics name only the term computed."""
    from hydrahead.distill.recipe import DistillStageConfig
    from hydrahead.distill.stages import DistillStage

    teacher, student = _teacher_and_student()
    batch = Batch.full(torch.randint(2, 90, (2, 12)))
    config = dict(tokens=64, seq_len=12, batch_size=2, lr=1e-3, loss_chunk=8)
    both = DistillStage(DistillStageConfig(**config, kl_weight=1.0, ce_weight=1.0), 1)
    ce_only = DistillStage(DistillStageConfig(**config, kl_weight=0.0, ce_weight=0.25), 1)
    assert both.needs_teacher and not ce_only.needs_teacher
    with torch.no_grad():
        _, full = both.loss(student, batch, both.teacher_targets(teacher, batch))
        loss, metrics = ce_only.loss(student, batch, None)
    assert set(full) == {"kl", "ce"} and set(metrics) == {"ce"}
    torch.testing.assert_close(metrics["ce"], full["ce"])
    torch.testing.assert_close(loss, 0.25 * full["ce"])


def test_document_positions_restart_after_eos():
    from hydrahead.distill.losses import document_positions

    ids = torch.tensor([[5, 6, 1, 7, 1, 8, 9, 0]])
    assert document_positions(ids, eos_id=1).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]


def test_heldout_loss_is_the_mean_over_every_target():
    """Held-out batches weigh by their real target count, not B * (T - 1): with isolated documents a row
    with EOS has fewer targets, and the result is the one mean over every target of every row."""
    import contextlib

    from hydrahead.distill.distributed import DistEnv
    from hydrahead.distill.evaluate import EvalContext, HeldoutPerplexity
    from hydrahead.distill.stages import TrainModule

    teacher, student, stages = _stages_and_models()
    stage, eos = stages["long_context"], 1
    stage.eos_id = eos
    g = torch.Generator().manual_seed(1)
    sequences = torch.randint(2, 90, (3, 16), generator=g)
    sequences[0, [3, 7, 11]] = eos  # row 0: 12 targets, rows 1 and 2: 15
    ctx = EvalContext(student, TrainModule(student), stage, 0, None, DistEnv(0, 1, 0, torch.device("cpu"), False),
                      contextlib.nullcontext)
    with torch.no_grad():
        want = stage.heldout_loss(student, Batch.full(sequences))[0]  # one mean over all 42 targets
        got = HeldoutPerplexity(sequences, batch_size=1)(ctx)["eval_loss"]
    assert got == pytest.approx(float(want), rel=1e-5)
