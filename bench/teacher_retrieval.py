"""Does a from-scratch teacher learn needle retrieval on this machine? The demo teacher's bottleneck, isolated.

Trains a Qwen3-architecture model (the demo teacher's shape by default) on nothing but the evaluation's
single-needle prompts (`single_number`, `single_word`) at a short length, each prompt followed by its
answer, one or more whole prompts per row (never cut). The loss is next-token cross-entropy with the
answer tokens weighted by `--answer-weight` (0 for the rest: `--lm-weight 0` trains on answers only).
Every `--every` steps it prints the teacher-forced accuracy of the answer tokens on held-out prompts:
digits (chance 0.10: the needle's digits must be copied) and the whole-word values (chance ~0.02). At the
end, greedy NIAH scores at the training length, as `hydrahead eval niah` computes them.

Usage:
  python bench/teacher_retrieval.py                          # demo teacher shape, 200 steps
  python bench/teacher_retrieval.py --layers 2 --hidden 64 --heads 4 --lm-weight 0
Prints one line per report step and a final summary line.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from hydrahead.demo.corpus import stdlib_texts
from hydrahead.demo.retrieval_docs import TRAIN_SEED_OFFSET
from hydrahead.demo.teacher import new_teacher, pack, teacher_config
from hydrahead.demo.tokenizer import train_tokenizer
from hydrahead.eval.tasks import make_example
from hydrahead.scoring.haystack import vocabulary

TASKS = ("single_number", "single_word")


def examples(tokenizer, count: int, length: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) pairs; the answer is " value." as the demo's training documents write it."""
    rng, out = random.Random(seed), []
    for i in range(count):
        ex = make_example(rng.choice(TASKS), tokenizer, length, depth=rng.random(), sample=i, seed=seed)
        out.append((list(ex.input_ids), tokenizer(" " + ex.answers[0] + ".")["input_ids"]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=160, help="prompt + answer tokens")
    p.add_argument("--row", type=int, default=256, help="tokens per training row")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--answer-weight", type=float, default=10.0)
    p.add_argument("--lm-weight", type=float, default=1.0)
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    start = time.time()

    tokenizer = train_tokenizer(stdlib_texts(2_000_000), 2048, whole_words=vocabulary())
    train = examples(tokenizer, 4000, a.length, TRAIN_SEED_OFFSET)
    held = examples(tokenizer, 64, a.length, TRAIN_SEED_OFFSET + 1)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    marker = len(tokenizer)  # answer tokens are tagged with ids >= marker while packing, then untagged
    rows = pack([q + [t + marker for t in ans] for q, ans in train], a.row, eos, pad)
    is_answer = rows >= marker
    rows = rows.masked_fill(is_answer, 0) + torch.where(is_answer, rows - marker, 0)
    weights = torch.where(is_answer, a.answer_weight, a.lm_weight).masked_fill(rows == pad, 0.0)

    config = teacher_config(len(tokenizer), hidden=a.hidden, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads,
                            head_dim=16, max_positions=16 * a.row)
    model = new_teacher(config, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    digits = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    generator = torch.Generator().manual_seed(0)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {len(rows)} rows of {a.row}, "
          f"{int(is_answer.sum())} answer tokens", flush=True)

    @torch.no_grad()
    def accuracy() -> tuple[float, float]:
        model.eval()
        hit = {True: [], False: []}
        for prompt, answer in held:
            ids = torch.tensor([prompt + answer])
            pred = model(ids).logits[0, len(prompt) - 1: -1].argmax(-1).tolist()
            for p_, t in zip(pred, answer):
                if t in digits or tokenizer.decode([t]).strip() in vocabulary():
                    hit[t in digits].append(p_ == t)
        model.train()
        return tuple(sum(h) / max(1, len(h)) for h in (hit[True], hit[False]))

    model.train()
    for step in range(1, a.steps + 1):
        pick = torch.randint(0, len(rows), (a.batch,), generator=generator)
        batch, w = rows[pick], weights[pick][:, 1:].flatten()
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].flatten(0, 1)
        loss = (F.cross_entropy(logits, batch[:, 1:].flatten(), reduction="none") * w).sum() / w.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % a.every == 0 or step == a.steps:
            digit_acc, word_acc = accuracy()
            print(f"[{time.time() - start:5.0f}s] step {step:4d}  loss {loss.item():.3f}  answer digits "
                  f"{digit_acc:.2f}  word values {word_acc:.2f}", flush=True)

    import hydrahead.eval as ev

    model.eval()
    model.generation_config.eos_token_id = None
    records = ev.niah({"teacher": model}, tokenizer, [a.length], [0.0, 0.5, 1.0], tasks=list(TASKS), samples=8,
                      seed=0, progress=False)
    summary = {t: 100 * sum(r.score for r in records if r.task == t) / 24 for t in TASKS}
    print("NIAH at the training length: " + ", ".join(f"{t} {s:.1f}" for t, s in summary.items()))


if __name__ == "__main__":
    main()
