"""`run(recipe)`: the whole pipeline, from a teacher and a head plan to a trained hybrid checkpoint.

Steps (every check that can fail cheaply comes before anything expensive):
  prepare        recipe, data files, plan, teacher directory, batch sizes, checkpoint / --resume agreement
  load_inputs    teacher and tokenizer (unless handed in), the plan against the teacher, every stage's data
  build_student  conversion (seeded) to the hybrid student; the teacher on the training device
  train          the stages that remain, in order (from the checkpoint's position on --resume)
  save_final     <output_dir>/final: a hybrid checkpoint that `hydrahead.from_pretrained` loads, with the tokenizer
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from hydrahead.distill import checkpoint as ckpt
from hydrahead.distill import distributed
from hydrahead.distill.data import Corpora, Tokenize, calibration_ids, document_eos, resolve_files
from hydrahead.distill.distributed import DistEnv
from hydrahead.errors import DataError, RecipeError, items, shown
from hydrahead.distill.evaluate import Evaluator, HeldoutPerplexity
from hydrahead.distill.metrics import MetricsLog, summary_writer
from hydrahead.distill.recipe import STAGE_NAMES, Recipe
from hydrahead.distill.stages import STAGES, Stage, lora_targets
from hydrahead.distill.trainer import StepCallback, Trainer
from hydrahead.models.convert import convert
from hydrahead.models.families import family_of_config
from hydrahead.models.loading import check_vocabulary, load_model, load_tokenizer, read_config, save_hybrid
from hydrahead.models.shape import ModelShape
from hydrahead.plan import HeadPlan
from hydrahead.utils.io import check_output, outputs_apart

FINAL = ckpt.FINAL


def run(
    recipe: Recipe | dict[str, Any] | str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[StepCallback] = (),
    evaluators: Sequence[Evaluator] = (),
    teacher: torch.nn.Module | None = None,
    tokenizer: Any = None,
    plan: HeadPlan | None = None,
) -> Path:
    """Run a recipe (a Recipe, a dict, or a YAML path); returns the final hybrid checkpoint's directory.

    resume:     continue from <output_dir>/checkpoint.safetensors, which must come from the same recipe.
    callbacks:  called after every optimiser step with a `StepInfo` (raise to stop the run).
    evaluators: extra evaluation hooks (EvalContext -> {metric: value}), besides held-out perplexity.
    teacher, tokenizer, plan: already in memory, instead of loading recipe.teacher and recipe.plan (which
                still name them: the run's identity and the checkpoint's dtype come from them). A teacher
                handed in is left as it is: when training needs it on another device or in another dtype,
                a copy goes there.
    Works unchanged under torchrun (one process per device, DDP or FSDP2).
    """
    callbacks, evaluators = _check_arguments(callbacks, evaluators, teacher, tokenizer, plan)
    recipe = Recipe.load(recipe)
    env = distributed.init(recipe.training.device)
    try:
        run_ = prepare(recipe, env, resume, plan)
        load_inputs(run_, evaluators, teacher, tokenizer)
        student = build_student(run_)
        with _frozen(run_.teacher, restore=run_.teacher is teacher):
            train(run_, student, callbacks)
        final = Path(recipe.output_dir) / FINAL
        save_final(student, run_.tokenizer, final, env, _checkpoint_dtype(run_.teacher_config))
        return final
    finally:
        distributed.shutdown(env)


def _check_arguments(callbacks: Any, evaluators: Any, teacher: Any, tokenizer: Any,
                     plan: Any) -> tuple[tuple[StepCallback, ...], tuple[Evaluator, ...]]:
    """(callbacks, evaluators) as tuples (a generator is read once, here), or RecipeError naming an in-memory
    argument of the wrong kind, before anything is loaded or trained (a path given for the teacher, a dict for
    the plan, a callback that cannot be called)."""
    if teacher is not None and not isinstance(teacher, torch.nn.Module):
        raise RecipeError(f"teacher= takes the model itself (the recipe names its path), got {shown(teacher):.100}")
    if plan is not None and not isinstance(plan, HeadPlan):
        raise RecipeError(f"plan= takes a HeadPlan (the recipe names its file), got {shown(plan):.100}")
    if tokenizer is not None and not (callable(tokenizer) and hasattr(tokenizer, "__len__")):
        raise RecipeError(f"tokenizer= takes the tokenizer itself, got {shown(tokenizer):.100}")
    hooks = {}
    for name, given in (("callbacks", callbacks), ("evaluators", evaluators)):
        hooks[name] = items(given)
        if hooks[name] is None or not all(map(callable, hooks[name])):
            raise RecipeError(f"{name}= takes a list of functions, got {shown(given):.100}")
    return hooks["callbacks"], hooks["evaluators"]


@dataclass
class DistillRun:
    """What one run works with, filled in step by step."""

    recipe: Recipe
    env: DistEnv
    stages: list[Stage]
    remaining: list[Stage]  # the stages still to train (all of them unless resuming)
    plan: HeadPlan
    teacher_config: dict[str, Any]
    strategy: str
    identity: dict[str, Any]
    fingerprint: str
    checkpoint: Any  # ckpt.Checkpoint | None
    inputs: dict[str, str]  # digests of the teacher's and the data's files, checked on --resume
    train_files: dict[str, tuple[list[Path], str]]
    eval_files: list[Path]
    teacher: torch.nn.Module | None = None
    teacher_given: bool = False  # handed in by the caller: never changed in place
    tokenizer: Any = None
    sources: dict[str, Any] = field(default_factory=dict)
    evaluators: dict[str, list[Evaluator]] = field(default_factory=dict)


def prepare(recipe: Recipe, env: DistEnv, resume: bool, plan: HeadPlan | None = None) -> DistillRun:
    """Every check that needs no weights: data files, plan against the teacher's config, optional packages,
    batch sizes, and the checkpoint against the recipe (on --resume)."""
    stages = [STAGES[name](config, STAGE_NAMES.index(name)) for name, config in recipe.stages.active()]
    check_output(recipe.output_dir, "directory")
    outputs_apart({"output_dir": recipe.output_dir}, {"teacher": recipe.teacher})  # it writes checkpoints there
    train_files = {}
    for stage in stages:
        key = f"stages.{stage.name}.train_files" if stage.config.train_files else "data.train_files"
        train_files[stage.name] = (resolve_files(stage.config.train_files or recipe.data.train_files, key), key)
    eval_files = resolve_files(recipe.data.eval_files, "data.eval_files") if recipe.data.eval_files else []
    plan = plan if plan is not None else HeadPlan.from_json(recipe.plan)
    teacher_config = read_config(recipe.teacher)
    family_of_config(teacher_config, f"teacher {recipe.teacher}")  # a model hydrahead converts, before any weights are read
    plan.validate(ModelShape.from_config(teacher_config))  # before loading any weights
    if recipe.training.tensorboard:
        summary_writer()  # its package, before any weights are read
    strategy = distributed.resolve_strategy(recipe.training.distributed, env)
    for stage in stages:
        if stage.config.batch_size % env.world_size:
            raise RecipeError(f"stages.{stage.name}.batch_size {stage.config.batch_size} is global and must divide "
                              f"by the {env.world_size} processes")
        if getattr(stage.config, "lora", None) is not None and importlib.util.find_spec("peft") is None:
            raise RecipeError(f"stages.{stage.name}.lora needs the peft package: pip install 'hydrahead[lora]'")
        if strategy == "fsdp" and getattr(stage.config, "lora", None) is not None:
            raise RecipeError(f"stages.{stage.name}.lora cannot be combined with training.distributed: fsdp; "
                              "use ddp, or full fine-tuning")
    identity = recipe.identity(plan.to_dict())
    fingerprint = recipe.fingerprint(plan.to_dict())
    data_files = [f for files, _ in train_files.values() for f in files]  # eval files may change on resume
    inputs = ckpt.input_digests(data_files, recipe.teacher)
    checkpoint = ckpt.open_run(Path(recipe.output_dir), resume, identity, fingerprint, inputs=inputs,
                               is_main=env.is_main, barrier=lambda: distributed.barrier(env))
    remaining = [s for s in stages if checkpoint is None or s.index > checkpoint.state.stage_index
                 or (s.index == checkpoint.state.stage_index and not checkpoint.state.done)]
    return DistillRun(recipe, env, stages, remaining, plan, teacher_config, strategy, identity, fingerprint,
                      checkpoint, inputs, train_files, eval_files)


def load_inputs(run_: DistillRun, evaluators: Sequence[Evaluator], teacher: torch.nn.Module | None = None,
                tokenizer: Any = None) -> None:
    """The teacher and tokenizer (loaded unless handed in), checked against the plan and each other; every
    remaining stage's training data tokenised and packed, and its evaluators."""
    recipe, env = run_.recipe, run_.env
    run_.teacher = teacher if teacher is not None else load_model(recipe.teacher, "float32")
    run_.teacher_given = teacher is not None
    run_.plan.validate(run_.teacher.config)
    run_.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(recipe.teacher)
    check_vocabulary(run_.tokenizer, run_.teacher.config, recipe.teacher, DataError)
    output_dir = Path(recipe.output_dir)
    cache_dir = Path(recipe.data.cache_dir) if recipe.data.cache_dir else output_dir / "cache"
    eos = document_eos(run_.tokenizer, recipe.teacher)
    corpora = Corpora(recipe.data, Tokenize(run_.tokenizer, eos), cache_dir,
                      env.is_main, lambda: distributed.barrier(env), pad_id=run_.tokenizer.pad_token_id)
    for stage in run_.stages:
        stage.eos_id = eos if recipe.data.isolate_documents else None
    for stage in run_.remaining:
        files, key = run_.train_files[stage.name]
        run_.sources[stage.name] = corpora.train_source(files, stage.config.seq_len, recipe.seed, stage.index, key)
        corpora.check_batch(run_.sources[stage.name], stage.config.batch_size, f"stages.{stage.name}.batch_size", key)
        heldout = corpora.eval_batches(run_.eval_files, stage.config.seq_len, recipe.data.eval_sequences)
        builtin = [HeldoutPerplexity(heldout, stage.config.batch_size // env.world_size)] if heldout is not None else []
        run_.evaluators[stage.name] = [*builtin, *evaluators]


def build_student(run_: DistillRun) -> torch.nn.Module:
    """The seeded conversion of the teacher with the plan, calibrated on the first remaining stage's first
    training rows (`calibration_ids`), on the training device; the teacher joins it there in its training
    dtype when a remaining stage needs it (and is dropped otherwise)."""
    recipe, env = run_.recipe, run_.env
    torch.manual_seed(recipe.seed)
    calibration = calibration_ids(run_.sources[run_.remaining[0].name]) if run_.remaining else None
    student = convert(run_.teacher, run_.plan, recipe.hybrid_options(), calibration=calibration).to(env.device)
    student.config.use_cache = False
    for stage in run_.remaining:  # LoRA's layer names, checked before any stage trains, not as their stage starts
        if (lora := getattr(stage.config, "lora", None)) is not None:
            lora_targets(student, lora.target_modules)
    if recipe.training.gradient_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if any(s.needs_teacher for s in run_.remaining):
        teacher_dtype = recipe.training.teacher_dtype
        if teacher_dtype == "auto":
            teacher_dtype = "bfloat16" if env.device.type == "cuda" else "float32"
        device, dtype = env.device, getattr(torch, teacher_dtype)
        first = next(run_.teacher.parameters())
        moves = first.device != device or first.dtype != dtype or run_.strategy == "fsdp"
        if run_.teacher_given and moves:  # the caller's model stays as it is: a copy is moved, cast, sharded
            run_.teacher = copy.deepcopy(run_.teacher)
        run_.teacher.to(device, dtype).eval()
        distributed.shard_teacher(run_.teacher, env, run_.strategy)
    else:
        run_.teacher = None
    return student


def train(run_: DistillRun, student: torch.nn.Module, callbacks: Sequence[StepCallback] = ()) -> None:
    """The remaining stages in order, each resumed from the checkpoint where it stopped."""
    recipe, env, checkpoint = run_.recipe, run_.env, run_.checkpoint
    output_dir = Path(recipe.output_dir)
    metrics = MetricsLog(output_dir, env.is_main, recipe.training.tensorboard)
    output_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        # on the main process, every process learning whether it failed (none left waiting in a collective)
        distributed.on_main(env, lambda: metrics.truncate_after(list(STAGE_NAMES), checkpoint.state.stage,
                                                                checkpoint.state.step))
    trainer = Trainer(student=student, teacher=run_.teacher, tokenizer=run_.tokenizer, training=recipe.training,
                      env=env, output_dir=output_dir, identity=run_.identity, fingerprint=run_.fingerprint,
                      metrics=metrics, callbacks=callbacks, inputs=run_.inputs)
    try:
        if checkpoint is not None and checkpoint.state.done:
            ckpt.restore_model(student, checkpoint)  # the finished stage's model; later stages start from it
            if len(checkpoint.rng) == env.world_size:  # and its random state (a LoRA's initialisation, dropout)
                ckpt.set_rng_state(checkpoint.rng[env.rank])
        for i, stage in enumerate(run_.remaining):
            resume_here = checkpoint if checkpoint is not None and stage.index == checkpoint.state.stage_index else None
            trainer.run_stage(stage, run_.sources[stage.name], run_.evaluators[stage.name], resume=resume_here)
            if not any(s.needs_teacher for s in run_.remaining[i + 1 :]):
                trainer.teacher = run_.teacher = None  # free its memory for the stages that do not need it
    finally:
        metrics.close()


class _frozen:
    """The teacher's parameters without gradients for the block. The caller's own model (`restore`: the teacher
    handed in, not a copy) gets its flags back afterwards; any other teacher is not referenced from here, so that
    `train` dropping it after its last stage frees its memory."""

    def __init__(self, model: torch.nn.Module | None, restore: bool) -> None:
        self.model, self.restore = model, restore

    def __enter__(self) -> None:
        params = list(self.model.parameters()) if self.model is not None else []
        self.flags = [(p, p.requires_grad) for p in params] if self.restore else []
        for p in params:
            p.requires_grad_(False)
        self.model = None

    def __exit__(self, *exc) -> None:
        for p, flag in self.flags:
            p.requires_grad_(flag)


def _checkpoint_dtype(config: dict[str, Any]) -> torch.dtype:
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, name) if isinstance(getattr(torch, str(name), None), torch.dtype) else torch.float32


def save_final(student: torch.nn.Module, tokenizer, path: Path, env: DistEnv, dtype: torch.dtype) -> None:
    """The full (gathered) state saved by the main process with `save_hybrid`: `path` is complete or absent.
    Weights are stored in `dtype` (the teacher checkpoint's); training ran on fp32 master weights."""
    state = get_model_state_dict(student, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def save() -> None:
        student.config.use_cache = True
        save_hybrid(student, path, tokenizer, dtype=dtype, state_dict=state)

    distributed.on_main(env, save)


__all__ = ["FINAL", "DistillRun", "Stage", "build_student", "load_inputs", "prepare", "run", "save_final", "train"]
