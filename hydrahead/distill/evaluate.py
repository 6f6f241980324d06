"""The evaluation hook: held-out perplexity built in, more evaluators (e.g. NIAH) pluggable.

An evaluator is any callable taking an `EvalContext` and returning {metric name: number}. The trainer
calls every evaluator on every process, with the student in eval mode and gradients off, every
`training.eval_every` optimiser steps and at the end of each stage; the main process logs the results.
Under FSDP the student's parameters are sharded, so an evaluator must run its forwards through the
`module` of the context, on every process, the same number of times (the built-in one does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hydrahead.distill.data import Batch
from hydrahead.distill.distributed import DistEnv


@dataclass
class EvalContext:
    student: nn.Module  # the hybrid model (unwrapped)
    module: nn.Module  # the TrainModule as the trainer calls it (DDP / FSDP wrapped)
    stage: Any  # hydrahead.distill.stages.Stage
    step: int
    tokenizer: Any
    env: DistEnv
    autocast: Callable[[], Any]  # a context manager factory: the run's mixed precision


Evaluator = Callable[[EvalContext], dict[str, float]]


class HeldoutPerplexity:
    """Next-token loss and perplexity of the student on fixed held-out sequences (the same on every
    process, so no reduction is needed and every process runs the same forwards): the mean over every
    target of every sequence (each batch's mean weighted by its target count, which the stage's labels
    decide: fewer than B * (T - 1) with isolated documents)."""

    def __init__(self, sequences: torch.Tensor, batch_size: int) -> None:
        self.sequences, self.batch_size = sequences, max(1, batch_size)

    @torch.no_grad()
    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        total, count = 0.0, 0
        for start in range(0, len(self.sequences), self.batch_size):
            batch = Batch.full(self.sequences[start : start + self.batch_size]).to(ctx.env.device)
            with ctx.autocast():
                loss, _ = ctx.module(batch, ctx.stage, evaluate=True)
            targets = ctx.stage.counts(batch).targets.item()
            total += loss.float().item() * targets
            count += targets
        loss = total / max(count, 1)
        return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}
