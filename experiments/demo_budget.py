"""Does a demo student retrieve if it gets more distillation than the default demo gives it?

Runs the default demo's steps for one teacher (corpus, patching scores, plans) into --out, then distils one
plan (--seed, default 0) with the demo's recipe, align and distill tokens multiplied by --budget, and prints greedy NIAH
at the training length (the demo's tasks, depths and samples) for the student and the teacher.

Usage: python experiments/demo_budget.py --teacher DIR --plan hydrahead-7:1 --budget 2 --out /tmp/budget
(DIR: an ordinary checkpoint directory, e.g. from `hydrahead demo --export-teacher`; about 3 minutes at
--budget 2 on 2 cores for the 96-head teacher of docs/history.md section 0a)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    import hydrahead.distill as distill
    from hydrahead import HeadPlan
    import hydrahead.eval as ev
    from hydrahead.demo.pipeline import Log, Teacher, build_corpus, recipe_for, score_and_plan
    from hydrahead.demo.scale import get_scale
    from hydrahead.demo.teacher_training import per_task
    from hydrahead.models.loading import load_model, load_tokenizer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, type=Path)
    p.add_argument("--plan", default="hydrahead-7:1")
    p.add_argument("--budget", type=float, default=2.0, help="multiplier of the demo's align and distill tokens")
    p.add_argument("--seed", type=int, default=0, help="distillation seed (the demo runs 0 and 1)")
    p.add_argument("--length", type=int, default=256, help="the teacher's training length")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args()

    log = Log()
    model, tokenizer = load_model(a.teacher, "float32"), load_tokenizer(a.teacher)
    teacher = Teacher(model, tokenizer, a.teacher, {}, a.length)
    base = get_scale("default")
    scale = get_scale("default", align_tokens=int(base.align_tokens * a.budget),
                      distill_tokens=int(base.distill_tokens * a.budget))
    build_corpus(a.out, teacher, scale, log)
    score_and_plan(a.out, teacher, scale, log)  # writes the plan files the recipe names
    recipe = recipe_for(a.out, teacher, a.plan, a.seed, scale, "cpu")
    final = Path(recipe["output_dir"]) / "final"
    if final.is_dir():  # rerun into the same --out: evaluate what is there
        log(f"{final} exists: evaluating it without distilling again")
    else:
        started = time.time()
        final = distill.run(recipe, teacher=model, tokenizer=tokenizer, plan=HeadPlan.from_json(recipe["plan"]))
        log(f"distilled {a.plan} with {a.budget}x the demo's align + distill tokens in {time.time() - started:.0f} s")
    records = ev.niah({"student": load_model(final), "teacher": model}, tokenizer, [a.length], scale.eval_depths,
                      tasks=list(scale.tasks), samples=scale.eval_samples, seed=0, progress=False)
    for label in ("student", "teacher"):
        print(label, per_task([r for r in records if r.model == label], list(scale.tasks)))


if __name__ == "__main__":
    main()
