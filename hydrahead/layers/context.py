"""What the hybrid layers of one forward share, worked out once per forward instead of once per layer.

The hybrid model's forward makes one `ForwardContext` and hands it to every layer (a keyword argument
transformers passes through its decoder layers). The first layer that needs a value computes it from the
position ids it was given; every later layer reuses it:

  documents     where packed rows' documents start (`cu_seqlens` and per-token offsets): the GDN heads
                restart their state there; one host sync per forward, not one per layer
  padding       the (B, T) padding mask of this forward's tokens, or None when a prompt has none (one host
                sync per prefill, so that unpadded prompts take the unmasked, fused kernels)
  rotary        the RoPE tables of `rotary` (cos, and sin with its first half negated)
  query_scale   the FA log-length query scale max(1, log(t + 1) / log(L_train)) per position, shaped to
                multiply (B, H, T, D) queries: (B or 1, 1, T, 1), in their dtype

A layer called on its own (no context given) makes a private one: the same values, computed per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hydrahead.layers.norm import rotary_tables


@dataclass(frozen=True)
class Documents:
    """Where the documents of packed rows start: `cu_seqlens` over the flattened (1, B*T) batch, and each
    token's index inside its document, `offsets` (B, T)."""

    cu_seqlens: torch.Tensor
    offsets: torch.Tensor


class ForwardContext:
    def __init__(self) -> None:
        self._documents: tuple[Documents | None] | None = None
        self._query_scale: dict[tuple[int, torch.dtype], torch.Tensor] = {}
        self._rotary: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._padding: tuple[torch.Tensor | None] | None = None

    def padding(self, mask: torch.Tensor | None, seq_len: int) -> torch.Tensor | None:
        """The last `seq_len` columns of the 2D mask (past + current tokens), or None when they are all real
        tokens (checked for prompts, not for one-token steps, which are never padding, nor while compiling)."""
        if mask is None:
            return None
        if self._padding is None:
            padding = mask[:, -seq_len:]
            if seq_len > 1 and not torch.compiler.is_compiling() and bool(padding.all()):
                padding = None
            self._padding = (padding,)
        return self._padding[0]

    def rotary(self, position_embeddings: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """`rotary_tables(cos, sin)` of this forward's position embeddings (the same tensors in every layer)."""
        cos, sin = position_embeddings
        if self._rotary is None or self._rotary[0] is not sin:
            self._rotary = (sin, rotary_tables(cos, sin))
        return self._rotary[1]

    def documents(self, position_ids: torch.Tensor | None, batch: int, seq_len: int) -> Documents | None:
        """The documents of rows whose position_ids restart (transformers' packed-sequence convention: a
        new document wherever the position does not follow on by one); None when every row is one sequence."""
        if self._documents is None:
            self._documents = (packed_documents(position_ids, batch, seq_len),)
        return self._documents[0]

    def query_scale(self, position_ids: torch.Tensor | None, seq_len: int, device: torch.device,
                    train_length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """s_t = max(1, log(t + 1) / log(train_length)) at each position t, computed in fp32, as (B or 1, 1, T, 1)
        in `dtype`: ready to multiply (B, H, T, D) queries (every FA layer of a forward takes it as it is)."""
        key = (train_length, dtype)
        if key not in self._query_scale:
            pos = position_ids if position_ids is not None else torch.arange(seq_len, device=device)[None]
            scale = (torch.log1p(pos.float()) / math.log(train_length)).clamp(min=1.0)
            self._query_scale[key] = scale[:, None, :, None].to(dtype)
        return self._query_scale[key]


class HeadIndex:
    """A fixed tuple of head indices as an index tensor on the device it is asked for, made once per device
    (a plain attribute, not a buffer: from_pretrained builds modules on the meta device and would leave a
    non-persistent buffer uninitialised; and no tensor is built from Python in every forward)."""

    def __init__(self, values: tuple[int, ...]) -> None:
        self.values = tuple(values)
        self._tensor: torch.Tensor | None = None

    def on(self, device: torch.device) -> torch.Tensor:
        if self._tensor is None or self._tensor.device != device:
            self._tensor = torch.tensor(self.values, device=device)
        return self._tensor


def packed_documents(position_ids: torch.Tensor | None, batch: int, seq_len: int) -> Documents | None:
    """`ForwardContext.documents` without the memo (one host sync)."""
    if position_ids is None or seq_len < 2:
        return None
    pos = position_ids.expand(batch, seq_len)
    starts = torch.ones(batch, seq_len, dtype=torch.bool, device=pos.device)
    starts[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    if not bool(starts[:, 1:].any()):
        return None
    ends = torch.full((1,), batch * seq_len, device=pos.device)
    return Documents(torch.cat([starts.reshape(-1).nonzero().squeeze(1), ends]), document_offsets(starts))


def document_offsets(starts: torch.Tensor) -> torch.Tensor:
    """(B, T) bool, True where a document starts (column 0 must be) -> each token's index in its document."""
    index = torch.arange(starts.shape[1], device=starts.device).expand_as(starts)
    return index - torch.where(starts, index, 0).cummax(dim=1).values
