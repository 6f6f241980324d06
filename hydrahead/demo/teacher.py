"""The demo's teacher: a small Qwen3 (transformers' own `Qwen3ForCausalLM`) trained from scratch on CPU.

Several heads per layer and GQA, so that heads can specialise (a few become retrieval heads). Training is
plain next-token prediction on packed sequences; the result is cached on disk keyed by everything that
determines it, so a second demo run reuses it.
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


def pack(token_lists: list[list[int]], seq_len: int, eos_id: int) -> torch.Tensor:
    """Concatenate documents with EOS between them and cut into rows of `seq_len` tokens: (N, seq_len)."""
    flat: list[int] = []
    for tokens in token_lists:
        flat.extend(tokens)
        flat.append(eos_id)
    rows = len(flat) // seq_len
    return torch.tensor(flat[: rows * seq_len], dtype=torch.long).view(rows, seq_len)


def train_causal_lm(
    model: torch.nn.Module,
    data: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    log: Callable[[int, float, float], None] | None = None,
) -> list[float]:
    """AdamW with warmup + cosine decay on random rows of `data` (N, T); returns the loss per step."""
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
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
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
