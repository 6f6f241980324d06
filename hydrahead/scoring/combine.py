"""From per-probe indirect effects to one score per head: Eq. 11 and Eq. 12 of the paper.

Per capability c (single_key, multi_key) and sub-probe p (a needle type), the effects are first averaged
over the sub-probe's samples. Then (Eq. 11)
    s_c(h) = max(IE_recv(h), IE_send(h)) * kappa_c(h),
with IE averaged over the sub-probes and kappa_c(h) the fraction of sub-probes where max(IE_recv, IE_send)
of head h exceeds the threshold 0.01. Eq. 12 min-max normalises s_c over all heads and averages the
capabilities with equal weights. Probes the model cannot tell apart (|m(x) - m(x')| too small) carry NaN
effects and are left out of every mean.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from hydrahead.scoring.probes import Probe, subprobes

THRESHOLD = 0.01


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: probes the model could not tell apart
        return np.nanmean(x, axis=axis)


def minmax(x: np.ndarray) -> np.ndarray:
    """(x - min) / (max - min); all zeros when every head has the same score."""
    lo, hi = np.nanmin(x), np.nanmax(x)
    return np.zeros_like(x) if not np.isfinite(hi - lo) or hi - lo <= 0 else (x - lo) / (hi - lo)


def capability_scores(effects: Mapping[str, np.ndarray], probes: Sequence[Probe],
                      threshold: float = THRESHOLD) -> dict[str, dict[str, np.ndarray]]:
    """Eq. 11 per capability. effects: kind ("receiver", "sender", ...) -> (P, L, H) per-probe effects.

    Returns capability -> {"score": s_c, "kappa": kappa_c, <kind>: mean effect per kind}, each (L, H).
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for capability, groups in subprobes(probes).items():
        per_sub = {kind: np.stack([_nanmean(e[idx], axis=0) for idx in groups.values()]) for kind, e in effects.items()}  # (S, L, H)
        best = np.maximum.reduce([np.nan_to_num(v, nan=-np.inf) for v in per_sub.values()])  # (S, L, H)
        valid = np.isfinite(best).any(axis=(1, 2))  # sub-probes with at least one usable sample
        if not valid.any():
            continue
        kappa = (best[valid] > threshold).mean(axis=0)  # (L, H)
        means = {kind: np.nan_to_num(_nanmean(v[valid], axis=0)) for kind, v in per_sub.items()}
        score = np.maximum.reduce(list(means.values())) * kappa
        out[capability] = {"score": score, "kappa": kappa, **means}
    return out


def combine(per_capability: Mapping[str, Mapping[str, np.ndarray]]) -> np.ndarray:
    """Eq. 12: min-max normalise each capability's score and average with equal weights. (L, H)"""
    return np.mean([minmax(c["score"]) for c in per_capability.values()], axis=0)


def top_heads(scores: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The k (layer, head) pairs with the highest scores; ties broken by position (layer, then head)."""
    L, H = scores.shape
    order = sorted(range(L * H), key=lambda i: (-scores.flat[i], i))
    return [divmod(i, H) for i in order[:k]]
