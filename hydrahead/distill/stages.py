"""The three stages of docs/method.md section 4: which parameters train, what the teacher provides, the loss.

    align         only `hybrid_parameters` train (backbone frozen); per-layer hidden-state MSE (Eq. 15), each
                  layer's divided by the teacher's variance there (`stages.align.loss: nmse`, the default);
                  `stages.align.sink_tokens` leaves each document's first positions out of it
    distill       every parameter trains, or hybrid parameters + LoRA on the backbone (peft, merged at
                  the end of the stage); tau^2 KL(teacher || student) + CE on chunked logits (Eq. 16)
    long_context  every parameter trains; next-token CE at the stage's (long) length; no teacher
    pretrain      (`distill.pretrain`, not a distillation stage) a model from scratch, next-token CE

`TrainModule` wraps the student so that a whole training forward, loss included, is one module call:
that is what DDP and FSDP hook into, and it lets the chunked loss use the student's lm_head inside it.

A stage sees a `Batch` (token ids and each row's real length): padding carries no loss in any stage, found
by position. In training, `loss` gets the optimiser step's `StepCounts` (losses.py): each micro-batch's loss
is its share of the step's mean (KL over real positions, CE over targets, align over sequences), so the
step's gradient does not depend on how the global batch is split over micro-steps and processes.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from hydrahead.errors import HydraHeadWarning, RecipeError
from hydrahead.distill.data import Batch
from hydrahead.distill.losses import (
    StepCounts,
    chunked_kd_loss,
    document_positions,
    hidden_state_loss,
    next_token_labels,
    position_share,
    step_counts,
)
from hydrahead.distill.recipe import AlignStageConfig, DistillStageConfig, StageConfig
from hydrahead.models.convert import hybrid_parameters

# Per micro-step: a scalar, or a vector (e.g. one value per layer), normalised like the loss (by the step's
# counts), so summed over micro-steps and averaged over processes; metrics.jsonl holds a vector as a list.
Metrics = dict[str, torch.Tensor]


class Stage:
    """Base: every parameter trains, no teacher; subclasses override what differs."""

    name = "stage"
    needs_teacher = False
    extendable = False  # a finished run may go on with a larger token budget: its last checkpoint keeps the optimiser

    def __init__(self, config: StageConfig, index: int) -> None:
        self.config, self.index = config, index
        self.eos_id: int | None = None  # set: documents of a row are isolated (data.isolate_documents)

    def labels(self, batch: Batch) -> torch.Tensor:
        """(B, T) next-token targets: none into padding, none across an EOS of isolated documents."""
        return next_token_labels(batch.input_ids, lengths=batch.lengths, eos_id=self.eos_id)

    def counts(self, batch: Batch) -> StepCounts:
        """This batch's sequences, real positions and targets (the trainer sums them over the step)."""
        return step_counts(self.labels(batch), batch.real())

    def inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """What a teacher or student forward gets besides the ids: restarting position ids when documents
        are isolated (transformers masks FA across them, hydrahead's GDN heads restart at them). Padding
        needs no mask: it follows a row's real tokens, which causal attention keeps from seeing it."""
        input_ids = batch.input_ids
        if self.eos_id is None:
            return {"input_ids": input_ids}
        return {"input_ids": input_ids, "position_ids": document_positions(input_ids, self.eos_id)}

    def prepare(self, student: nn.Module) -> None:
        """Set which parameters train (requires_grad); may restructure the student (LoRA)."""
        student.requires_grad_(True)

    def finish(self, student: nn.Module) -> None:
        """Undo stage-only structure at the end of the stage (merge LoRA)."""

    def teacher_targets(self, teacher: nn.Module, batch: Batch) -> Any:
        """What the loss needs from the teacher for this batch (computed without gradients)."""
        return None

    def loss(self, student: nn.Module, batch: Batch, targets: Any,
             counts: StepCounts | None = None) -> tuple[torch.Tensor, Metrics]:
        """The training loss, divided by `counts` (the step's) or by this batch's own counts; the base
        stage's (and stage 3's) is next-token cross-entropy."""
        return self.heldout_loss(student, batch, counts)

    def progress_fields(self, metrics: dict[str, Any]) -> dict[str, str]:
        """A few of the step's (reduced) metrics for the progress line, formatted; loss and lr are always there."""
        return {}

    def heldout_loss(self, student: nn.Module, batch: Batch,
                     counts: StepCounts | None = None) -> tuple[torch.Tensor, Metrics]:
        """Next-token cross-entropy (the mean over this batch's targets unless `counts`), what held-out
        evaluation reports whatever the stage trains on."""
        hidden = student.model(**self.inputs(batch), use_cache=False).last_hidden_state
        out = chunked_kd_loss(hidden, student.lm_head, self.labels(batch),
                              chunk=getattr(self.config, "loss_chunk", 1024), counts=counts)
        return out.loss, {"ce": out.ce}


# warn_of_sink: the share of a layer's teacher variance at documents' first positions that reads as a sink (a
# row of 512 tokens without one gives about 1/512; SmolLM2-135M's layers 11-27 give 0.88-0.98)
SINK_SHARE = 0.5


def layer_ranges(layers: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    runs: list[list[int]] = []
    for i in layers:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


class AlignStage(Stage):
    """Metrics: `layer_loss`, every layer's term of the loss (loss = its mean); the progress line shows
    the first, the last and the largest (with its layer index)."""

    name = "align"
    needs_teacher = True
    config: AlignStageConfig

    def __init__(self, config: AlignStageConfig, index: int) -> None:
        super().__init__(config, index)
        self._sink_checked = False

    def prepare(self, student: nn.Module) -> None:
        added = hybrid_parameters(student)
        if not added:  # an all-FA plan whose options add nothing (the exact preset): AdamW would get no parameter
            raise RecipeError("stages.align has nothing to train: conversion added no parameters (every head keeps "
                              "full attention, and the options add no gate or fusion norm); drop the align stage")
        student.requires_grad_(False)
        for p in added:
            p.requires_grad_(True)

    @torch.no_grad()
    def teacher_targets(self, teacher: nn.Module, batch: Batch) -> tuple[torch.Tensor, ...]:
        out = teacher.model(**self.inputs(batch), use_cache=False, output_hidden_states=True)
        return tuple(h.detach() for h in out.hidden_states[1:])  # each decoder layer's output; last is post-norm

    def loss(self, student, batch, targets, counts=None):
        """Per sequence, each layer's (n)MSE over the sequence's real positions; summed over sequences and
        divided by the step's sequence count (`counts.rows`): a per-sequence loss, so the step's sequences
        weigh the same however it is split."""
        if not self._sink_checked:
            self._sink_checked = True
            self.warn_of_sink(targets, batch)
        out = student.model(**self.inputs(batch), use_cache=False, output_hidden_states=True)
        loss, per_layer = hidden_state_loss(out.hidden_states[1:], targets, self.config.loss,
                                            positions=self.counted_positions(batch),
                                            rows=None if counts is None else counts.rows)
        return loss, {"layer_loss": per_layer}

    def document_position(self, batch: Batch) -> torch.Tensor:
        """(B, T): each position's index in its document (in its row, unless documents are isolated)."""
        ids = batch.input_ids
        if self.eos_id is not None:
            return document_positions(ids, self.eos_id)
        return torch.arange(ids.shape[1], device=ids.device).expand_as(ids)

    def counted_positions(self, batch: Batch) -> torch.Tensor:
        """(B, T) bool: the real positions past each document's first `sink_tokens` (each row's, unless
        documents are isolated)."""
        real = batch.real()
        if not self.config.sink_tokens:
            return real
        return real & (self.document_position(batch) >= self.config.sink_tokens)

    def warn_of_sink(self, targets: tuple[torch.Tensor, ...], batch: Batch) -> list[int]:
        """Warn (once, from the stage's first batch, on the main process) where documents' first positions hold
        most of a layer's teacher variance with `sink_tokens: 0`: an attention sink's massive activation, which
        the converted layers do not write and which then sets those layers' terms (near 1 with nmse, the
        sink's error with mse) whatever the rest does (docs/real_models.md section 7). Returns those layers."""
        if self.config.sink_tokens or (torch.distributed.is_initialized() and torch.distributed.get_rank() != 0):
            return []
        real = batch.real()
        first = real & (self.document_position(batch) == 0)
        sinks = [i for i, t in enumerate(targets) if position_share(t, real, first) > SINK_SHARE]
        if sinks:
            warnings.warn(
                f"stages.align: in {len(sinks)} of the teacher's {len(targets)} layers ({layer_ranges(sinks)}) each "
                f"document's first position holds over {SINK_SHARE:.0%} of the teacher's variance: an attention "
                "sink, a massive activation the converted layers do not write, which will set those layers' align "
                "terms whatever they learn. stages.align.sink_tokens: 1 leaves it out (on SmolLM2: lower perplexity, "
                "retrieval not better; docs/method.md section 4).", HydraHeadWarning, stacklevel=2)
        return sinks

    def progress_fields(self, metrics: dict[str, Any]) -> dict[str, str]:
        layers = metrics["layer_loss"]
        worst = max(range(len(layers)), key=layers.__getitem__)
        return {"first": f"{layers[0]:.3g}", "last": f"{layers[-1]:.3g}", "max": f"{layers[worst]:.3g}@L{worst}"}


class DistillStage(Stage):
    name = "distill"
    config: DistillStageConfig

    @property
    def needs_teacher(self) -> bool:
        """Only for the KL term: with kl_weight 0 the stage is next-token CE, and the teacher is not run."""
        return self.config.kl_weight > 0

    def __init__(self, config: DistillStageConfig, index: int) -> None:
        super().__init__(config, index)
        self._peft_model = None

    def prepare(self, student: nn.Module) -> None:
        lora = self.config.lora
        if lora is None:
            student.requires_grad_(True)
            return
        from peft import LoraConfig, get_peft_model

        targets = lora_targets(student, lora.target_modules)
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                            bias="none")
        # Injects LoRA layers into `student` in place and leaves only their parameters trainable.
        self._peft_model = get_peft_model(student, config)
        for p in hybrid_parameters(student):
            p.requires_grad_(True)

    def finish(self, student: nn.Module) -> None:
        if self._peft_model is not None:
            self._peft_model.merge_and_unload()  # LoRA layers -> plain Linear with merged weights, in place
            self._peft_model = None
        student.requires_grad_(True)

    @torch.no_grad()
    def teacher_targets(self, teacher: nn.Module, batch: Batch) -> tuple[torch.Tensor, nn.Module]:
        hidden = teacher.model(**self.inputs(batch), use_cache=False).last_hidden_state
        return hidden.detach(), teacher.lm_head

    def loss(self, student, batch, targets, counts=None):
        """KL over the real positions (never the padding), CE over the targets; the metrics name only the terms
        computed (a term of weight 0 is not)."""
        teacher_hidden, teacher_head = targets if targets is not None else (None, None)
        hidden = student.model(**self.inputs(batch), use_cache=False).last_hidden_state
        c = self.config
        out = chunked_kd_loss(hidden, student.lm_head, self.labels(batch), teacher_hidden, teacher_head,
                              temperature=c.temperature, kl_weight=c.kl_weight, ce_weight=c.ce_weight, chunk=c.loss_chunk,
                              kl_positions=batch.real(), counts=counts)
        terms = {"kl": (c.kl_weight, out.kl), "ce": (c.ce_weight, out.ce)}
        return out.loss, {name: value for name, (weight, value) in terms.items() if weight > 0}


class LongContextStage(Stage):
    name = "long_context"


class PretrainStage(Stage):
    """Training from scratch (`distill.pretrain`, the demo teacher): next-token loss, no teacher. A finished
    run can be extended (`pretrain.extends`), so its last checkpoint keeps the optimiser and schedule."""

    name = "pretrain"
    extendable = True


STAGES: dict[str, type[Stage]] = {"align": AlignStage, "distill": DistillStage, "long_context": LongContextStage}


def lora_targets(student: nn.Module, suffixes: list[str] | None) -> list[str]:
    """Full names of the backbone Linear layers LoRA adapts: every Linear that conversion did not add,
    except lm_head; filtered to names ending in one of `suffixes` when given."""
    hybrid = {id(p) for p in hybrid_parameters(student)}
    names = [
        name for name, module in student.named_modules()
        if isinstance(module, nn.Linear) and name != "lm_head" and id(module.weight) not in hybrid
    ]
    if suffixes:
        matches = {s: [n for n in names if n == s or n.endswith("." + s)] for s in suffixes}
        for suffix, found in matches.items():
            if not found:
                fused = " (a hybrid's FA branch fuses q/k/v into one qkv_proj)" if suffix in FUSED_QKV else ""
                available = sorted({n.rsplit(".", 1)[-1] for n in names})
                raise RecipeError(f"stages.distill.lora.target_modules: {suffix!r} matches no backbone linear layer"
                                  f"{fused}; the backbone's are {available}")
        names = [n for n in names if any(n in found for found in matches.values())]
    return names


FUSED_QKV = ("q_proj", "k_proj", "v_proj")


class TrainModule(nn.Module):
    """The student plus a stage's loss in one forward (what DDP / FSDP wrap)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, batch: Batch, stage: Stage, targets: Any = None, counts: StepCounts | None = None,
                evaluate: bool = False) -> tuple[torch.Tensor, Metrics]:
        if evaluate:  # held-out next-token loss, whatever the stage
            return stage.heldout_loss(self.student, batch)
        return stage.loss(self.student, batch, targets, counts)
