"""The training engine: one stage at a time, from its first step or from a checkpoint.

Per optimiser step: the step's `grad_accum` global batches are read first and their counts (sequences,
real positions, targets) summed over micro-steps and processes; then `grad_accum` micro-steps (gradients
synchronised on the last one only), each with the teacher's targets under no_grad and the stage's loss in
one call of the wrapped `TrainModule` (plain, DDP or FSDP2), divided by the step's counts over the
process count, then backward. The gradient is then that of one mean over all the step's targets (padding
and uneven rows included), the same on 1 or N processes with any grad_accum, as HF Trainer does with
`num_items_in_batch`. The loss (the sum of the micro-steps' shares, averaged over processes: the step's
mean) is checked: NaN or inf stops the run before the optimiser step, so no checkpoint is ever written
from a bad state. Then gradient clipping, AdamW, the warm-up + decay schedule, and on their cadences: a
metrics line, the evaluators, a checkpoint, the step callbacks.
SIGTERM or SIGINT during a stage is noted and acted on at the next step boundary: a checkpoint is
written, then `TrainingInterrupted` is raised (a second signal acts at once, as usual).

AdamW: weight decay on matrices only; fused on CUDA. Precision: fp32 parameters, bf16 autocast on CUDA
(by default). A stage ends after ceil(tokens / tokens_per_step) steps, i.e. on its token budget.

Extending a finished stage (`Stage.extendable`: pretrain, whose `extends()` accepts a larger token budget
with a constant schedule): its final checkpoint keeps the optimiser and scheduler, and the resumed stage
restores them, so AdamW's moments and step count go on. The schedule is `lr_factor` over the new total,
continued at the checkpoint's step: no second warm-up (`extends` requires the step to be past the warm-up
of both budgets), and a constant schedule stays at its peak. (A finished run's checkpoint from before
finished runs kept them has no optimiser state: AdamW starts afresh, the schedule still at its step.)
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hydrahead.distill import checkpoint as ckpt
from hydrahead.distill import distributed
from hydrahead.distill.data import BatchLoader, DataPosition, SequenceSource
from hydrahead.distill.losses import StepCounts
from hydrahead.distill.distributed import DistEnv
from hydrahead.errors import NonFiniteLossError, TrainingInterrupted
from hydrahead.distill.evaluate import EvalContext, Evaluator
from hydrahead.distill.metrics import MetricsLog, Progress
from hydrahead.distill.recipe import StageConfig, TrainingConfig
from hydrahead.distill.stages import Stage, TrainModule

RESUME_ADVICE = "Continue with --resume."  # how a stopped run goes on (`hydrahead demo` says its own)


@dataclass
class StepInfo:
    """What a step callback sees after each optimiser step (and after that step's checkpoint, if any)."""

    stage: str
    step: int  # optimiser steps done in this stage
    total_steps: int
    tokens: int  # tokens seen in this stage
    loss: float
    lr: float
    grad_norm: float
    student: nn.Module


StepCallback = Callable[[StepInfo], None]


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr for the optimiser step with index `step` (0-based): linear warm-up from
    0 over `warmup` steps, then cosine / linear decay to `min_ratio` at the last step, or constant.
    A pure function of the step: a stage resumed with a larger `total` (an extension) follows the
    schedule of the new total from its step on."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup - 1)
    progress = min(1.0, progress)
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * decay


class StopSignals:
    """Inside the block, SIGTERM and SIGINT are noted (`received`) instead of stopping the process; the
    first one restores the previous handlers, so a second acts at once. Outside the main thread (where
    Python cannot install handlers) it does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _note(self, signum, frame) -> None:
        self.received = signum
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()


def make_optimizer(params: list[nn.Parameter], config: StageConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # norms, biases, gains, per-head scalars
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=config.betas,
                             fused=device.type == "cuda")


def make_scheduler(optimizer: torch.optim.Optimizer, config: StageConfig,
                   start: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """`lr_factor` over the stage's steps, at the optimiser step with index `start` (0: a fresh stage)."""
    if start:
        for group in optimizer.param_groups:  # what LambdaLR needs to begin past step 0
            group.setdefault("initial_lr", config.lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        lr_factor, warmup=config.warmup_steps, total=config.total_steps, schedule=config.schedule,
        min_ratio=config.min_lr_ratio), last_epoch=start - 1)


class Trainer:
    def __init__(
        self,
        *,
        student: nn.Module,
        teacher: nn.Module | None,
        tokenizer: Any,
        training: TrainingConfig,
        env: DistEnv,
        output_dir: Path,
        identity: dict[str, Any],
        fingerprint: str,
        metrics: MetricsLog,
        callbacks: Sequence[StepCallback] = (),
        inputs: dict[str, str] | None = None,
    ) -> None:
        self.student, self.teacher, self.tokenizer = student, teacher, tokenizer
        self.training, self.env, self.output_dir = training, env, output_dir
        self.identity, self.fingerprint = identity, fingerprint
        self.metrics, self.callbacks = metrics, list(callbacks)
        self.inputs = inputs or {}
        self.strategy = distributed.resolve_strategy(training.distributed, env)
        self.train_module = TrainModule(student)
        self._fsdp_module: nn.Module | None = None
        self.checkpoint_path = output_dir / ckpt.FILENAME
        self.last_checkpoint = "none yet"
        use_bf16 = training.precision == "bf16" or (training.precision == "auto" and env.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None

    # ------------------------------------------------------------------------------------------- helpers
    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.autocast_dtype)

    def _wrap(self) -> nn.Module:
        """DDP is rebuilt per stage (the trainable set changes); FSDP2 shards once and stays."""
        if self.strategy == "fsdp":
            if self._fsdp_module is None:
                self._fsdp_module = distributed.wrap(self.train_module, self.student.model.layers, self.env, "fsdp")
            return self._fsdp_module
        return distributed.wrap(self.train_module, self.student.model.layers, self.env, self.strategy)

    def save(self, state: ckpt.TrainState, optimizer=None, scheduler=None) -> None:
        """A checkpoint, after every process learns whether the main one failed to write a metrics record: then
        they all stop (OutputError on the main one) at the checkpoint before, whose resume rewrites the records."""
        distributed.on_main(self.env, self.metrics.check)
        ckpt.save(self.checkpoint_path, self.env, student=self.student, state=state, identity=self.identity,
                  fingerprint=self.fingerprint, optimizer=optimizer, scheduler=scheduler, inputs=self.inputs)
        self.last_checkpoint = f"{self.checkpoint_path} (stage {state.stage}, step {state.step}" + (
            ", done)" if state.done else ")")

    def evaluate(self, module: nn.Module, stage: Stage, step: int, evaluators: Sequence[Evaluator]) -> dict[str, float]:
        if not evaluators:
            return {}
        self.student.eval()
        ctx = EvalContext(self.student, module, stage, step, self.tokenizer, self.env, self.autocast)
        results: dict[str, float] = {}
        try:
            with torch.no_grad():
                for evaluator in evaluators:
                    results.update(evaluator(ctx))
        finally:
            self.student.train()
        return results

    # ------------------------------------------------------------------------------------------- one step
    def _step_counts(self, stage: Stage, batches) -> StepCounts:
        """What each micro-batch's summed loss terms are divided by: the counts of the whole optimiser step
        (every micro-step, every process; at least 1) over the number of processes, because DDP and FSDP
        average gradients over processes."""
        local = torch.stack([torch.stack(list(stage.counts(b))) for b in batches]).sum(0)  # (3,)
        total = distributed.all_reduce_sum(local, self.env).clamp(min=1)
        return StepCounts(*(total / self.env.world_size).unbind())

    def _step(self, module, stage: Stage, loader: BatchLoader, params, optimizer) -> tuple[float, dict, float]:
        config = stage.config
        accum = config.grad_accum
        batches = [loader.next().to(self.env.device, non_blocking=True) for _ in range(accum)]
        counts = self._step_counts(stage, batches)
        loss_sum = torch.zeros((), device=self.env.device)
        metric_sums: dict[str, torch.Tensor] = {}
        for micro, batch in enumerate(batches):
            with self.autocast():
                targets = stage.teacher_targets(self.teacher, batch) if stage.needs_teacher else None
            with distributed.no_sync(module, skip_sync=micro < accum - 1):
                with self.autocast():
                    loss, metrics = module(batch, stage, targets, counts)  # this micro-batch's share of the step's mean
                loss.backward()
            loss_sum += loss.detach().float()
            for key, value in metrics.items():
                metric_sums[key] = metric_sums.get(key, 0) + value.detach().float()
        loss = distributed.all_reduce_mean(loss_sum, self.env).item()
        metrics = {k: distributed.all_reduce_mean(v, self.env).tolist() for k, v in metric_sums.items()}
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
            grad_norm = grad_norm.full_tensor()
        return loss, metrics, float(grad_norm)

    def _check_finite(self, stage: Stage, step: int, loss: float, grad_norm: float) -> None:
        if math.isfinite(loss) and math.isfinite(grad_norm):
            return
        what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm} (loss {loss:.4g})"
        raise NonFiniteLossError(
            f"stage {stage.name}, step {step}/{stage.config.total_steps}: the {what}. Stopped before the optimiser "
            f"step; the last good checkpoint is intact: {self.last_checkpoint}. Lower stages.{stage.name}.lr or "
            "check the data, then continue with --resume."
        )

    # ------------------------------------------------------------------------------------------- one stage
    def run_stage(self, stage: Stage, source: SequenceSource, evaluators: Sequence[Evaluator] = (),
                  resume: ckpt.Checkpoint | None = None) -> None:
        config, env = stage.config, self.env
        stage.prepare(self.student)
        if resume is not None:
            ckpt.restore_model(self.student, resume)
        self.student.train()
        module = self._wrap()
        params = [p for p in self.student.parameters() if p.requires_grad]
        optimizer = make_optimizer(params, config, env.device)
        # A finished run's checkpoint written before they kept the schedule (an extension): its step is
        # where the schedule goes on; AdamW's moments were not saved, so they start again.
        unscheduled = resume is not None and resume.scheduler is None
        scheduler = make_scheduler(optimizer, config, start=resume.state.step if unscheduled else 0)
        state = ckpt.TrainState(stage.name, stage.index)
        if resume is not None:
            ckpt.restore_training(self.student, optimizer, scheduler, resume, env)
            state = resume.state
            self.last_checkpoint = f"{self.checkpoint_path} (stage {state.stage}, step {state.step})"
        loader = BatchLoader(source, config.batch_size, env.rank, env.world_size, state.data)
        progress = Progress(stage.name, config.total_steps * config.tokens_per_step, state.tokens,
                            self.training.progress and env.is_main)
        window_start, window_tokens = time.perf_counter(), 0
        stop = StopSignals()
        try:
            with stop:
                while state.step < config.total_steps:
                    lr = scheduler.get_last_lr()[0]
                    loss, metrics, grad_norm = self._step(module, stage, loader, params, optimizer)
                    self._check_finite(stage, state.step + 1, loss, grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    state.step += 1
                    state.tokens += config.tokens_per_step
                    state.data = DataPosition(loader.position.sequences)
                    window_tokens += config.tokens_per_step
                    progress.update(config.tokens_per_step, loss, lr, stage.progress_fields(metrics))
                    last = state.step == config.total_steps
                    if state.step % self.training.log_every == 0 or last:
                        elapsed = time.perf_counter() - window_start
                        self.metrics.log({"stage": stage.name, "step": state.step, "tokens": state.tokens,
                                          "loss": loss, **metrics, "lr": lr, "grad_norm": grad_norm,
                                          "tokens_per_s": window_tokens / max(elapsed, 1e-9)})
                        window_start, window_tokens = time.perf_counter(), 0
                    every = self.training.eval_every
                    if every and state.step % every == 0 and not last:
                        self._log_eval(module, stage, state, evaluators)
                    every = self.training.checkpoint_every
                    if every and state.step % every == 0 and not last:
                        self.save(state, optimizer, scheduler)
                    for callback in self.callbacks:
                        callback(StepInfo(stage.name, state.step, config.total_steps, state.tokens, loss, lr,
                                          grad_norm, self.student))
                    if distributed.any_rank(stop.received is not None or self.metrics.error is not None, env):
                        self.save(state, optimizer, scheduler)
                        name = signal.Signals(stop.received).name if stop.received else "a signal on another process"
                        raise TrainingInterrupted(
                            f"stopped by {name} at stage {stage.name}, step {state.step}/{config.total_steps}; "
                            f"checkpoint saved: {self.last_checkpoint}. {RESUME_ADVICE}",
                            stop.received or signal.SIGTERM)
        finally:
            progress.close()
        self._log_eval(module, stage, state, evaluators)
        stage.finish(self.student)
        state.done = True
        if stage.extendable:  # an extension restores them and goes on (module docstring)
            self.save(state, optimizer, scheduler)
        else:
            self.save(state)

    def _log_eval(self, module, stage: Stage, state: ckpt.TrainState, evaluators: Sequence[Evaluator]) -> None:
        results = self.evaluate(module, stage, state.step, evaluators)
        if results:
            self.metrics.log({"stage": stage.name, "step": state.step, "tokens": state.tokens, **results})
