"""Stage losses: normalised hidden-state MSE (stage 1), KL + CE on logits (stage 2), next-token CE (stage 3).

The logit losses take final (post-norm) hidden states and the LM heads instead of logits, and work over
the sequence in chunks: each chunk's student and teacher logits are computed, reduced to three sums and
dropped, under activation checkpointing, so backward recomputes them chunk by chunk too. Peak memory is
O(B * chunk * vocab) instead of O(B * T * vocab) twice (a 150K vocabulary at 16K tokens is 9.8 GB per
fp32 logits tensor). `kd_loss_reference` is the unchunked spec the chunked version is tested against.

Shapes:
    student[l], teacher[l]   (B, T, d)        layer l's output (stage 1); the loss is a mean over layers
    hidden, teacher_hidden   (B, T, d)        final hidden states (after the model's last norm)
    labels                   (B, T)           next-token targets, IGNORE where there is none
    positions                (B, T) bool      the positions that count: a row's real tokens, not its padding
    KL term                  mean over `positions` of  tau^2 * KL(softmax(z_t/tau) || softmax(z_s/tau))
    CE term                  mean over positions whose label is not IGNORE

Padding is found by position (a row's real tokens come first; `lengths` (B,) counts them), never by token
value: a tokenizer whose pad token is its EOS (SmolLM2, Qwen3-Base) would otherwise lose every EOS.

Normalisation. Every loss is a sum over what counts (targets, positions, or sequences for the per-sequence
align terms) divided by a count. By default the count is the batch's own (a plain mean). In training the
trainer passes `StepCounts`: the counts of the whole optimiser step (every micro-step, every process) over
the number of processes, which DDP and FSDP average gradients over. Each micro-batch's loss is then its
share of the step's mean, and the step's gradient is that of one mean over all its targets, however the
global batch is split over micro-steps and processes (HF Trainer's `num_items_in_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hydrahead.layers.context import document_offsets

IGNORE = -100


class StepCounts(NamedTuple):
    """What summed loss terms are divided by: sequences (the align loss, a mean of per-sequence terms),
    real (non-padding) positions (KL) and next-token targets (CE). Scalars: numbers or 0-d tensors."""

    rows: torch.Tensor | float
    positions: torch.Tensor | float
    targets: torch.Tensor | float


def step_counts(labels: torch.Tensor, positions: torch.Tensor) -> StepCounts:
    """The counts of one batch: (B, T) labels and (B, T) bool positions -> float 0-d tensors."""
    return StepCounts(torch.tensor(float(labels.shape[0]), device=labels.device), positions.sum().float(),
                      (labels != IGNORE).sum().float())


class KDLoss(NamedTuple):
    loss: torch.Tensor  # kl_weight * kl + ce_weight * ce, the value to minimise
    kl: torch.Tensor
    ce: torch.Tensor


def real_positions(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(B,) real-token counts -> (B, seq_len) bool: True at each row's first lengths[b] positions."""
    return torch.arange(seq_len, device=lengths.device) < lengths[:, None]


def next_token_labels(input_ids: torch.Tensor, *, lengths: torch.Tensor | None = None,
                      eos_id: int | None = None) -> torch.Tensor:
    """(B, T) -> (B, T): labels[:, t] = input_ids[:, t + 1]; the last position has no target, nor has a
    position whose next position is padding (t + 1 >= lengths[b], `lengths` (B,): document-packed rows),
    nor (`eos_id`, isolated documents) an EOS, whose next token starts another document. Padding is known
    by position only, so a pad token equal to EOS leaves every EOS a target."""
    labels = torch.full_like(input_ids, IGNORE)
    labels[:, :-1] = input_ids[:, 1:]
    if lengths is not None:
        labels = labels.masked_fill(~real_positions(lengths - 1, input_ids.shape[1]), IGNORE)
    if eos_id is not None:
        labels = labels.masked_fill(input_ids == eos_id, IGNORE)
    return labels


def document_positions(input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, T) position ids that restart after every EOS: each document of a packed row counts from 0."""
    starts = torch.ones_like(input_ids, dtype=torch.bool)
    starts[:, 1:] = input_ids[:, :-1] == eos_id
    return document_offsets(starts)


AlignLoss = Literal["nmse", "mse"]


def _position_mean(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, T, d), (B, T, 1) -> (B, d): the mean over the positions that count."""
    return (x * weight).sum(1) / weight.sum(1).clamp(min=1)


def sequence_variance(teacher: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, T, d), (B, T, 1) -> (B,): each sequence's variance over the positions that count, per feature,
    averaged over features."""
    t = teacher.float()
    centred = t - _position_mean(t, weight)[:, None]
    return _position_mean(centred.pow(2), weight).mean(-1)


def position_share(teacher: torch.Tensor, real: torch.Tensor, some: torch.Tensor) -> float:
    """(B, T, d), (B, T) bool, (B, T) bool -> the share of each row's per-feature-centred teacher sum of squares
    (what nmse's per-sequence variance is made of, over the real positions) that `some` of its positions hold,
    averaged over the rows with real positions: about their fraction of the positions where nothing stands out,
    near 1 where an attention sink's massive activation lies in them."""
    weight = real[..., None].float()
    t = teacher.float()
    squares = (t - _position_mean(t, weight)[:, None]).pow(2).sum(-1) * real  # (B, T)
    rows = real.any(1)
    share = (squares * some).sum(1) / squares.sum(1).clamp(min=torch.finfo(torch.float32).tiny)
    return float(share[rows].mean()) if rows.any() else 0.0


def hidden_state_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], kind: AlignLoss = "nmse",
                      eps: float = 1e-8, positions: torch.Tensor | None = None,
                      rows: torch.Tensor | float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper Eq. 15, per layer, averaged over layers (the paper sums; the mean only rescales). Returns
    (loss, per-layer terms detached, (L,)).

        mse:   term_l = sum_b  mean_{t,k} (s - t)^2                        / rows
        nmse:  term_l = sum_b [mean_{t,k} (s - t)^2 / max(var_b(t), eps)] / rows,
               var_b(t) = mean_k mean_t (t - mean_t t)^2   (sequence b's teacher variance; detached)

    Why nmse: hidden-state norms grow by orders of magnitude with depth and a few residual features carry
    massive activations, so plain MSE is a sum of terms on unrelated scales: on SmolLM2-135M it read ~2e5
    while its first and last layers read 4-5: a few layers' gradients set the step alone. Dividing
    by the teacher's variance makes each term scale- (and shift-) free: 1 is what a student scores that
    outputs the teacher's per-feature mean, 0 a perfect match (1 - R^2), and every layer weighs the same.
    Centred variance rather than mean(t^2): a large constant offset of the residual stream would
    otherwise inflate the denominator and hide errors in what varies. Per sequence rather than per batch:
    the loss is then a mean over sequences, the same however the global batch is split over processes
    and micro-steps (a recipe trains the same on 1 or N processes). `positions` (B, T) bool: the positions
    that count, in both terms (the padding of document-packed rows does not); default all. `rows`: what the
    per-sequence terms' sum is divided by, default B (the mean over sequences; training passes the step's
    sequence count, `StepCounts.rows`).
    """
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student hidden states vs {len(teacher)} teacher hidden states")
    if kind not in ("nmse", "mse"):
        raise ValueError(f"hidden_state_loss: kind must be nmse or mse, got {kind!r}")
    terms = []
    first = teacher[0]
    weight = (torch.ones(first.shape[:2], device=first.device) if positions is None else positions.float())[..., None]
    for s, t in zip(student, teacher):
        per_sequence = _position_mean((s.float() - t.float()).pow(2), weight).mean(-1)  # (B,)
        if kind == "nmse":
            per_sequence = per_sequence / sequence_variance(t, weight).detach().clamp(min=eps)
        terms.append(per_sequence.sum() / (per_sequence.shape[0] if rows is None else rows))
    per_layer = torch.stack(terms)  # (L,)
    return per_layer.mean(), per_layer.detach()


def _up(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 (bf16 / fp16 logits are upcast; fp64 stays fp64 for the reference tests)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _kl_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over positions (weighted by `weight` (...,) when given) of tau^2 * KL(p_teacher || p_student)
    at temperature tau; logits (..., V)."""
    log_p_s = F.log_softmax(_up(student_logits) / temperature, dim=-1)
    log_p_t = F.log_softmax(_up(teacher_logits) / temperature, dim=-1)
    if weight is None:
        return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="sum") * temperature**2
    per_position = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="none").sum(-1)
    return (per_position * weight).sum() * temperature**2


def _ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(_up(logits).flatten(0, -2), labels.flatten(), ignore_index=IGNORE, reduction="sum")


def kd_loss_reference(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float = 1.0,
    kl_weight: float = 1.0,
    ce_weight: float = 1.0,
    positions: torch.Tensor | None = None,
    counts: StepCounts | None = None,
) -> KDLoss:
    """Unchunked KL + CE on full (B, T, V) logits: the spec of `chunked_kd_loss`."""
    weight = None if positions is None else positions.to(_up(student_logits).dtype)
    kl_count = (labels.numel() if positions is None else positions.sum().clamp(min=1)) if counts is None else counts.positions
    ce_count = (labels != IGNORE).sum().clamp(min=1) if counts is None else counts.targets
    zero = _up(student_logits).new_zeros(())
    kl = _kl_sum(student_logits, teacher_logits, temperature, weight) / kl_count if teacher_logits is not None else zero
    ce = _ce_sum(student_logits, labels) / ce_count
    return KDLoss(kl_weight * kl + ce_weight * ce, kl, ce)


def _chunk_sums(hidden, teacher_hidden, labels, head, teacher_head, temperature, with_kl, with_ce, kl_positions=None):
    """KL and CE sums of one sequence chunk (the KL over `kl_positions`, a 0/1 weight per position, when given);
    logits live only inside this function."""
    logits = head(hidden)  # (B, c, V)
    kl = ce = _up(logits).new_zeros(())
    if with_kl:
        with torch.no_grad():
            teacher_logits = teacher_head(teacher_hidden)
        kl = _kl_sum(logits, teacher_logits, temperature, kl_positions)
    if with_ce:
        ce = _ce_sum(logits, labels)
    return kl, ce


def chunked_kd_loss(
    hidden: torch.Tensor,
    head: nn.Module,
    labels: torch.Tensor,
    teacher_hidden: torch.Tensor | None = None,
    teacher_head: nn.Module | None = None,
    temperature: float = 1.0,
    kl_weight: float = 1.0,
    ce_weight: float = 1.0,
    chunk: int = 1024,
    kl_positions: torch.Tensor | None = None,
    counts: StepCounts | None = None,
) -> KDLoss:
    """KL(teacher || student) + CE from final hidden states, `chunk` sequence positions at a time.
    KL is the mean over every position, or over `kl_positions` ((B, T) bool: a row's real tokens, not its
    padding) when given; CE the mean over targets. With `counts`, the sums are divided by
    `counts.positions` and `counts.targets` instead (the optimiser step's counts: module docstring).

    Equal to `kd_loss_reference(head(hidden), teacher_head(teacher_hidden), labels, ..., kl_positions,
    counts)` in value and gradient. Without a teacher (teacher_hidden None, or kl_weight 0) it is ce_weight times
    the chunked next-token CE. A term whose weight is 0 is not computed (its KDLoss field is 0).
    """
    with_kl = teacher_hidden is not None and kl_weight > 0
    if with_kl and teacher_head is None:
        raise ValueError("chunked_kd_loss: teacher_hidden given without teacher_head")
    with_ce = ce_weight > 0
    if not (with_kl or with_ce):
        raise ValueError("chunked_kd_loss: nothing to minimise (no KL term and ce_weight 0)")
    B, T, _ = hidden.shape
    kl_total = ce_total = _up(hidden).new_zeros(())
    for start in range(0, T, chunk):
        piece = slice(start, min(start + chunk, T))
        teacher_piece = teacher_hidden[:, piece] if with_kl else None
        weight = kl_positions[:, piece].to(hidden.dtype) if kl_positions is not None else None
        args = (hidden[:, piece], teacher_piece, labels[:, piece], head, teacher_head, temperature, with_kl, with_ce,
                weight)
        if torch.is_grad_enabled():
            kl, ce = checkpoint(_chunk_sums, *args, use_reentrant=False)
        else:
            kl, ce = _chunk_sums(*args)
        kl_total, ce_total = kl_total + kl, ce_total + ce
    if counts is None:
        kl = kl_total / (B * T if kl_positions is None else kl_positions.sum().clamp(min=1))
        ce = ce_total / (labels != IGNORE).sum().clamp(min=1)
    else:
        kl, ce = kl_total / counts.positions, ce_total / counts.targets
    loss = (kl_weight * kl if with_kl else 0.0) + (ce_weight * ce if with_ce else 0.0)
    return KDLoss(loss, kl.detach(), ce.detach())
