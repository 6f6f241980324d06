"""`patching`: the paper's causal head score from activation patching (Eq. 9-12).

Receiver score (Eq. 10). IE_recv(l, h) = (m(x) - m(x; O_lh <- O_lh(x'))) / (m(x) - m(x')): the clean run
with head (l, h)'s output (at every position) replaced by its output on the corrupted prompt, attention
patterns frozen to the clean run (attention.py says how). Heads are not patched one forward each: the
clean sequence is replicated up to `batch_size` times along the batch, row i patches head i (models/heads.py),
and since a batch holds heads of one layer it starts from the clean run's residual stream at that layer
(runner.py) instead of the embeddings.

Sender score: one-step path patching to a receiver set R. For sender s = (l, h), its corrupted-minus-clean
output, through o_proj, is added to the residual input of every receiver r in R at a later layer, and only
there: r recomputes its output from that input with attention free (so s can act through r's queries and
keys, which the frozen receiver score cannot see); then the clean run is patched with those receiver
outputs, downstream attention frozen as before. IE_send(s) is the IE of that run. ("One-step": the
change reaches r directly, not through heads or MLPs in between.)

Iteration (ours: the paper says only "iterated, converges in ~2 rounds"): R starts as the top
`receiver_fraction` of heads by receiver score; each round computes sender scores against R, combines
(Eq. 11-12, combine.py), and takes the new top heads as R; it stops when R no longer changes or after
`max_rounds`. The rounds and receiver sets are kept in the metadata.

Probes whose clean and corrupted readouts differ by less than `min_delta` (the model cannot tell them
apart, so IE is undefined) are skipped and counted.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hydrahead.scoring.combine import THRESHOLD, capability_scores, combine, top_heads
from hydrahead.errors import ScoringError
from hydrahead.models.heads import HeadPatch
from hydrahead.scoring.probes import Probe
from hydrahead.scoring.readout import indirect_effect
from hydrahead.scoring.runner import RunRecord, Runner

MIN_DELTA = 1e-4


def _chunks(heads: list[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    """Batches of at most `size` heads, one layer per batch: a batch runs from its layer up, so mixing
    layers would run the deeper heads' rows through layers they do not need (rows x depth is the cost)."""
    out = []
    for layer in sorted({l for l, _ in heads}):
        in_layer = [(l, h) for l, h in heads if l == layer]
        out += [in_layer[i:i + size] for i in range(0, len(in_layer), size)]
    return out


def _patches(triples: list[tuple[int, int, int, torch.Tensor]]) -> dict[int, HeadPatch]:
    """(row, layer, head, value (T, D)) -> layer -> HeadPatch."""
    by_layer: dict[int, list[tuple[int, int, torch.Tensor]]] = defaultdict(list)
    for row, layer, head, value in triples:
        by_layer[layer].append((row, head, value))
    return {layer: HeadPatch.from_triples(t) for layer, t in by_layer.items()}


def receiver_effects(runner: Runner, probe: Probe, clean: RunRecord, corrupt: RunRecord, batch_size: int = 16,
                     heads: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """IE_recv of every head for one probe, or of `heads` only (the rest 0): (L, H)."""
    L, H = runner.num_layers, runner.num_heads
    heads = [(l, h) for l in range(L) for h in range(H)] if heads is None else list(heads)
    ie = np.zeros((L, H))
    for chunk in _chunks(heads, batch_size):
        patches = _patches([(row, l, h, corrupt.heads[l][0, :, h]) for row, (l, h) in enumerate(chunk)])
        m = runner.patched_readouts(probe, clean, patches, len(chunk))
        effect = indirect_effect(clean.readout, m, corrupt.readout)
        for row, (l, h) in enumerate(chunk):
            ie[l, h] = float(effect[row])
    return ie


def sender_effects(runner: Runner, probe: Probe, clean: RunRecord, corrupt: RunRecord,
                   receivers: Sequence[tuple[int, int]], batch_size: int = 16,
                   heads: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """IE_send of every head for one probe, or of `heads` only (the rest 0), by one-step path patching to
    `receivers`: (L, H).

    Heads with no receiver in a later layer get 0.
    """
    L, H, D = runner.num_layers, runner.num_heads, runner.head_dim
    receiver_layers = sorted({l for l, _ in receivers})
    candidates = [(l, h) for l in range(L) for h in range(H)] if heads is None else list(heads)
    senders = [(l, h) for l, h in candidates if any(r > l for r in receiver_layers)]
    ie = np.zeros((L, H))
    for chunk in _chunks(senders, batch_size):
        # the sender's change as the residual stream sees it: (O_s(x') - O_s(x)) W_O[:, s]^T, (n, T, d)
        delta = torch.stack([
            (corrupt.heads[l][0, :, h] - clean.heads[l][0, :, h]) @ runner.layers[l].self_attn.o_proj.weight[:, h * D:(h + 1) * D].T
            for l, h in chunk
        ])
        triples = []
        for lr in receiver_layers:
            rows = [row for row, (l, _) in enumerate(chunk) if l < lr]
            if not rows:
                continue
            inputs = clean.hidden[lr] + delta[rows]  # (n_rows, T, d): clean input of layer lr + the sender's change
            outputs = runner.attention_heads(lr, inputs)  # (n_rows, T, H, D)
            triples += [(row, lr, hr, outputs[j, :, hr]) for j, row in enumerate(rows) for l2, hr in receivers if l2 == lr]
        m = runner.patched_readouts(probe, clean, _patches(triples), len(chunk))
        effect = indirect_effect(clean.readout, m, corrupt.readout)
        for row, (l, h) in enumerate(chunk):
            ie[l, h] = float(effect[row])
    return ie


def _records(runner: Runner, probe: Probe, min_delta: float) -> tuple[RunRecord, RunRecord] | None:
    clean, corrupt = runner.record(probe), runner.record(probe, corrupted=True)
    return None if abs(clean.readout - corrupt.readout) < min_delta else (clean, corrupt)


def patching_scores(runner: Runner, probes: Sequence[Probe], *, batch_size: int = 16, receiver_fraction: float = 0.05,
                    max_rounds: int = 3, threshold: float = THRESHOLD, min_delta: float = MIN_DELTA,
                    progress: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Receiver, sender and combined scores over `probes`: (combined (L, H), components, metadata)."""
    L, H = runner.num_layers, runner.num_heads
    P = len(probes)
    recv = np.full((P, L, H), np.nan)
    send = np.zeros((P, L, H))
    usable = []
    for i, probe in enumerate(tqdm(probes, desc="receiver scores", disable=not progress)):
        records = _records(runner, probe, min_delta)
        if records is not None:
            recv[i] = receiver_effects(runner, probe, *records, batch_size=batch_size)
            usable.append(i)
    if not usable:
        raise ScoringError(f"the model does not tell clean from corrupted probes apart (|m(x) - m(x')| < {min_delta} "
                           f"on all {P} probes): no indirect effect is defined; use probes the model can solve")
    send[[i for i in range(P) if i not in usable]] = np.nan

    def senders(i: int, receivers: list[tuple[int, int]]) -> np.ndarray:
        clean, corrupt = _records(runner, probes[i], 0.0)
        return sender_effects(runner, probes[i], clean, corrupt, receivers, batch_size)

    per_capability, meta = sender_rounds(probes, usable, recv, send, senders, receiver_fraction=receiver_fraction,
                                         max_rounds=max_rounds, threshold=threshold, progress=progress)
    components = {f"{name}/{cap}": arr for cap, d in per_capability.items() for name, arr in d.items()}
    meta.update({"probes_used": len(usable), "probes_skipped": P - len(usable), "threshold": threshold,
                 "senders": max_rounds > 0})
    return combine(per_capability), components, meta


def sender_rounds(probes: Sequence[Probe], usable: Sequence[int], recv: np.ndarray, send: np.ndarray,
                  senders: Callable[[int, list[tuple[int, int]]], np.ndarray], *, receiver_fraction: float,
                  max_rounds: int, threshold: float, progress: bool) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """The iteration both causal methods share: R starts as the top `receiver_fraction` of heads by receiver
    score; each round fills send[i] = senders(i, R) for every usable probe, combines (Eq. 11-12) and takes the
    new top heads as R, until R stops changing or after `max_rounds`. With `max_rounds` 0 the scores are the
    receiver term's alone (Eq. 11 without a sender term: no sender components, negative means kept), the one
    meaning of "receiver only" for both methods.
    recv, send: (P, L, H), send filled in place. Returns (per-capability scores, metadata of the rounds)."""
    L, H = recv.shape[1:]
    k = max(1, math.floor(receiver_fraction * L * H + 0.5))
    per_capability = capability_scores({"receiver": recv}, probes, threshold)
    receivers = top_heads(combine(per_capability), k)
    history, rounds, converged = [receivers], 0, False
    for _ in range(max_rounds):
        rounds += 1
        for i in tqdm(usable, desc=f"sender scores, round {rounds}", disable=not progress):
            send[i] = senders(i, receivers)
        per_capability = capability_scores({"receiver": recv, "sender": send}, probes, threshold)
        new = top_heads(combine(per_capability), k)
        if sorted(new) == sorted(receivers):
            converged = True
            break
        receivers = new
        history.append(receivers)
    meta = {"receiver_sets": [[list(h) for h in r] for r in history], "rounds": rounds,
            "converged": converged if max_rounds else None,  # None: no sender rounds asked for, nothing to converge
            "receiver_fraction": receiver_fraction}
    return per_capability, meta
