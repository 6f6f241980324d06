"""A model's loss on a distillation run's held-out rows: what the run logs as eval_loss / eval_ppl for its
student, for any other model (the teacher, say), on the same rows (the first `data.eval_sequences` sequences of
the first stage's seq_len, from the recipe's eval_files in file order).

Usage: python experiments/heldout_rows.py recipe.yaml [--model DIR] [--stage align]
(docs/real_models.md section 7, "A longer CPU distillation": the teacher's 2.46 against the student's 3.14)
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

import torch


def main() -> None:
    from hydrahead import load_model, load_tokenizer
    from hydrahead.distill.data import Corpora, Tokenize, document_eos, resolve_files
    from hydrahead.distill.distributed import DistEnv
    from hydrahead.distill.evaluate import EvalContext, HeldoutPerplexity
    from hydrahead.distill.recipe import STAGE_NAMES, Recipe
    from hydrahead.distill.stages import STAGES, TrainModule

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--model", default=None, help="the model to score (default: the recipe's teacher)")
    p.add_argument("--stage", default=None, help="whose seq_len (default: the recipe's first stage)")
    args = p.parse_args()
    recipe = Recipe.from_yaml(args.recipe)
    if not recipe.data.eval_files:
        p.error("the recipe has no data.eval_files")
    configs = {name: getattr(recipe.stages, name) for name in STAGE_NAMES}
    name = args.stage or next(n for n, c in configs.items() if c is not None)
    stage = STAGES[name](configs[name], STAGE_NAMES.index(name))
    model_dir = args.model or recipe.teacher
    model, tokenizer = load_model(model_dir, "float32"), load_tokenizer(recipe.teacher)
    eos = document_eos(tokenizer, recipe.teacher)
    with tempfile.TemporaryDirectory() as cache:
        corpora = Corpora(recipe.data, Tokenize(tokenizer, eos), Path(cache), True, lambda: None,
                          pad_id=tokenizer.pad_token_id)
        rows = corpora.eval_batches(resolve_files(recipe.data.eval_files, "data.eval_files"), stage.config.seq_len,
                                    recipe.data.eval_sequences)
    stage.eos_id = eos if recipe.data.isolate_documents else None  # as the run's stages (distill/run.py)
    env = DistEnv(0, 1, 0, torch.device("cpu"), False)
    ctx = EvalContext(model, TrainModule(model), stage, 0, tokenizer, env, contextlib.nullcontext)
    metrics = HeldoutPerplexity(rows, stage.config.batch_size)(ctx)  # the run's own held-out evaluator
    print(f"{model_dir} on {len(rows)} held-out rows of {rows.shape[1]} tokens: eval_loss {metrics['eval_loss']:.3f}, "
          f"eval_ppl {metrics['eval_ppl']:.3f}")


if __name__ == "__main__":
    main()
