"""Demo scales: how many probes, distillation tokens, seeds and evaluation prompts a run spends.

The teacher is the same at every scale (the shipped one, `hydrahead.demo.teacher`). `default` is sized
to finish within 20 minutes on a 2-core CPU; `tiny` is the smoke test (a minute); `gpu` is a larger run
for a CUDA machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from hydrahead.errors import HydraHeadError


@dataclass(frozen=True)
class DemoScale:
    name: str
    # distillation corpus: documents per kind (hydrahead.demo.teacher_data), seeds the teacher never saw
    documents: tuple[tuple[str, int], ...]
    # head scoring and its validation
    probe_samples: int  # probes per sub-probe (needle type x capability)
    validation_seeds: int  # random head sets ablated against the top-k
    # distillation, per plan and seed (the same for every plan)
    align_tokens: int
    distill_tokens: int
    long_tokens: int  # at 2x the training length
    distill_batch: int
    seeds: tuple[int, ...]  # every plan is distilled once per seed: the spread of a plan's scores
    # evaluation
    eval_multipliers: tuple[int, ...]
    eval_depths: tuple[float, ...]
    eval_samples: int
    ppl_documents: int
    tasks: tuple[str, ...] = ("single_number", "single_word", "multikey")
    # how the students' heads are built (HybridOptions preset): "exact" keeps the teacher's FA heads as they
    # are (RoPE, no gate or fusion norm). The paper preset's NoPE FA heads break this RoPE-trained teacher's
    # retrieval before any training (a full-FA conversion scores 0), and no CPU budget re-learns it
    # (docs/results.md section 2); `hydrahead demo --preset paper` runs it anyway.
    preset: str = "exact"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SCALES: dict[str, DemoScale] = {
    "tiny": DemoScale(
        name="tiny", documents=(("niah", 40), ("multiquery", 60), ("repeat", 20), ("code", 10)),
        probe_samples=1, validation_seeds=2, align_tokens=1_024, distill_tokens=1_024, long_tokens=1_024,
        distill_batch=4, seeds=(0,), eval_multipliers=(1, 2), eval_depths=(0.5,), eval_samples=1,
        ppl_documents=1, tasks=("single_number",),
    ),
    "default": DemoScale(
        name="default", documents=(("niah", 600), ("multiquery", 1500), ("repeat", 600), ("code", 60)),
        probe_samples=4, validation_seeds=5, align_tokens=65_536, distill_tokens=131_072, long_tokens=16_384,
        distill_batch=8, seeds=(0, 1), eval_multipliers=(1, 2, 4, 8), eval_depths=(0.0, 0.5, 1.0),
        eval_samples=2, ppl_documents=4,
    ),
    "gpu": DemoScale(
        name="gpu", documents=(("niah", 20_000), ("multiquery", 50_000), ("repeat", 20_000), ("code", 100_000)),
        probe_samples=8, validation_seeds=10, align_tokens=4_000_000, distill_tokens=16_000_000,
        long_tokens=2_000_000, distill_batch=32, seeds=(0, 1, 2), eval_multipliers=(1, 2, 4, 8, 16),
        eval_depths=(0.0, 0.25, 0.5, 0.75, 1.0), eval_samples=4, ppl_documents=16,
    ),
}


def get_scale(name: str, **overrides: Any) -> DemoScale:
    if name not in SCALES:
        raise HydraHeadError(f"unknown demo scale {name!r}; choose from {', '.join(SCALES)}")
    try:
        return replace(SCALES[name], **overrides)
    except TypeError as err:
        raise HydraHeadError(f"unknown demo setting in {sorted(overrides)}") from err
