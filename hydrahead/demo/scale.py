"""Demo scales: how many probes, distillation tokens, seeds and evaluation prompts a run spends.

The teacher is the same at every scale (the shipped one, `hydrahead.demo.teacher`, unless `--teacher` names
another). `default` is sized to finish within 20 minutes on a 2-core CPU; `tiny` is the smoke test; `gpu` is a
larger run for a CUDA machine; `study` takes a pretrained `--teacher` through three plans on one GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from hydrahead.errors import HydraHeadError

RANDOM = "random-7:1"  # the baseline whose heads are drawn anew for every distillation seed
PLAN_NAMES = ("hydrahead-7:1", RANDOM, "fixed-per-layer-7:1", "layerwise-3:1", "layerwise-7:1", "all-gdn")


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
    # (docs/history.md section 0); `hydrahead demo --preset paper` runs it anyway.
    preset: str = "exact"
    # which plans are built and distilled (names of PLAN_NAMES; the teacher is always evaluated)
    plans: tuple[str, ...] = PLAN_NAMES
    # each packed document attends only to itself (data.isolate_documents): what a pretrained teacher needs;
    # the shipped teacher was trained on rows of packed documents that see each other
    isolate_documents: bool = False

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
    # a pretrained teacher (`--teacher`, e.g. SmolLM2-135M) on one GPU within minutes: three plans, one seed,
    # 1x-4x the distillation length (bench/gpu_real_model.sh; `--budget` scales the tokens)
    "study": DemoScale(
        name="study", documents=(("niah", 2_000), ("multiquery", 2_000), ("repeat", 500), ("code", 2_000)),
        probe_samples=6, validation_seeds=5, align_tokens=1_000_000, distill_tokens=2_000_000, long_tokens=250_000,
        distill_batch=16, seeds=(0,), eval_multipliers=(1, 2, 4), eval_depths=(0.0, 0.5, 1.0), eval_samples=2,
        ppl_documents=8, plans=("hydrahead-7:1", "random-7:1", "layerwise-3:1"), isolate_documents=True,
    ),
}


def get_scale(name: str, **overrides: Any) -> DemoScale:
    if name not in SCALES:
        raise HydraHeadError(f"unknown demo scale {name!r}; choose from {', '.join(SCALES)}")
    try:
        return replace(SCALES[name], **overrides)
    except TypeError as err:
        raise HydraHeadError(f"unknown demo setting in {sorted(overrides)}") from err


def with_budget(scale: DemoScale, budget: float) -> DemoScale:
    """`scale` with its align, distill and long-context tokens multiplied by `budget` (at least one step's worth
    is left to the trainer)."""
    if not (budget > 0 and math.isfinite(budget)):
        raise HydraHeadError(f"--budget must be a positive multiplier of the scale's tokens, got {budget}")
    return replace(scale, align_tokens=max(1, round(scale.align_tokens * budget)),
                   distill_tokens=max(1, round(scale.distill_tokens * budget)),
                   long_tokens=max(1, round(scale.long_tokens * budget)))


def with_plans(scale: DemoScale, names: str) -> DemoScale:
    """`scale` distilling only the comma-separated plans `names`."""
    plans = tuple(n.strip() for n in names.split(",") if n.strip())
    bad = [n for n in plans if n not in PLAN_NAMES]
    if bad or not plans:
        raise HydraHeadError(f"--plans: unknown plan(s) {bad or names!r}; choose from {', '.join(PLAN_NAMES)}")
    return replace(scale, plans=plans)
