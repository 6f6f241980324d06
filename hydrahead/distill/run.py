"""`run(recipe)`: the whole pipeline, from a teacher and a head plan to a trained hybrid checkpoint.

Order (every check that can fail cheaply comes before anything expensive):
  1. recipe, data files, plan file, teacher directory, batch sizes, checkpoint / --resume agreement
  2. teacher and tokenizer; the plan against the teacher; every stage's data tokenised and packed
  3. conversion (seeded) to the hybrid student
  4. the stages that remain, in order (from the checkpoint's position on --resume)
  5. <output_dir>/final: a hybrid checkpoint that `hydrahead.from_pretrained` loads, with the tokenizer
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from hydrahead.distill import checkpoint as ckpt
from hydrahead.distill import distributed
from hydrahead.distill.data import Corpora, Tokenize, load_tokenizer, resolve_files
from hydrahead.distill.distributed import DistEnv
from hydrahead.distill.errors import DataError, RecipeError
from hydrahead.distill.evaluate import Evaluator, HeldoutPerplexity
from hydrahead.distill.metrics import MetricsLog
from hydrahead.distill.recipe import STAGE_NAMES, Recipe
from hydrahead.distill.stages import STAGES, Stage
from hydrahead.distill.trainer import StepCallback, Trainer
from hydrahead.models.shape import ModelShape

FINAL = "final"


def run(
    recipe: Recipe | dict[str, Any] | str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[StepCallback] = (),
    evaluators: Sequence[Evaluator] = (),
) -> Path:
    """Run a recipe (a Recipe, a dict, or a YAML path); returns the final hybrid checkpoint's directory.

    resume:     continue from <output_dir>/checkpoint.pt, which must come from the same recipe.
    callbacks:  called after every optimiser step with a `StepInfo` (raise to stop the run).
    evaluators: extra evaluation hooks (EvalContext -> {metric: value}), besides held-out perplexity.
    Works unchanged under torchrun (one process per device, DDP or FSDP2).
    """
    recipe = Recipe.load(recipe)
    env = distributed.init(recipe.training.device)
    try:
        return _run(recipe, env, resume, callbacks, evaluators)
    finally:
        distributed.shutdown(env)


def _run(recipe: Recipe, env: DistEnv, resume: bool, callbacks, evaluators) -> Path:
    from hydrahead.cli.convert import load_teacher
    from hydrahead.models.convert import convert
    from hydrahead.models.io import read_config
    from hydrahead.plan import HeadPlan

    output_dir = Path(recipe.output_dir)
    stages = [STAGES[name](config, STAGE_NAMES.index(name)) for name, config in recipe.stages.active()]

    # 1. cheap checks
    train_files = {}
    for stage in stages:
        key = f"stages.{stage.name}.train_files" if stage.config.train_files else "data.train_files"
        train_files[stage.name] = (resolve_files(stage.config.train_files or recipe.data.train_files, key), key)
    eval_files = resolve_files(recipe.data.eval_files, "data.eval_files") if recipe.data.eval_files else []
    plan = HeadPlan.from_json(recipe.plan)
    teacher_config = read_config(recipe.teacher)
    plan.validate(ModelShape.from_config(teacher_config))  # before loading any weights
    if recipe.training.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise RecipeError("training.tensorboard is true but the tensorboard package is not installed "
                          "(pip install tensorboard), or set it to false")
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
    checkpoint = ckpt.open_run(output_dir, resume, identity, fingerprint)
    remaining = [s for s in stages if checkpoint is None or s.index > checkpoint.state.stage_index
                 or (s.index == checkpoint.state.stage_index and not checkpoint.state.done)]

    # 2. teacher, tokenizer, data
    teacher = load_teacher(recipe.teacher, "float32")
    plan.validate(teacher.config)
    tokenizer, eos = load_tokenizer(recipe.teacher)
    if len(tokenizer) > teacher.config.vocab_size:
        raise DataError(f"the tokenizer of {recipe.teacher} has {len(tokenizer)} tokens but the model only "
                        f"{teacher.config.vocab_size}")
    cache_dir = Path(recipe.data.cache_dir) if recipe.data.cache_dir else output_dir / "cache"
    corpora = Corpora(recipe.data, Tokenize(tokenizer, eos), cache_dir, env.is_main, lambda: distributed.barrier(env),
                      pad_id=tokenizer.pad_token_id)
    for stage in stages:
        stage.pad_id = corpora.pad_id  # document-packed rows: no loss on their padding
    sources, stage_evaluators = {}, {}
    for stage in remaining:
        files, key = train_files[stage.name]
        sources[stage.name] = corpora.train_source(files, stage.config.seq_len, recipe.seed, stage.index, key)
        heldout = corpora.eval_batches(eval_files, stage.config.seq_len, recipe.data.eval_sequences)
        builtin = [HeldoutPerplexity(heldout, stage.config.batch_size // env.world_size)] if heldout is not None else []
        stage_evaluators[stage.name] = [*builtin, *evaluators]

    # 3. the student
    torch.manual_seed(recipe.seed)
    student = convert(teacher, plan, recipe.hybrid_options()).to(env.device)
    student.config.use_cache = False
    if recipe.training.gradient_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if any(s.needs_teacher for s in remaining):
        teacher_dtype = recipe.training.teacher_dtype
        if teacher_dtype == "auto":
            teacher_dtype = "bfloat16" if env.device.type == "cuda" else "float32"
        teacher.to(env.device, getattr(torch, teacher_dtype)).eval().requires_grad_(False)
        distributed.shard_teacher(teacher, env, strategy)
    else:
        teacher = None

    # 4. the stages
    metrics = MetricsLog(output_dir, env.is_main, recipe.training.tensorboard)
    output_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        metrics.truncate_after(list(STAGE_NAMES), checkpoint.state.stage, checkpoint.state.step)
    trainer = Trainer(student=student, teacher=teacher, tokenizer=tokenizer, training=recipe.training, env=env,
                      output_dir=output_dir, identity=identity, fingerprint=fingerprint, metrics=metrics,
                      callbacks=callbacks)
    try:
        if checkpoint is not None and checkpoint.state.done:
            ckpt.restore_model(student, checkpoint)  # the finished stage's model; later stages start from it
        for stage in remaining:
            resume_here = checkpoint if checkpoint is not None and stage.index == checkpoint.state.stage_index else None
            trainer.run_stage(stage, sources[stage.name], stage_evaluators[stage.name], resume=resume_here)
            if not any(s.needs_teacher for s in remaining[remaining.index(stage) + 1 :]):
                trainer.teacher = teacher = None  # free its memory for the stages that do not need it
    finally:
        metrics.close()

    # 5. the final hybrid
    final = output_dir / FINAL
    save_final(student, tokenizer, final, env, _checkpoint_dtype(teacher_config))
    return final


def _checkpoint_dtype(config: dict[str, Any]) -> torch.dtype:
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, name) if isinstance(getattr(torch, str(name), None), torch.dtype) else torch.float32


def save_final(student: torch.nn.Module, tokenizer, path: Path, env: DistEnv, dtype: torch.dtype) -> None:
    """`save_pretrained` + tokenizer into a temporary folder, then rename: `path` is complete or absent.
    Weights are stored in `dtype` (the teacher checkpoint's), training ran on fp32 master weights."""
    state = get_model_state_dict(student, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if env.is_main:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        student.config.use_cache = True
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        student.save_pretrained(tmp, state_dict=state)
        config = json.loads((tmp / "config.json").read_text())
        config["dtype"] = str(dtype).removeprefix("torch.")  # save_pretrained wrote the fp32 master weights' dtype
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tokenizer.save_pretrained(tmp)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    distributed.barrier(env)


__all__ = ["FINAL", "Stage", "run", "save_final"]
