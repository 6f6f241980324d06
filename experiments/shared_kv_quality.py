"""Does sharing GDN k/v within a GQA group (`HybridOptions.gdn_shared_kv`) cost distillation quality?

The speed side is `bench/inference.py` (the "+shared" models). This is the quality side, on the demo's
own ground: the shipped demo teacher (today 4 layers x 16 query heads, 8 KV heads: 2 query heads per
group), the default demo scale's corpus, recipe and token budget, its HydraHead 7:1 plan and all-GDN, each
distilled with per-head GDN k/v (the default) and with shared k/v, once per seed; then the demo's NIAH
(generated answers, 1x-8x the training length) and held-out perplexity, and each run's last
distillation-stage loss.

The table in docs/benchmarks.md ("Shared GDN k/v in quality") was measured on the teacher shipped then
(teacher run v4: 4 layers x 8 query heads, 2 KV heads, 4 query heads per group), before the default scale's
align and distill tokens were doubled (commit 3f4de44): a rerun today measures another teacher and budget.

Usage: python experiments/shared_kv_quality.py [--out DIR] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/shared_kv_quality")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--plans", default="hydrahead-7:1,all-gdn")
    args = parser.parse_args()

    from hydrahead import HeadPlan, distill
    from hydrahead.demo.pipeline import Log, build_corpus, evaluate, get_teacher, recipe_for, score_and_plan
    from hydrahead.demo.report import niah_table, plan_results
    from hydrahead.demo.scale import get_scale
    from hydrahead.distill.metrics import read_metrics
    from hydrahead.models.loading import load_model
    from hydrahead.utils.io import write_json
    from hydrahead.utils.memory import keep_freed_memory

    torch.set_num_threads(2)
    keep_freed_memory()
    out, log = Path(args.out), Log()
    scale = get_scale("default", seeds=tuple(int(s) for s in args.seeds.split(",")))
    teacher = get_teacher(out, retrain=False, device="cpu", log=log)
    build_corpus(out, teacher, scale, log)
    _, _, plans, _ = score_and_plan(out, teacher, scale, log)
    names = [n for n in args.plans.split(",") if n in plans]

    models, losses = {"teacher": teacher.model}, {}
    for name in names:
        for shared in (False, True):
            label = f"{name}{'+shared' if shared else ''}"
            for seed in scale.seeds:
                recipe = recipe_for(out, teacher, name, seed, scale, "cpu")
                recipe["hybrid"]["gdn_shared_kv"] = shared
                recipe["output_dir"] = str(out / "runs" / f"{label.replace(':', 'to')}-seed{seed}")
                log(f"distilling {label}, seed {seed}")
                final = distill.run(recipe, teacher=teacher.model, tokenizer=teacher.tokenizer,
                                    plan=HeadPlan.from_json(recipe["plan"]))  # random 7:1: this seed's draw
                records = [r for r in read_metrics(recipe["output_dir"]) if r.get("stage") == "distill" and "loss" in r]
                losses[f"{label}/seed{seed}"] = records[-1]["loss"] if records else float("nan")
                model = load_model(final, "float32")
                models[f"{label}/seed{seed}"] = model
                log(f"  {sum(p.numel() for p in model.parameters()) / 1e6:.3f}M parameters, "
                    f"last distill loss {losses[f'{label}/seed{seed}']:.3f}")

    records, ppl = evaluate(out, models, teacher.tokenizer, teacher.train_length, scale, log)
    lengths = sorted({r.length for r in records})
    table = niah_table(records, list(models), lengths)
    results = plan_results(table, {r.model: r.overall_ppl for r in ppl})
    params = {label: sum(p.numel() for p in m.parameters()) for label, m in models.items()}
    print("| model | parameters | NIAH " + " | ".join(str(n) for n in lengths)
          + " | NIAH mean (per seed) | held-out ppl | last distill loss |")
    print("|---" * (len(lengths) + 5) + "|")
    summary = {}
    for plan, res in results.items():
        label = next(k for k in models if k.split("/seed")[0] == plan)
        seed_losses = [v for k, v in losses.items() if k.split("/seed")[0] == plan]
        loss = f"{sum(seed_losses) / len(seed_losses):.3f}" if seed_losses else "-"
        cells = " | ".join(f"{sum(v) / len(v):.2f}" for v in res.per_length.values())
        print(f"| {plan} | {params[label] / 1e6:.3f}M | {cells} | {res.mean:.3f} "
              f"({', '.join(f'{v:.2f}' for v in res.overall)}) | {sum(res.ppl) / len(res.ppl):.2f} | {loss} |")
        summary[plan] = {"niah_per_length": res.per_length, "niah_per_seed": res.overall, "ppl": res.ppl,
                         "last_distill_loss": seed_losses, "parameters": params[label]}
    write_json(out / "summary.json", summary)


if __name__ == "__main__":
    main()
