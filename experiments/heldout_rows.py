"""A model's loss on a distillation run's held-out rows: what the run logs as eval_loss / eval_ppl for its
student, for any other model (the teacher, say), on the same rows (the first `data.eval_sequences` sequences of
the first stage's seq_len, from the recipe's eval_files in file order).

Usage: python experiments/heldout_rows.py recipe.yaml [--model DIR] [--stage align]
(docs/real_models.md section 7, "A longer CPU distillation": the teacher's 2.46 against the student's 3.14)
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch


def main() -> None:
    from hydrahead import load_model, load_tokenizer
    from hydrahead.distill.data import Corpora, Tokenize, document_eos, resolve_files
    from hydrahead.distill.recipe import STAGE_NAMES, Recipe

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--model", default=None, help="the model to score (default: the recipe's teacher)")
    p.add_argument("--stage", default=None, help="whose seq_len (default: the recipe's first stage)")
    args = p.parse_args()
    recipe = Recipe.from_yaml(args.recipe)
    if not recipe.data.eval_files:
        p.error("the recipe has no data.eval_files")
    stages = {name: getattr(recipe.stages, name) for name in STAGE_NAMES}
    stage = stages[args.stage] if args.stage else next(s for s in stages.values() if s is not None)
    model_dir = args.model or recipe.teacher
    model, tokenizer = load_model(model_dir, "float32"), load_tokenizer(recipe.teacher)
    eos = document_eos(tokenizer, recipe.teacher)
    with tempfile.TemporaryDirectory() as cache:
        corpora = Corpora(recipe.data, Tokenize(tokenizer, eos), Path(cache), True, lambda: None,
                          pad_id=tokenizer.pad_token_id)
        rows = corpora.eval_batches(resolve_files(recipe.data.eval_files, "data.eval_files"), stage.seq_len,
                                    recipe.data.eval_sequences)
    with torch.no_grad():  # every row is full (no padding): each row's mean is over the same number of targets
        loss = sum(model(input_ids=row[None], labels=row[None]).loss.item() for row in rows) / len(rows)
    print(f"{model_dir} on {len(rows)} held-out rows of {rows.shape[1]} tokens: eval_loss {loss:.3f}, "
          f"eval_ppl {math.exp(loss):.3f}")


if __name__ == "__main__":
    main()
