"""Validation of head scores, built into the library: do the top heads matter, and do methods agree?

- Ablation check: NIAH accuracy (exact match of the teacher-forced answer, i.e. what greedy decoding
  would produce) of the model as is, with its top-k scored heads ablated, and with k random heads
  ablated for several seeds. Random heads are drawn from the heads outside the top-k, so the check
  compares the ranking's choice against other heads (ours).
- Agreement: Spearman rank correlation over all heads and Jaccard overlap of the top-K sets between
  each other method and `patching` (the reference, docs/method.md section 3).
"""

from __future__ import annotations

import contextlib

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hydrahead.scoring.ablate import ablate, head_means
from hydrahead.errors import ScoringError
from hydrahead.scoring.probes import Probe, batches_by_length, check_probe_ids
from hydrahead.scoring.readout import exact_match, unsolved_note
from hydrahead.scoring.scores import HeadScores
from hydrahead.utils.io import write_json
from hydrahead.utils.units import counted


@torch.no_grad()
def teacher_forced_accuracy(model: nn.Module, probes: Sequence[Probe], heads: Sequence[tuple[int, int]] = (),
                            mode: str = "mean", means: Sequence[torch.Tensor] | None = None,
                            bar: tqdm | None = None) -> float:
    """Fraction of probes whose whole answer the model gets right, teacher-forced (the argmax at every
    answer position, what greedy decoding would produce; `hydrahead.eval.niah` instead generates), with
    `heads` ablated (mean: over `means`, default the probes' own clean prompts). Probes of one length run
    as one batch."""
    if not probes:  # the fraction of none
        raise ScoringError("teacher_forced_accuracy needs at least one probe")
    device = next(model.parameters()).device
    if heads and mode == "mean" and means is None:
        means = head_means(model, probes)
    correct = 0
    with ablate(model, heads, mode, means=means) if heads else contextlib.nullcontext():  # any model when none
        for batch in batches_by_length(probes):
            ids = torch.tensor([p.clean_ids for p in batch], device=device)  # (B, T)
            logits = model(input_ids=ids, use_cache=False).logits  # (B, T, V)
            for row, probe in enumerate(batch):
                answer = torch.tensor(probe.answer, device=device)
                correct += int(exact_match(logits[row:row + 1, probe.readout_positions], answer)[0])
            if bar is not None:
                bar.update(len(batch))
    return correct / len(probes)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (starts + (counts - 1) / 2)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation of two score arrays of one shape (None when one of them is constant)."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def top_k_jaccard(a: HeadScores, b: HeadScores, k: int) -> float:
    """|top_k(a) & top_k(b)| / |top_k(a) | top_k(b)|."""
    sa, sb = set(a.top_k(k)), set(b.top_k(k))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


@dataclass
class ValidationReport:
    """What `validate_scores` measured. Heads are [layer, head] pairs."""

    method: str
    top_k: int
    mode: str
    num_probes: int
    accuracy: float  # nothing ablated
    top_heads: list[list[int]]
    accuracy_top: float  # top-k heads ablated
    random_heads: list[list[list[int]]]  # one set per seed
    accuracy_random: list[float]
    seeds: list[int]
    agreement: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> spearman, jaccard, against, senders (of each)
    layer_similarity: list[list[float]] | None = None

    @property
    def accuracy_random_mean(self) -> float:
        return float(np.mean(self.accuracy_random)) if self.accuracy_random else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy_random_mean": self.accuracy_random_mean}

    def to_json(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    def table(self) -> str:
        """Markdown tables: ablation accuracies, then method agreement."""
        rows = [
            f"NIAH accuracy on {counted(self.num_probes, 'probe')}, {self.mode}-ablating k={self.top_k} heads "
            f"({self.method} scores)",
            "",
            "| heads ablated | accuracy |",
            "|---|---|",
            f"| none | {self.accuracy:.3f} |",
            f"| top-{self.top_k} | {self.accuracy_top:.3f} |",
        ]
        rows += [f"| random-{self.top_k} (seed {s}) | {a:.3f} |" for s, a in zip(self.seeds, self.accuracy_random)]
        if self.accuracy_random:
            rows.append(f"| random-{self.top_k} (mean) | {self.accuracy_random_mean:.3f} |")
        if note := unsolved_note(self.accuracy, "ablated", "the ablation check says little"):
            rows += ["", note]
        if self.agreement:
            rows += ["", f"| method | vs | Spearman | top-{self.top_k} Jaccard |", "|---|---|---|---|"]
            def label(name: str, senders: bool | None) -> str:
                return f"{name} (receiver term alone)" if senders is False else name

            for name, a in self.agreement.items():
                rho = "n/a" if a["spearman"] is None else f"{a['spearman']:.3f}"
                rows.append(f"| {label(name, a.get('senders'))} | {label(a['against'], a.get('against_senders'))} "
                            f"| {rho} | {a['jaccard']:.3f} |")
        return "\n".join(rows)


def agreement(scores: Mapping[str, HeadScores], k: int, reference: str = "patching") -> dict[str, dict[str, Any]]:
    """Spearman and top-k Jaccard of every method against `reference` (or against the first one if absent)."""
    names = list(scores)
    if not names:
        return {}
    ref = reference if reference in scores else names[0]
    out = {}
    for name in names:
        if name == ref:
            continue
        a, b = scores[name], scores[ref]
        if a.values.shape != b.values.shape:
            raise ScoringError(f"cannot compare {name} scores of shape {a.values.shape} with {ref} scores of shape {b.values.shape}")
        out[name] = {"against": ref, "spearman": spearman(a.values, b.values), "jaccard": top_k_jaccard(a, b, k),
                     "senders": a.senders, "against_senders": b.senders}
    return out


def check_top_k(top_k: int, heads: int, name: str = "top_k") -> None:
    """ScoringError unless `top_k` heads can be ablated with as many other heads left to draw each random set
    from: at most half the model's `heads`."""
    if top_k > heads // 2:
        raise ScoringError(f"{name} {top_k}: the model has {heads} heads, so at most {heads // 2} can be ablated "
                           "with as many other heads left to draw the random sets from")


def validate_scores(model: nn.Module, probes: Sequence[Probe], scores: HeadScores, top_k: int = 8,
                    seeds: Sequence[int] = (0, 1, 2), mode: str = "mean",
                    compare: Mapping[str, HeadScores] | None = None, progress: bool = False) -> ValidationReport:
    """Ablate the top-k heads of `scores` and k random other heads (one set per seed); compare methods.

    compare:  other methods' scores of the same model (name -> scores), for the agreement table.
    progress: a progress bar (with an ETA) over every probe forward, means included.
    """
    scores.check_config(model.config)
    if not probes:
        raise ScoringError("validation needs at least one probe")
    check_probe_ids(probes, model)
    check_top_k(top_k, scores.values.size)
    if scores.method in (compare or {}):  # it would replace the scores being validated in the agreement table
        raise ScoringError(f"compare holds {scores.method} scores, the method of the scores being validated: the "
                           "agreement table has one row per method; give other methods' scores")
    top = scores.top_k(top_k)
    others = [(l, h) for l in range(scores.num_layers) for h in range(scores.num_heads) if (l, h) not in set(top)]
    randoms = [sorted(random.Random(seed).sample(others, top_k)) for seed in seeds]
    runs = 2 + len(randoms)  # nothing, top-k, each random set
    with tqdm(total=len(probes) * (runs + (mode == "mean")), desc="ablation", unit="probe", disable=not progress) as bar:
        means = head_means(model, probes) if mode == "mean" else None
        bar.update(len(probes) if means is not None else 0)
        accuracy = teacher_forced_accuracy(model, probes, bar=bar)
        accuracy_top = teacher_forced_accuracy(model, probes, top, mode, means, bar=bar)
        accuracy_random = [teacher_forced_accuracy(model, probes, heads, mode, means, bar=bar) for heads in randoms]
    all_scores = {scores.method: scores, **{name: s.check_config(model.config) for name, s in (compare or {}).items()}}
    return ValidationReport(
        method=scores.method, top_k=top_k, mode=mode, num_probes=len(probes), accuracy=accuracy,
        top_heads=[list(h) for h in top], accuracy_top=accuracy_top,
        random_heads=[[list(h) for h in r] for r in randoms], accuracy_random=accuracy_random, seeds=list(seeds),
        agreement=agreement(all_scores, top_k),
    )
