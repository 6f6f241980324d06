"""The demo's teacher: a small Qwen3 (transformers' own `Qwen3ForCausalLM`) trained from scratch on CPU.

Several heads per layer and GQA, so that heads can specialise (a few become retrieval heads). Training is
plain next-token prediction on packed rows that never cut a document which fits in one (a retrieval
document cut in two leaves an answer without its needle, which teaches guessing). The result is cached
on disk, keyed by everything that determines it, so a second demo run reuses it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM


def teacher_config(vocab_size: int, *, hidden: int, layers: int, heads: int, kv_heads: int, head_dim: int,
                   max_positions: int) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
        max_position_embeddings=max_positions, tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


def pack(token_lists: list[list[int]], seq_len: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """Documents (each + EOS) in rows of `seq_len` tokens, (N, seq_len); pad fills the rest of a row.

    A document that fits in a row is never split: when it does not fit in what is left of the current row,
    it starts a new one. Longer documents (source files) are cut into full rows; their tail starts a row.
    """
    rows: list[list[int]] = []
    row: list[int] = []
    for tokens in token_lists:
        tokens = list(tokens) + [eos_id]
        while len(tokens) > seq_len:  # longer than a row: cut
            rows.append(tokens[:seq_len])
            tokens = tokens[seq_len:]
        if len(row) + len(tokens) > seq_len:
            rows.append(row + [pad_id] * (seq_len - len(row)))
            row = []
        row.extend(tokens)
    if row:
        rows.append(row + [pad_id] * (seq_len - len(row)))
    return torch.tensor(rows, dtype=torch.long).view(len(rows), seq_len)


def train_causal_lm(
    model: torch.nn.Module,
    data: torch.Tensor,
    *,
    pad_id: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    log: Callable[[int, float, float], None] | None = None,
) -> list[float]:
    """AdamW with warmup + cosine decay on random rows of `data` (N, T), no loss on `pad_id`; returns the loss per step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    losses, start = [], time.time()
    for step in range(steps):
        rows = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
        batch = data[rows]
        labels = batch.masked_fill(batch == pad_id, -100)
        loss = model(input_ids=batch, labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log is not None:
            log(step, loss.item(), (step + 1) * batch.numel() / (time.time() - start))
    model.eval()
    return losses


def new_teacher(config: Qwen3Config, seed: int) -> Qwen3ForCausalLM:
    with torch.random.fork_rng():  # seeded init without touching the caller's RNG state
        torch.manual_seed(seed)
        return Qwen3ForCausalLM(config)
