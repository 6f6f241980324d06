"""Sender attribution against the patching sender score, on a real model (docs/real_models.md section 4).

`sender_attribution_effects` (hydrahead/scoring/attribution.py) linearises the paper's one-step path patching
(`sender_effects`): every head's sender effect from one clean backward plus one per receiver layer, per probe,
instead of one patched run per head. This compares the two on the probes and the receiver set R of a saved `patching_subset.py` run: for
each sender that run scored, the mean sender IE over the usable probes, patching against attribution (Pearson
and Spearman over heads, the top heads of each), and the attribution ranks of every head of the model.

Usage: python experiments/sender_attribution.py --model smollm2/ --patching patching_subset.json \\
    [--out sender_attribution.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def ranks(values: np.ndarray) -> np.ndarray:
    """Rank 1 = largest; ties share the best rank (for the table; correlations use the package's `spearman`)."""
    flat = values.ravel()
    return np.array([1 + int((flat > v).sum()) for v in flat]).reshape(values.shape)


def main() -> None:
    from hydrahead import load_model, load_tokenizer
    from hydrahead.scoring import ProbeConfig, Runner, build_probes
    from hydrahead.scoring.attribution import sender_attribution_effects
    from hydrahead.scoring.validate import spearman

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--patching", required=True, help="patching_subset.py's saved result (its probes, R and scores)")
    p.add_argument("--out", help="save the per-probe attribution effects (JSON)")
    args = p.parse_args()

    saved = json.load(open(args.patching))
    model, tok = load_model(args.model, "float32").eval(), load_tokenizer(args.model)
    config = ProbeConfig.from_dict(saved["probe_config"])
    probes = build_probes(tok, config, model=model)
    receivers = [tuple(x) for x in saved["receivers"]]
    usable = saved["usable"]
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    attributed = np.zeros((len(probes), L, H))
    start = time.perf_counter()
    with Runner(model) as runner:
        for i in usable:
            attributed[i] = sender_attribution_effects(runner, probes[i], receivers)
            print(f"probe {i + 1}/{len(probes)}: {time.perf_counter() - start:.0f} s", flush=True)
    seconds = time.perf_counter() - start
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"receivers": receivers, "usable": usable, "sender_attribution": attributed.tolist(),
                       "seconds": seconds}, f)

    patched = np.asarray(saved["sender_ie"])[usable].mean(0)  # (L, H), 0 where not scored
    mean_attr = attributed[usable].mean(0)
    senders = [tuple(x) for x in saved["senders"]]
    idx = tuple(zip(*senders))
    a, b = patched[idx], mean_attr[idx]
    per_probe = [float(np.corrcoef(np.asarray(saved["sender_ie"])[i][idx], attributed[i][idx])[0, 1]) for i in usable]
    print(f"\n{len(usable)} probes, R = {len(receivers)} receivers, {seconds:.0f} s "
          f"({seconds / len(usable):.1f} s per probe)")
    print(f"over the {len(senders)} senders patching scored: Pearson {np.corrcoef(a, b)[0, 1]:.3f}, Spearman "
          f"{spearman(a, b):.3f}; per probe, Pearson {np.median(per_probe):.3f} median "
          f"({min(per_probe):.3f} to {max(per_probe):.3f})")
    rank_all = ranks(mean_attr)
    order = sorted(senders, key=lambda lh: -patched[lh])
    print("\n| head | patching sender IE | rank (of the scored) | attribution sender IE | rank of the scored | "
          f"rank of all {L * H} |")
    print("|---|---:|---:|---:|---:|---:|")
    rp, ra = ranks(a), ranks(b)
    where = {lh: j for j, lh in enumerate(senders)}
    for lh in order[:12]:
        j = where[lh]
        print(f"| {lh} | {patched[lh]:.3f} | {rp[j]} | {mean_attr[lh]:.3f} | {ra[j]} | {rank_all[lh]} |")
    print(f"\nattribution's top 10 senders of all {L * H} heads:",
          sorted(((l, h) for l in range(L) for h in range(H)), key=lambda lh: -mean_attr[lh])[:10])


if __name__ == "__main__":
    main()
