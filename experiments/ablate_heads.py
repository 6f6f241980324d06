"""Teacher-forced NIAH accuracy with chosen heads mean-ablated, one set at a time, on the probes
`hydrahead validate-scores` uses for a scores file (its probe settings, seed + 1): which heads of a costly
random set do the damage (docs/real_models.md section 4).

Usage: python experiments/ablate_heads.py --model smollm2/ --scores attr.json --samples 6 --heads "5,1" "17,4" "17,2+5,1"
(a set is heads joined by +, each head layer,head)
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    from hydrahead import load_model, load_tokenizer
    from hydrahead.scoring import HeadScores, ProbeConfig, build_probes, head_means, teacher_forced_accuracy

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--scores", required=True, help="the scores file whose probe settings validate-scores used")
    p.add_argument("--samples", type=int, default=None, help="as validate-scores' --samples")
    p.add_argument("--heads", nargs="+", required=True, help="head sets: 'layer,head+layer,head'")
    args = p.parse_args()
    model, tokenizer = load_model(args.model, "float32"), load_tokenizer(args.model)
    saved = HeadScores.from_json(args.scores).metadata["probe_config"]
    config = ProbeConfig.from_dict({**saved, "seed": saved["seed"] + 1,
                                    **({"samples": args.samples} if args.samples else {})})
    probes = build_probes(tokenizer, config, model=model)
    means = head_means(model, probes)
    print(f"{len(probes)} probes of {config.context_length} tokens; nothing ablated: "
          f"{teacher_forced_accuracy(model, probes):.3f}", flush=True)
    for spec in args.heads:
        heads = [tuple(int(x) for x in h.split(",")) for h in spec.split("+")]
        start = time.perf_counter()
        accuracy = teacher_forced_accuracy(model, probes, heads, "mean", means)
        print(f"ablated {heads}: {accuracy:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
