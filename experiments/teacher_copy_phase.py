"""Does a pure-copy phase make a trained teacher copy? (a throwaway-sized check, kept so the number reruns)

Continues a teacher model directory (it is not written back) on packed rows of varying-distance copies of
code identifiers (a span of 8-40 identifiers written twice, then EOS), AdamW lr 1e-3, 16 x 256, 400 steps,
and prints every 100 steps `teacher_probe.copy_accuracy` (experiments/teacher_probe.py; first copy, second
copy) on 16-identifier spans and on 16-needle-word spans.

docs/history.md section 1b ran it on teacher run v3's final model, which is not in the tree:
experiments/teacher_runs/v3/README.md says how to retrain it and where git history keeps its checkpoint.
This is its own small loop, written before `hydrahead.distill.pretrain` could start from a trained model's
weights (`PretrainRecipe.init`).

Usage: python experiments/teacher_copy_phase.py MODEL_DIR   (e.g. /work/teacher_work_v3/run/main/final)
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

ROW, BATCH, STEPS, EVERY = 256, 16, 400, 100


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a teacher model directory (not written back)")
    path = p.parse_args().model

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling experiments/teacher_probe.py
    from teacher_probe import copy_accuracy

    from hydrahead.models.loading import load_model, load_tokenizer
    from hydrahead.demo.corpus import code_split
    from hydrahead.demo.teacher_recipe import load_recipe
    from hydrahead.demo.teacher_data import identifiers
    from hydrahead.needles import vocabulary

    torch.set_num_threads(2)
    tok, model = load_tokenizer(path), load_model(path, "float32").train()
    names = identifiers(code_split(load_recipe().corpus.code_bytes)[0])
    rng, pad = random.Random(0), tok.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    def row() -> list[int]:
        out: list[int] = []
        while True:
            span = tok(" " + " ".join(rng.choice(names) for _ in range(rng.randint(8, 40))))["input_ids"]
            doc = span + span + [tok.eos_token_id]
            if len(out) + len(doc) > ROW:
                return out + [pad] * (ROW - len(out))
            out += doc

    def probe(words: list[str]) -> tuple[float, float]:
        r = random.Random(7)
        model.eval()
        with torch.no_grad():
            first, second = copy_accuracy(model, tok, [" " + " ".join(r.choice(words) for _ in range(16))
                                                       for _ in range(16)], "")
        model.train()
        return round(first, 2), round(second, 2)

    start = time.time()
    for step in range(STEPS + 1):
        if step % EVERY == 0:
            print(step, "identifiers", probe(names), "needle words", probe(vocabulary()),
                  f"{time.time() - start:.0f}s", flush=True)
        if step == STEPS:
            break
        ids = torch.tensor([row() for _ in range(BATCH)])
        labels = ids[:, 1:].masked_fill(ids[:, 1:] == pad, -100)
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids).logits[:, :-1].transpose(1, 2), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


if __name__ == "__main__":
    main()
