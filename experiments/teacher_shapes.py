"""Training throughput of candidate demo-teacher shapes (batch 16 x 256, AdamW, 2 threads), in interleaved rounds.

The shapes compared while choosing the teacher after run v5 (docs/history.md section 0a). The one shipped
since, run v6, is 4 x 16 query heads with 8 KV heads, hidden 128: not among them ("4x16 h128" has 4 KV heads).

Usage: python experiments/teacher_shapes.py   (about 2 minutes on 2 cores; run it on a quiet machine)
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# name -> (hidden, intermediate, query heads, KV heads); 4 layers, head_dim 16, vocabulary 2048 as the demo's
SHAPES = {"4x8 h128 (v4)": (128, 384, 8, 2), "4x16 h128": (128, 384, 16, 4), "4x24 h96 (v5)": (96, 288, 24, 6)}
BATCH, LENGTH, STEPS, ROUNDS = 16, 256, 5, 3


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options; --help
    torch.set_num_threads(2)
    models = {}
    for name, (hidden, intermediate, heads, kv) in SHAPES.items():
        config = LlamaConfig(vocab_size=2048, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=4,
                             num_attention_heads=heads, num_key_value_heads=kv, head_dim=16,
                             max_position_embeddings=4096, tie_word_embeddings=True)
        model = LlamaForCausalLM(config)
        models[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    ids = torch.randint(0, 2048, (BATCH, LENGTH))

    def step(model: LlamaForCausalLM, optimizer: torch.optim.Optimizer) -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for model, optimizer in models.values():  # warm-up
        step(model, optimizer)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(ROUNDS):
        for name, (model, optimizer) in models.items():
            started = time.time()
            for _ in range(STEPS):
                step(model, optimizer)
            rates[name].append(STEPS * BATCH * LENGTH / (time.time() - started))
    for name, values in rates.items():
        print(f"{name}: {min(values):.0f}-{max(values):.0f} tokens/s")


if __name__ == "__main__":
    main()
