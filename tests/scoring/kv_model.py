"""A tiny 2-layer Qwen3 trained in seconds on key-value recall (the "real mechanism" fixture).

Sequences are the library's own kv_recall probes ("f3 f1 k2 v7 f0 ... k2 ->", answer "v7"), with one
key-value pair per sequence: the model has to find the value among filler words and copy it. (With
several pairs, recall needs an induction circuit, which did not train within seconds on a 2-core CPU.)
"""

from __future__ import annotations

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from hydrahead.scoring import ProbeConfig, build_probes, kv_recall_words
from tests.toy_tokenizer import word_tokenizer

MIN_STEPS = 20
KV_CONFIG = ProbeConfig(template="kv_recall", capabilities=("single_key",), context_length=16, samples=32,
                        kv_keys=8, kv_values=16, kv_filler=8)


def train_kv_model(max_steps: int = 300, target: float = 0.97, seed: int = 0):
    """(model, tokenizer, steps, final batch accuracy): trains until `target` accuracy or `max_steps`."""
    tokenizer = word_tokenizer(kv_recall_words(KV_CONFIG))
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                         tie_word_embeddings=False)
    model = Qwen3ForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    accuracy, step = 0.0, 0
    for step in range(1, max_steps + 1):
        probes = build_probes(tokenizer, KV_CONFIG, seed=10_000 + step)  # fresh sequences every step
        ids = torch.tensor([p.clean_ids for p in probes])  # (B, T); the answer is one token
        answers = torch.tensor([p.answer[0] for p in probes])
        logits = model(input_ids=ids).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, answers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        accuracy = (logits.argmax(-1) == answers).float().mean().item()
        if step >= MIN_STEPS and accuracy >= target:
            break
    return model.eval(), tokenizer, step, accuracy
