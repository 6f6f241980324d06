"""Run a teacher layer by layer, so that patched runs start from the clean run's residual stream.

Patching head (l, h) cannot change anything below layer l, so a batch of patched rows is run from the
clean run's input to its lowest patched layer (kept in `RunRecord.hidden`) rather than from the
embeddings, and the final norm and LM head are applied only at the readout positions. `Runner.stats`
counts the work done: forward calls, sequence-forwards in full-depth equivalents, backward passes.

The layer loop is the one of `Qwen3Model.forward` (and Qwen2, Llama, Mistral): embeddings, RoPE from
`model.model.rotary_emb`, decoder layers, final norm. It runs under `scoring_attention_enabled`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from hydrahead.scoring.attention import AttentionControl, scoring_attention_enabled
from hydrahead.models.heads import HeadHooks, HeadPatch
from hydrahead.scoring.probes import Probe
from hydrahead.scoring.readout import LAMBDA, exact_match, logit_margin


@dataclass
class RunRecord:
    """One unpatched run of a probe sequence (batch 1).

    hidden:  per layer l, the residual stream entering layer l: (1, T, d); hidden[L] leaves the last layer
    heads:   per layer, the head outputs (1, T, H, D)
    control: the attention control of the run (with the clean q, k when it was recorded)
    logits:  (1, n, V) at the readout positions;  readout: m of Eq. 9
    """

    hidden: list[torch.Tensor]
    heads: list[torch.Tensor]
    control: AttentionControl
    logits: torch.Tensor
    readout: float


@dataclass
class RunStats:
    forward_calls: int = 0
    sequence_forwards: float = 0.0  # rows x layers run / layers: full-depth sequence equivalents
    backwards: int = 0


class Runner:
    """Layer-by-layer execution of a supported teacher with head hooks installed (use as a context manager)."""

    def __init__(self, model: nn.Module, lam: float = LAMBDA):
        self.model = model
        self.hooks = HeadHooks(model)
        self.layers = list(model.model.layers)
        self.num_layers = len(self.layers)
        self.num_heads = self.hooks.num_heads
        self.num_kv_heads = self.hooks.shape.kv_heads
        self.head_dim = self.hooks.head_dim
        self.lam = lam
        self.stats = RunStats()
        self.solved: dict[int, bool] = {}  # id(probe) -> the unpatched model gets its whole answer (greedy)
        self._stack: contextlib.ExitStack | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __enter__(self) -> Runner:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(scoring_attention_enabled(self.model))
        self._stack.enter_context(self.hooks)
        self._training = self.model.training
        self.model.eval()
        return self

    def __exit__(self, *exc) -> None:
        self.model.train(self._training)
        assert self._stack is not None
        self._stack.close()

    # ------------------------------------------------------------------------------------ pieces
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.model.embed_tokens(ids.to(self.device))  # (B, T, d)

    def rope(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = hidden.shape[1]
        position_ids = torch.arange(T, device=hidden.device)[None]  # (1, T): broadcast over the batch
        return self.model.model.rotary_emb(hidden, position_ids)

    def run_layers(self, hidden: torch.Tensor, start: int, control: AttentionControl,
                   keep: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Decoder layers start..L-1 on `hidden` (B, T, d); appends each layer's input to `keep` if given."""
        rope = self.rope(hidden)
        for layer in self.layers[start:]:
            if keep is not None:
                keep.append(hidden)
            out = layer(hidden, attention_mask=None, position_embeddings=rope, position_ids=None,
                        past_key_values=None, use_cache=False, hydrahead_attention=control)
            hidden = out[0] if isinstance(out, tuple) else out
        self.stats.forward_calls += 1
        self.stats.sequence_forwards += hidden.shape[0] * (self.num_layers - start) / self.num_layers
        return hidden

    def logits(self, hidden: torch.Tensor, probe: Probe) -> torch.Tensor:
        """(B, n, V) at the readout positions."""
        h = hidden[:, probe.readout_positions]
        logits = self.model.lm_head(self.model.model.norm(h))
        return logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 at least: a float64 model stays so

    def note_clean(self, logits: torch.Tensor, probe: Probe) -> None:
        """Record whether the clean run's readout `logits` (1, n, V) solve `probe` (`solved`)."""
        self.solved[id(probe)] = bool(exact_match(logits.detach(), torch.tensor(probe.answer, device=logits.device))[0])

    def margin(self, logits: torch.Tensor, probe: Probe) -> torch.Tensor:
        answer = torch.tensor(probe.answer, device=logits.device)
        distractor = torch.tensor(probe.distractor, device=logits.device)
        return logit_margin(logits, answer, distractor, self.lam)  # (B,)

    # ------------------------------------------------------------------------------------ runs
    @torch.no_grad()
    def record(self, probe: Probe, corrupted: bool = False, probs_last: int = 0, keep_qk: bool = True) -> RunRecord:
        """An unpatched run; the clean run also records q and k so later runs can freeze attention to it
        (`keep_qk=False`: not, for callers that never freeze; at 2K tokens that is hundreds of MB per record)."""
        control = AttentionControl("record" if keep_qk and not corrupted else "free", probs_last=probs_last)
        self.hooks.capture = {}
        try:
            hidden: list[torch.Tensor] = []
            out = self.run_layers(self.embed(probe.input_ids(corrupted)), 0, control, keep=hidden)
            heads = [self.hooks.capture[layer] for layer in range(self.num_layers)]
        finally:
            self.hooks.capture = None
        hidden.append(out)
        logits = self.logits(out, probe)
        if not corrupted:
            self.note_clean(logits, probe)
        return RunRecord(hidden, heads, control, logits, float(self.margin(logits, probe)[0]))

    def attention_heads(self, layer: int, hidden: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Head outputs (B, T, H, D) of one layer's attention (free, not frozen) on residual input `hidden` (B, T, d);
        with `grad`, differentiable with respect to `hidden`."""
        block = self.layers[layer]
        self.hooks.capture, self.hooks.grad = {}, grad  # with grad the hook keeps the outputs in the graph
        try:
            with torch.set_grad_enabled(grad):
                block.self_attn(hidden_states=block.input_layernorm(hidden), position_embeddings=self.rope(hidden),
                                attention_mask=None, hydrahead_attention=AttentionControl("free"))
            heads = self.hooks.capture[layer]
        finally:
            self.hooks.capture, self.hooks.grad, self.hooks.leaves = None, False, {}
        self.stats.sequence_forwards += hidden.shape[0] / (2 * self.num_layers)  # about half a layer per row
        return heads

    @torch.no_grad()
    def patched_readouts(self, probe: Probe, clean: RunRecord, patches: dict[int, HeadPatch], rows: int) -> torch.Tensor:
        """m for `rows` copies of the clean run with `patches` applied, attention frozen to the clean run. (rows,)"""
        if not patches:
            return torch.full((rows,), clean.readout)
        start = min(patches)
        hidden = clean.hidden[start].expand(rows, -1, -1)  # (rows, T, d): identical to clean below `start`
        control = AttentionControl("frozen", qk=clean.control.qk)
        self.hooks.patches = patches
        try:
            out = self.run_layers(hidden, start, control)
        finally:
            self.hooks.patches = {}
        return self.margin(self.logits(out, probe), probe).cpu()
