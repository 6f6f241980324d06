"""`attribution`: attribution patching, the first-order approximation of the receiver score.

IE_attr(l, h) = -(dm/dO_lh(x)) . (O_lh(x') - O_lh(x)) / (m(x) - m(x')),
summed over positions and head dimensions: the change activation patching would make to m, predicted
from the gradient. All heads come from one corrupted forward and one clean forward + backward per probe,
instead of one patched sequence per head. With `freeze_attention` (default) q and k are cut from the
graph, so the gradient flows only where the frozen-attention receiver score lets a patch flow (values,
residual stream, MLPs): attribution is then the exact linearisation of IE_recv, and equals it when the
readout is linear in the patched activation (the test builds such a model). The paper names activation
patching's cost as a limitation and did not validate this shortcut; `validate-scores` measures how well
it agrees with `patching`.

Per-probe effects are aggregated like the receiver score (Eq. 11-12, without a sender term).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hydrahead.scoring.attention import AttentionControl
from hydrahead.scoring.combine import THRESHOLD, capability_scores, combine
from hydrahead.errors import ScoringError
from hydrahead.scoring.patching import MIN_DELTA
from hydrahead.scoring.probes import Probe
from hydrahead.scoring.runner import Runner


def attribution_effects(runner: Runner, probe: Probe, freeze_attention: bool = True) -> tuple[np.ndarray, float, float]:
    """(IE_attr (L, H), m(x), m(x')) for one probe."""
    corrupt = runner.record(probe, corrupted=True)
    hooks = runner.hooks
    hooks.grad, hooks.capture = True, {}
    try:
        with torch.enable_grad():
            control = AttentionControl("detach" if freeze_attention else "free")
            out = runner.run_layers(runner.embed(probe.input_ids()), 0, control)
            m = runner.margin(runner.logits(out, probe), probe)[0]
            leaves = [hooks.leaves[layer] for layer in range(runner.num_layers)]
            grads = torch.autograd.grad(m, leaves)  # each (1, T, H, D)
        clean_heads = [hooks.capture[layer].detach() for layer in range(runner.num_layers)]
    finally:
        hooks.grad, hooks.capture, hooks.leaves = False, None, {}
    runner.stats.backwards += 1
    m_clean = float(m.detach())
    change = torch.stack([(g[0] * (c[0] - x[0])).sum(dim=(0, 2))  # (H,): dm predicted from patching each head
                          for g, c, x in zip(grads, corrupt.heads, clean_heads)])
    ie = (-change / (m_clean - corrupt.readout)).double().cpu().numpy()
    return ie, m_clean, corrupt.readout


def attribution_scores(runner: Runner, probes: Sequence[Probe], *, freeze_attention: bool = True,
                       threshold: float = THRESHOLD, min_delta: float = MIN_DELTA,
                       progress: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Attribution scores over `probes`: (combined (L, H), components, metadata)."""
    P, L, H = len(probes), runner.num_layers, runner.num_heads
    effects = np.full((P, L, H), np.nan)
    for i, probe in enumerate(tqdm(probes, desc="attribution", disable=not progress)):
        ie, m_clean, m_corrupt = attribution_effects(runner, probe, freeze_attention)
        if abs(m_clean - m_corrupt) >= min_delta:
            effects[i] = ie
    used = int(np.isfinite(effects[:, 0, 0]).sum())
    if used == 0:
        raise ScoringError(f"the model does not tell clean from corrupted probes apart (|m(x) - m(x')| < {min_delta} "
                           f"on all {P} probes): no indirect effect is defined; use probes the model can solve")
    per_capability = capability_scores({"attribution": effects}, probes, threshold)
    components = {f"{name}/{cap}": arr for cap, d in per_capability.items() for name, arr in d.items()}
    meta = {"probes_used": used, "probes_skipped": P - used, "threshold": threshold, "freeze_attention": freeze_attention}
    return combine(per_capability), components, meta
