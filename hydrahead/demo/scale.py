"""Demo scales: how big the teacher, the probes, the training budgets and the evaluation grid are.

`default` is sized to finish within about 20 minutes on a 2-core CPU; `tiny` is the smoke test
(seconds); `gpu` is a larger run for a CUDA machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from hydrahead.errors import HydraHeadError


@dataclass(frozen=True)
class DemoScale:
    name: str
    # corpus and tokenizer
    corpus_bytes: int  # standard-library source text
    retrieval_docs: int  # synthetic key-value retrieval documents
    vocab_size: int
    # teacher (Qwen3 architecture)
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    train_length: int  # teacher and distillation sequence length; evaluation goes to 8x this
    teacher_steps: int
    teacher_batch: int
    teacher_lr: float
    # head scoring
    probe_samples: int  # probes per sub-probe (needle type x capability)
    # distillation, per plan (same for every plan)
    align_tokens: int
    distill_tokens: int
    long_tokens: int  # at 2x train_length
    distill_batch: int
    # evaluation
    eval_multipliers: tuple[int, ...]
    eval_depths: tuple[float, ...]
    eval_samples: int
    ppl_documents: int
    tasks: tuple[str, ...] = ("single_number", "single_word", "multikey")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SCALES: dict[str, DemoScale] = {
    "tiny": DemoScale(
        name="tiny", corpus_bytes=200_000, retrieval_docs=60, vocab_size=512,
        hidden=64, layers=4, heads=8, kv_heads=2, head_dim=16, train_length=256,
        teacher_steps=4, teacher_batch=4, teacher_lr=3e-3, probe_samples=1,
        align_tokens=1_536, distill_tokens=1_536, long_tokens=1_536, distill_batch=4,
        eval_multipliers=(1, 2), eval_depths=(0.5,), eval_samples=1, ppl_documents=1,
        tasks=("single_number",),
    ),
    "default": DemoScale(
        name="default", corpus_bytes=2_000_000, retrieval_docs=2_000, vocab_size=2048,
        hidden=128, layers=6, heads=16, kv_heads=4, head_dim=16, train_length=256,
        teacher_steps=320, teacher_batch=16, teacher_lr=3e-3, probe_samples=3,
        align_tokens=36_864, distill_tokens=73_728, long_tokens=18_432, distill_batch=8,
        eval_multipliers=(1, 2, 4, 8), eval_depths=(0.0, 0.5, 1.0), eval_samples=2, ppl_documents=4,
    ),
    "gpu": DemoScale(
        name="gpu", corpus_bytes=20_000_000, retrieval_docs=40_000, vocab_size=8192,
        hidden=512, layers=8, heads=16, kv_heads=4, head_dim=32, train_length=1024,
        teacher_steps=4000, teacher_batch=32, teacher_lr=1e-3, probe_samples=8,
        align_tokens=20_000_000, distill_tokens=50_000_000, long_tokens=10_000_000, distill_batch=16,
        eval_multipliers=(1, 2, 4, 8), eval_depths=(0.0, 0.25, 0.5, 0.75, 1.0), eval_samples=4,
        ppl_documents=16,
    ),
}


def get_scale(name: str, **overrides: Any) -> DemoScale:
    if name not in SCALES:
        raise HydraHeadError(f"unknown demo scale {name!r}; choose from {', '.join(SCALES)}")
    try:
        return replace(SCALES[name], **overrides)
    except TypeError as err:
        raise HydraHeadError(f"unknown demo setting in {sorted(overrides)}") from err
