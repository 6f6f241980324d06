"""The paper's patching score (receiver + sender, one round) for chosen heads of a real model, on a CPU.

A full patching pass over SmolLM2-135M (270 heads, 2k-token probes) takes hours on this machine; this scores
only the heads asked for, with the library's own functions (`receiver_effects` and `sender_effects` with
`heads=`): receiver scores for every head of `--receiver-layers`, the receiver set R as the top
`--receivers` of those (the library's default size, 5% of all heads; R is drawn from the scored heads only),
then one round of sender scores against R for `--sender-heads` and every head of `--sender-layers`. The
probes are the score file's own (its probe settings, rebuilt; `--samples N` builds a smaller set from the same
settings, not a subset: depths and needles depend on the number of samples). Unscored cells print as "-", and
the ranks are among the heads scored here (tied heads share the best rank). The question it was
written for (docs/real_models.md section 4): do the layer-17 heads that cost 29-33 NIAH points when ablated,
(17, 2), which attribution and the retrieval score put at 0, and (17, 4), score as receivers or senders?

Usage: python experiments/patching_subset.py --model smollm2/ --scores attr.json --receiver-layers 17-29 \\
    --sender-layers 10-17 --sender-heads 5,1 --out patching_subset.json
(`--report patching_subset.json --scores attr.json` prints the table of a saved run again.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch


def layer_range(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main() -> None:
    from hydrahead import HeadScores, load_model, load_tokenizer
    from hydrahead.scoring import ProbeConfig, Runner, build_probes
    from hydrahead.scoring.combine import capability_scores, combine, top_heads
    from hydrahead.scoring.patching import MIN_DELTA, receiver_effects, sender_effects

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model")
    p.add_argument("--scores", required=True, help="a score file: its probe settings, and its scores to compare")
    p.add_argument("--receiver-layers", help="e.g. 17-29")
    p.add_argument("--sender-layers", default="", help="e.g. 14-17")
    p.add_argument("--sender-heads", nargs="*", default=[], help="layer,head pairs, e.g. 5,1")
    p.add_argument("--receivers", type=int, default=0, help="size of R (default 5%% of all heads)")
    p.add_argument("--samples", type=int, default=0, help="pairs per sub-probe (default: the score file's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", help="where to save the result (JSON)")
    p.add_argument("--report", help="print the table of a saved result instead of scoring")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    if args.report:
        with open(args.report) as f:
            report(json.load(f), HeadScores.from_json(args.scores))
        return
    if not (args.out and args.model and args.receiver_layers):
        p.error("--model, --receiver-layers and --out are required to score")

    model, tok = load_model(args.model, "float32").eval(), load_tokenizer(args.model)
    reference = HeadScores.from_json(args.scores)
    config = ProbeConfig.from_dict(reference.metadata["probe_config"])
    if args.samples:
        config = ProbeConfig.from_dict({**config.to_dict(), "samples": args.samples})
    probes = build_probes(tok, config, model=model)
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    receiver_heads = [(l, h) for l in layer_range(args.receiver_layers) for h in range(H)]
    senders = [(l, h) for l in (layer_range(args.sender_layers) if args.sender_layers else []) for h in range(H)]
    senders += [tuple(int(x) for x in pair.split(",")) for pair in args.sender_heads]
    k = args.receivers or max(1, math.floor(0.05 * L * H + 0.5))  # patching_scores' receiver_fraction
    print(f"{len(probes)} probes of {config.context_length} tokens; receiver scores for {len(receiver_heads)} heads "
          f"(layers {args.receiver_layers}), sender scores for {len(senders)} heads against the top {k}", flush=True)

    P = len(probes)
    recv, send = np.full((P, L, H), np.nan), np.full((P, L, H), np.nan)
    start = time.perf_counter()
    with Runner(model) as runner:
        usable = []
        for i, probe in enumerate(probes):
            clean, corrupt = runner.record(probe), runner.record(probe, corrupted=True)
            if abs(clean.readout - corrupt.readout) < MIN_DELTA:
                continue
            recv[i] = receiver_effects(runner, probe, clean, corrupt, args.batch_size, heads=receiver_heads)
            usable.append(i)
            print(f"receiver scores, probe {i + 1}/{P}: {time.perf_counter() - start:.0f} s", flush=True)
        if not usable:
            sys.exit("no probe tells clean from corrupted apart: nothing to score")
        ranked = combine(capability_scores({"receiver": recv}, probes))
        scored = np.zeros((L, H), dtype=bool)
        scored[tuple(zip(*receiver_heads))] = True
        receivers = top_heads(np.where(scored, ranked, -np.inf), k)
        print("R (top by receiver score):", receivers, flush=True)
        for i in usable:
            clean, corrupt = runner.record(probes[i]), runner.record(probes[i], corrupted=True)
            send[i] = sender_effects(runner, probes[i], clean, corrupt, receivers, args.batch_size, heads=senders)
            print(f"sender scores, probe {i + 1}/{P}: {time.perf_counter() - start:.0f} s", flush=True)
    combined = combine(capability_scores({"receiver": recv, "sender": send}, probes))
    result = {"receivers": receivers, "senders": senders, "receiver_heads": receiver_heads, "usable": usable,
              "combined": combined.tolist(), "receiver_ie": np.nan_to_num(recv).tolist(),
              "sender_ie": np.nan_to_num(send).tolist(), "probe_config": config.to_dict(),
              "seconds": time.perf_counter() - start}
    with open(args.out, "w") as f:
        json.dump(result, f)
    report(result, reference)


def report(result: dict, reference) -> None:
    """The table: every head of R and every sender, by combined score; "-" where a score was not computed."""
    usable = result["usable"]
    recv, send = (np.asarray(result[key])[usable] for key in ("receiver_ie", "sender_ie"))
    combined = np.asarray(result["combined"])
    receivers = [tuple(x) for x in result["receivers"]]
    received, sent = {tuple(x) for x in result["receiver_heads"]}, {tuple(x) for x in result["senders"]}
    scored = received | sent
    here = {lh: 1 + sum(combined[o] > combined[lh] for o in scored) for lh in scored}  # ties share a rank
    values = reference.values
    rank = {lh: 1 + int((values > values[lh]).sum()) for lh in scored}

    def cell(values, lh, computed):
        return f"{values[:, lh[0], lh[1]].mean():.3f}" if computed else "-"

    print(f"{len(usable)} of {len(result['receiver_ie'])} probes usable, {result['seconds']:.0f} s; R = the top "
          f"{len(receivers)} by receiver score\n")
    print(f"| head | receiver IE (mean over probes) | sender IE | combined score | rank of the {len(scored)} scored "
          f"here | {reference.method} score (rank of {reference.values.size}) |")
    print("|---|---:|---:|---:|---:|---:|")
    for lh in sorted(set(receivers) | sent, key=lambda lh: -combined[lh]):
        print(f"| {lh}{' R' if lh in receivers else ''} | {cell(recv, lh, lh in received)} | {cell(send, lh, lh in sent)} "
              f"| {combined[lh]:.3f} | {here[lh]} | {reference.values[lh]:.3f} ({rank[lh]}) |")


if __name__ == "__main__":
    main()
