"""`pretrain(recipe)`: a model trained from scratch by next-token prediction, on the distillation engine.

The demo's teacher is trained this way: the same `Trainer` as distillation (resume from an exact
checkpoint, metrics.jsonl, NaN guard, progress, evaluator hooks, DDP/FSDP2 under torchrun), the same
data pipeline (with `data.packing: documents` so that rows never cut a retrieval document), with no
teacher and no plan: the student is a fresh transformers model built from `recipe.model`.

  1. recipe, data files, tokenizer, checkpoint / --resume agreement
  2. the model from its config, seeded (or from `recipe.init`'s weights: a curriculum's next phase)
  3. the one next-token stage (from the checkpoint's position on --resume)
  4. <output_dir>/final: an ordinary transformers checkpoint with the tokenizer
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hydrahead.distill import checkpoint as ckpt
from hydrahead.distill import distributed
from hydrahead.distill.data import Corpora, Tokenize, document_eos, resolve_files
from hydrahead.errors import RecipeError
from hydrahead.distill.evaluate import Evaluator, HeldoutPerplexity
from hydrahead.distill.metrics import MetricsLog
from hydrahead.distill.recipe import PretrainRecipe
from hydrahead.distill.stages import PretrainStage
from hydrahead.distill.trainer import StepCallback, Trainer
from hydrahead.models.loading import CONFIG_ERRORS, check_vocabulary, load_tokenizer, one_line
from hydrahead.utils.io import check_output

FINAL = ckpt.FINAL


def model_config(recipe: PretrainRecipe, tokenizer: Any):
    """The transformers config of `recipe.model`, vocabulary and special tokens from the tokenizer."""
    from transformers import AutoConfig

    spec = dict(recipe.model)
    model_type = spec.pop("model_type")
    spec.setdefault("vocab_size", len(tokenizer))
    spec.setdefault("eos_token_id", tokenizer.eos_token_id)
    spec.setdefault("pad_token_id", tokenizer.pad_token_id)
    try:
        return AutoConfig.for_model(model_type, **spec)
    except CONFIG_ERRORS as err:
        raise RecipeError(f"model: not a valid {model_type} config ({one_line(err)})") from err


def extends(old: dict[str, Any], recipe: PretrainRecipe, step: int) -> bool:
    """Whether `recipe` differs from the checkpoint's recipe identity `old` only by a larger stage token
    budget, with a constant schedule whose warm-up both budgets have finished by `step`: continuing is then
    the same training, longer. The continued run restores the optimiser (AdamW's moments and step count)
    and the scheduler's step, also from a finished run's checkpoint; the lr is the schedule over the new
    total at that step (no second warm-up; constant: the peak). A finished run's checkpoint written before
    they kept the optimiser goes on with fresh AdamW moments, its schedule still at its step."""
    new = recipe.identity()
    rest = {k: v for k, v in old.items() if k != "stage"} == {k: v for k, v in new.items() if k != "stage"}
    stage = {k: v for k, v in old.get("stage", {}).items() if k != "tokens"} == {
        k: v for k, v in new["stage"].items() if k != "tokens"}
    if not (rest and stage and recipe.stage.schedule == "constant" and recipe.stage.tokens > old["stage"]["tokens"]):
        return False
    before = dataclasses.replace(recipe.stage, tokens=old["stage"]["tokens"])
    return step >= max(before.warmup_steps, recipe.stage.warmup_steps)


def load_init(model: torch.nn.Module, path: str) -> None:
    """Copy the weights of the checkpoint directory `path` into `model` (RecipeError unless they fit exactly)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise RecipeError(f"init: {path} holds no model.safetensors (it must be a pretrain final model)")
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as err:
        raise RecipeError(f"init: cannot read {weights} ({err})") from err
    if model.config.tie_word_embeddings and "model.embed_tokens.weight" in state:
        state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise RecipeError(f"init: {path} is not a checkpoint of this model (missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}, other shapes {wrong[:3]})")
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(state[name])


def pretrain(
    recipe: PretrainRecipe | dict[str, Any] | str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[StepCallback] = (),
    evaluators: Sequence[Evaluator] = (),
) -> Path:
    """Train `recipe.model` from scratch; returns <output_dir>/final (an ordinary transformers checkpoint).

    resume:     continue from <output_dir>/checkpoint.safetensors, which must come from the same recipe, or from one
                whose only difference is a smaller `stage.tokens` with a constant schedule (extend the run).
    callbacks:  called after every optimiser step with a `StepInfo`.
    evaluators: extra evaluation hooks (EvalContext -> {metric: value}), e.g. greedy NIAH.
    """
    from transformers import AutoModelForCausalLM

    recipe = PretrainRecipe.load(recipe)
    env = distributed.init(recipe.training.device)
    try:
        output_dir = check_output(recipe.output_dir, "directory")
        files = resolve_files(recipe.data.train_files, "data.train_files")
        eval_files = resolve_files(recipe.data.eval_files, "data.eval_files") if recipe.data.eval_files else []
        tokenizer = load_tokenizer(recipe.tokenizer)
        eos = document_eos(tokenizer, recipe.tokenizer)
        config = model_config(recipe, tokenizer)
        check_vocabulary(tokenizer, config, recipe.tokenizer, RecipeError)  # else an IndexError in the first step
        identity, fingerprint = recipe.identity(), recipe.fingerprint()
        inputs = ckpt.input_digests(files, recipe.tokenizer, label="tokenizer", weights=False)
        if recipe.init is not None and (Path(recipe.init) / "model.safetensors").is_file():
            inputs[f"init {recipe.init}"] = ckpt.file_digest(Path(recipe.init) / "model.safetensors")
        checkpoint = ckpt.open_run(output_dir, resume, identity, fingerprint,
                                   accept=lambda old, step: extends(old, recipe, step), inputs=inputs,
                                   is_main=env.is_main, barrier=lambda: distributed.barrier(env))
        if checkpoint is not None and checkpoint.state.done and checkpoint.state.tokens < recipe.stage.tokens:
            checkpoint.state.done = False  # a longer budget: the finished stage goes on, optimiser state and all

        cache_dir = Path(recipe.data.cache_dir) if recipe.data.cache_dir else output_dir / "cache"
        corpora = Corpora(recipe.data, Tokenize(tokenizer, eos), cache_dir, env.is_main,
                          lambda: distributed.barrier(env), pad_id=tokenizer.pad_token_id)
        stage = PretrainStage(recipe.stage, 0)
        stage.eos_id = eos if recipe.data.isolate_documents else None  # as distillation's stages (run.py)
        source = corpora.train_source(files, recipe.stage.seq_len, recipe.seed, 0, "data.train_files")
        corpora.check_batch(source, recipe.stage.batch_size, "stage.batch_size", "data.train_files")
        heldout = corpora.eval_batches(eval_files, recipe.stage.seq_len, recipe.data.eval_sequences)
        builtin = [HeldoutPerplexity(heldout, recipe.stage.batch_size // env.world_size)] if heldout is not None else []

        torch.manual_seed(recipe.seed)  # the initialisation, then dropout (a resume restores the checkpoint's state)
        model = AutoModelForCausalLM.from_config(config)
        if recipe.init is not None and checkpoint is None:
            load_init(model, recipe.init)
        model.to(env.device)
        model.config.use_cache = False
        if recipe.training.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        metrics = MetricsLog(output_dir, env.is_main, recipe.training.tensorboard)
        output_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is not None:
            distributed.on_main(env, lambda: metrics.truncate_after([stage.name], checkpoint.state.stage,
                                                                    checkpoint.state.step))
        trainer = Trainer(student=model, teacher=None, tokenizer=tokenizer, training=recipe.training, env=env,
                          output_dir=output_dir, identity=identity, fingerprint=fingerprint, metrics=metrics,
                          callbacks=callbacks, inputs=inputs)
        try:
            if checkpoint is None or not checkpoint.state.done:
                trainer.run_stage(stage, source, [*builtin, *evaluators], resume=checkpoint)
            else:
                ckpt.restore_model(model, checkpoint)
        finally:
            metrics.close()
        model.eval()
        final = output_dir / FINAL
        from hydrahead.distill.run import save_final

        save_final(model, tokenizer, final, env, torch.float32)
        return final
    finally:
        distributed.shutdown(env)


__all__ = ["FINAL", "extends", "load_init", "model_config", "pretrain"]
