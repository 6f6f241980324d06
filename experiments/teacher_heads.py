"""Which of the shipped demo teacher's heads retrieval needs, and what conversion does to it before training.

On the demo's own probes (the default scale's probe settings, the validation seed), teacher-forced NIAH
accuracy (`hydrahead.scoring.teacher_forced_accuracy`):
  1. each head mean-ablated alone (the heads that cost the most);
  2. the top-k patching-scored heads ablated, k = 1..4, against k random other heads (5 seeds);
  3. the teacher converted, with no training, under the exact and the paper presets: every head FA, and
     the demo's hydrahead-7:1 plan (constrained global top 1/8 of the heads, at least one FA head per layer).

It runs on whatever teacher the package ships. docs/history.md quotes it for the teachers shipped then:
section 0 for teacher run v4 (4 x 8 heads: top-4 for 7:1, about a minute on 2 cores), section 0a for run v5
(4 x 24 heads, commit cd8c07c). No doc quotes it for the teacher shipped now, run v6 (4 x 16 query heads,
8 KV heads).

Usage: python experiments/teacher_heads.py
"""

from __future__ import annotations

import argparse
import copy
import random

import torch


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options; --help
    import hydrahead
    from hydrahead import HeadPlan, HybridOptions
    from hydrahead.demo.pipeline import NEEDLE_TYPES
    from hydrahead.demo.scale import SCALES
    from hydrahead.demo.teacher import load_teacher
    from hydrahead.scoring import ProbeConfig, build_probes, teacher_forced_accuracy, score_heads

    torch.set_num_threads(2)
    model, tokenizer = load_teacher()
    config = ProbeConfig(samples=SCALES["default"].probe_samples, context_length=256, needle_types=NEEDLE_TYPES)
    scores = score_heads(model, tokenizer, method="patching", probes=build_probes(tokenizer, config),
                         probe_config=config, progress=False)
    probes = build_probes(tokenizer, config, seed=config.seed + 1)
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    every = [(layer, head) for layer in range(layers) for head in range(heads)]
    base = teacher_forced_accuracy(model, probes)
    print(f"{len(probes)} probes, teacher-forced NIAH accuracy {base:.3f}")
    print("patching top-6:", ", ".join(f"{h} {scores.values[h[0]][h[1]]:.3f}" for h in scores.top_k(6)))

    alone = sorted(((teacher_forced_accuracy(model, probes, heads=[h]), h) for h in every))
    print("1. one head ablated, the six that cost most:", ", ".join(f"{h} {a:.3f}" for a, h in alone[:6]))

    print("2. k | top-k ablated | k random others (mean of 5 seeds)")
    for k in (1, 2, 3, 4):
        top = scores.top_k(k)
        rest = [h for h in every if h not in top]
        rand = [teacher_forced_accuracy(model, probes, heads=random.Random(s).sample(rest, k)) for s in range(5)]
        print(f"   {k} | {teacher_forced_accuracy(model, probes, heads=top):.3f} | {sum(rand) / len(rand):.3f}")

    print("3. converted, no training")
    calibration = torch.tensor([probes[0].clean_ids])
    plans = {"every head FA": HeadPlan.full(model.config),
             "hydrahead-7:1": HeadPlan.from_scores(scores, ratio="7:1", min_per_layer=1, config=model.config)}
    for name, plan in plans.items():
        for preset in ("exact", "paper"):
            options = HybridOptions.preset(preset, **({"train_length": 256} if preset == "paper" else {}))
            hybrid = hydrahead.convert(copy.deepcopy(model), plan, options, calibration=calibration).eval()
            print(f"   {name}, {preset} preset: {teacher_forced_accuracy(hybrid, probes):.3f}")


if __name__ == "__main__":
    main()
