"""`attribution`: attribution patching, the first-order approximation of the paper's receiver and sender scores.

Receiver term. IE_attr(l, h) = -(dm/dO_lh(x)) . (O_lh(x') - O_lh(x)) / (m(x) - m(x')),
summed over positions and head dimensions: the change activation patching would make to m, predicted
from the gradient. All heads come from one corrupted forward and one clean forward + backward per probe,
instead of one patched sequence per head. With `freeze_attention` (default) q and k are cut from the
graph, so the gradient flows only where the frozen-attention receiver score lets a patch flow (values,
residual stream, MLPs): attribution is then the exact linearisation of IE_recv, and equals it when the
readout is linear in the patched activation (the test builds such a model).

Sender term (ours). That gradient cannot see a head that matters by steering later heads' queries and keys,
the paper's sender role: on SmolLM2-135M the receiver term scores 0 a head whose ablation alone costs 42 NIAH
points (docs/real_models.md section 4). `sender_attribution_effects` linearises the one-step path patch of
`patching.sender_effects` instead, every head from one clean backward plus one per receiver layer (per probe
and round), and `attribution_scores` iterates the receiver set and combines the two terms as `patching_scores`
does (`patching.sender_rounds`, Eq. 11-12). On that model it ranks the 73 senders that patching scored with Spearman 0.994 against patching.
What a round needs of a probe's clean and corrupted runs (`SenderInputs`) comes from the receiver pass's own two
runs and is kept for the rounds, within a memory budget (`keep_bytes`), so a round runs neither again.

The paper names activation patching's cost as a limitation and did not validate this shortcut;
`validate-scores` measures how well it agrees with `patching`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from hydrahead.scoring.attention import AttentionControl
from hydrahead.scoring.combine import THRESHOLD, combine
from hydrahead.errors import ScoringError
from hydrahead.scoring.patching import MIN_DELTA, sender_rounds
from hydrahead.scoring.probes import Probe
from hydrahead.scoring.runner import RunRecord, Runner
from hydrahead.utils.memory import available_memory


@dataclass
class SenderInputs:
    """What the sender term needs of one probe's clean and corrupted runs, whatever the receivers: kept from
    the receiver pass for the rounds (within a memory budget), instead of both runs again every round.

    hidden: per layer l, the clean residual stream entering it (1, T, d)
    change: per layer, the head outputs, corrupted minus clean (1, T, H, D)
    clean, corrupt: the readouts m(x), m(x')
    """

    hidden: list[torch.Tensor]
    change: list[torch.Tensor]
    clean: float
    corrupt: float

    @classmethod
    def from_heads(cls, hidden: Sequence[torch.Tensor], clean_heads: Sequence[torch.Tensor],
                   corrupt_heads: Sequence[torch.Tensor], clean: float, corrupt: float) -> SenderInputs:
        """From the clean layer inputs and both runs' head outputs (per layer)."""
        return cls([h.detach() for h in hidden], [c - x for c, x in zip(corrupt_heads, clean_heads)], clean, corrupt)

    @classmethod
    def from_runs(cls, clean: RunRecord, corrupt: RunRecord) -> SenderInputs:
        return cls.from_heads(clean.hidden[:-1], clean.heads, corrupt.heads, clean.readout, corrupt.readout)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.hidden, *self.change))

    def to(self, device: torch.device | str) -> SenderInputs:
        return SenderInputs([t.to(device) for t in self.hidden], [t.to(device) for t in self.change], self.clean,
                            self.corrupt)


def _receiver_pass(runner: Runner, probe: Probe, freeze_attention: bool,
                   keep: bool) -> tuple[np.ndarray, float, float, SenderInputs | None]:
    """`attribution_effects`, and with `keep` the probe's `SenderInputs`, from the same two runs."""
    corrupt = runner.record(probe, corrupted=True)
    hooks = runner.hooks
    hooks.grad, hooks.capture = True, {}
    hidden: list[torch.Tensor] | None = [] if keep else None
    try:
        with torch.enable_grad():
            control = AttentionControl("detach" if freeze_attention else "free")
            out = runner.run_layers(runner.embed(probe.input_ids()), 0, control, keep=hidden)
            logits = runner.logits(out, probe)
            runner.note_clean(logits, probe)
            m = runner.margin(logits, probe)[0]
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
    inputs = (SenderInputs.from_heads(hidden, clean_heads, corrupt.heads, m_clean, corrupt.readout)
              if hidden is not None else None)
    return ie, m_clean, corrupt.readout, inputs


def attribution_effects(runner: Runner, probe: Probe, freeze_attention: bool = True) -> tuple[np.ndarray, float, float]:
    """(IE_attr (L, H), m(x), m(x')) for one probe."""
    return _receiver_pass(runner, probe, freeze_attention, keep=False)[:3]


@torch.no_grad()
def sender_attribution_effects(runner: Runner, probe: Probe, receivers: Sequence[tuple[int, int]],
                               inputs: SenderInputs | None = None) -> np.ndarray:
    """IE_send (L, H) of every head for one probe to first order: the linearisation of `patching.sender_effects`
    (one-step path patching to `receivers`) at the clean run, from one clean backward plus one per receiver layer
    instead of one patched run per sender.

    The patched run changes m by sum over receivers r of dm/dO_r . (O_r(x_r + delta_s) - O_r(x_r)), where x_r is
    the clean input of r's layer and delta_s the sender's change through o_proj. To first order that is
    delta_s . g_s, g_s = sum over receiver layers after s of J^T (dm/dO_r): dm/dO_r comes from one clean
    backward with attention detached (the patched run's frozen attention) and the receivers' outputs cut from
    their inputs (the patched run overwrites them), and J^T from one backward through each receiver layer's
    attention with its pattern free (the path a sender acts through: r's queries, keys and values).
    `inputs`: what it needs of the probe's two runs, when the caller kept them; else both are run.
    """
    L, H, D = runner.num_layers, runner.num_heads, runner.head_dim
    by_layer: dict[int, list[int]] = {}
    for l, h in receivers:
        by_layer.setdefault(l, []).append(h)
    if max(by_layer, default=0) == 0:
        return np.zeros((L, H))  # every receiver in layer 0: no head comes before one
    if inputs is None:
        inputs = SenderInputs.from_runs(runner.record(probe, keep_qk=False), runner.record(probe, corrupted=True))
    device = runner.device
    hooks = runner.hooks
    # dm/dO_r for every receiver, the receivers' outputs cut from what feeds them (the patched run overwrites
    # them); from the clean residual stream at the lowest receiver layer: nothing below it is differentiated
    layers = sorted(by_layer)
    hooks.cuts, hooks.grad = dict(by_layer), True
    try:
        with torch.enable_grad():
            out = runner.run_layers(inputs.hidden[layers[0]].to(device), layers[0], AttentionControl("detach"))
            logits = runner.logits(out, probe)
            runner.note_clean(logits, probe)
            m = runner.margin(logits, probe)[0]
            grads = dict(zip(layers, torch.autograd.grad(m, [hooks.leaves[l] for l in layers])))  # (1, T, H, D)
    finally:
        hooks.cuts, hooks.grad, hooks.leaves = {}, False, {}
    runner.stats.backwards += 1
    # g at each receiver layer's input: the receivers' gradients back through that layer's attention, pattern free
    acc = torch.promote_types(inputs.hidden[0].dtype, torch.float32)  # sums in fp32 at least
    toward = torch.zeros_like(inputs.hidden[0][0], dtype=acc, device=device)  # (T, d): summed over the receiver layers above
    ie = np.zeros((L, H))
    for l in range(max(layers) - 1, -1, -1):
        if l + 1 in by_layer:
            x = inputs.hidden[l + 1].to(device).detach().requires_grad_(True)  # a new leaf: the kept tensor untouched
            with torch.enable_grad():
                heads = runner.attention_heads(l + 1, x, grad=True)[0]  # (T, H, D)
                hs = by_layer[l + 1]
                f = (heads[:, hs] * grads[l + 1][0][:, hs]).sum()
                toward = toward + torch.autograd.grad(f, x)[0][0].to(acc)
            runner.stats.backwards += 1
        weight = runner.layers[l].self_attn.o_proj.weight  # (d, H * D)
        per_head = (toward @ weight.to(acc)).view(-1, H, D)  # (T, H, D): g through o_proj, per head
        change = (per_head * inputs.change[l][0].to(device, acc)).sum(dim=(0, 2))  # (H,)
        ie[l] = (-change / (inputs.clean - inputs.corrupt)).double().cpu().numpy()
    return ie


def attribution_scores(runner: Runner, probes: Sequence[Probe], *, freeze_attention: bool = True,
                       senders: bool = True, receiver_fraction: float = 0.05, max_rounds: int = 3,
                       threshold: float = THRESHOLD, min_delta: float = MIN_DELTA, keep_bytes: int | None = None,
                       progress: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Attribution scores over `probes`: (combined (L, H), components, metadata). The receiver score's
    linearisation, and with `senders` the sender score's (`sender_attribution_effects`), iterated over receiver
    sets and combined as `patching_scores` does (Eq. 11-12); without (or with `max_rounds` 0), the receiver term alone.
    `freeze_attention` applies to the receiver term; the sender term always linearises the patched run, whose
    downstream attention is frozen.
    keep_bytes: memory (on the CPU) for the probes' `SenderInputs`, kept from the receiver pass so that a sender
    round runs neither probe run again (the same values; 2 of about 3 forward-equivalents per probe and round);
    probes beyond it run both again each round. Default: half the memory the system has available; 0: none."""
    P, L, H = len(probes), runner.num_layers, runner.num_heads
    rounds = max_rounds if senders else 0
    if keep_bytes is None:
        keep_bytes = (available_memory() or 0) // 2
    kept: dict[int, SenderInputs] = {}
    room = keep_bytes if rounds > 0 else 0
    recv = np.full((P, L, H), np.nan)
    for i, probe in enumerate(tqdm(probes, desc="attribution", disable=not progress)):
        ie, m_clean, m_corrupt, inputs = _receiver_pass(runner, probe, freeze_attention, keep=room > 0)
        if abs(m_clean - m_corrupt) >= min_delta:
            recv[i] = ie
            if inputs is not None and inputs.nbytes <= room:
                kept[i] = inputs.to("cpu")
                room -= inputs.nbytes
        del inputs
    usable = [i for i in range(P) if np.isfinite(recv[i, 0, 0])]
    if not usable:
        raise ScoringError(f"the model does not tell clean from corrupted probes apart (|m(x) - m(x')| < {min_delta} "
                           f"on all {P} probes): no indirect effect is defined; use probes the model can solve")
    meta = {"probes_used": len(usable), "probes_skipped": P - len(usable), "threshold": threshold,
            "freeze_attention": freeze_attention, "senders": rounds > 0}
    if rounds > 0:
        meta["probes_kept"] = len(kept)
    send = np.full((P, L, H), np.nan)
    send[usable] = 0.0
    per_capability, rounds_meta = sender_rounds(
        probes, usable, recv, send,
        lambda i, receivers: sender_attribution_effects(runner, probes[i], receivers, kept.get(i)),
        receiver_fraction=receiver_fraction, max_rounds=rounds, threshold=threshold, progress=progress)
    meta.update(rounds_meta)
    components = {f"{name}/{cap}": arr for cap, d in per_capability.items() for name, arr in d.items()}
    return combine(per_capability), components, meta
