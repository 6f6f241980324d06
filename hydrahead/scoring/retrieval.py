"""`retrieval`: the copy-paste retrieval score of Wu et al. 2024 ("Retrieval Head Mechanistically
Explains Long-Context Factuality").

A head copies at answer step j when the token the model predicts there is the token its strongest
attention points at, and that position lies inside the needle's value. The score of a head is the
fraction of answer steps where it copies, averaged over probes. We teacher-force the answer instead of
generating it (the "predicted token" is the argmax at each teacher-forced step), so one forward per probe
gives every head's score; we count copy events per answer position rather than the set of distinct
tokens copied. Only clean prompts are used: the score needs no counterfactual.

Reported per query head; per KV group, `HeadScores.kv_group_values()` takes the max over the group's query
heads (the group's KV cache is kept as soon as one of its heads is).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hydrahead.scoring.probes import Probe
from hydrahead.scoring.runner import Runner


def retrieval_effects(runner: Runner, probe: Probe) -> np.ndarray:
    """Fraction of answer steps each head copies from the needle, one probe: (L, H)."""
    n = len(probe.answer)
    clean = runner.record(probe, probs_last=n)
    predicted = clean.logits[0].argmax(-1)  # (n,) what greedy decoding would emit at each step
    if len(probe.needle_answer) == n:  # the model writes the value as its own tokens after a lead (unspaced): a
        # step copies when it predicts the answer's token and attends to the needle's token of the same step
        answer, needle = (torch.tensor(t, device=predicted.device) for t in (probe.answer, probe.needle_answer))
        predicted = torch.where(predicted == answer, needle, predicted)
    ids = torch.tensor(probe.clean_ids, device=predicted.device)
    start, end = probe.needle_span
    out = np.zeros((runner.num_layers, runner.num_heads))
    for layer in range(runner.num_layers):
        top = clean.control.probs[layer][0].argmax(-1)  # (H, n): most-attended position per head and step
        copies = (top >= start) & (top < end) & (ids[top] == predicted[None, :])
        out[layer] = copies.float().mean(-1).cpu().numpy()
    return out


def retrieval_scores(runner: Runner, probes: Sequence[Probe], *, progress: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Retrieval scores over `probes`: (per query head (L, H), components, metadata)."""
    per_probe = np.stack([retrieval_effects(runner, p) for p in tqdm(probes, desc="retrieval", disable=not progress)])
    return per_probe.mean(0), {}, {"probes_used": len(probes)}
