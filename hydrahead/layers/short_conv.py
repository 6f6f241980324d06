"""Depthwise causal short convolution (kernel K) with SiLU, as in front of q/k/v in Gated DeltaNet.

It starts as the identity (only the tap on the current token is 1), so a converted head sees silu of the
teacher's q/k/v at initialisation (docs/method.md section 2, ours; the SiLU as in fla and Qwen3-Next). With a
cache, the last K - 1 inputs live in the cache layer's conv state (`conv_window`), so decode needs only the new
token: one multiply-add over the K-wide window, as fla's `causal_conv1d_update` does, rather than a convolution
call.

Everything stays in the projections' (B, T, C) layout: the convolution is K shifted multiply-adds over
the window, which on CPU is about twice as fast as a depthwise `conv1d` (whose (B, C, T) layout needs
two transposes) and allocates nothing beyond the window and the output.

Where fla's kernels apply (CUDA, bf16/fp16, fla installed), a prompt (T > 1) runs instead through fla's
causal conv1d, conv and SiLU in one kernel (forward and backward), the cached inputs handed to it as its
initial state: one pass over the input where the multiply-adds take six. A decode step stays the
multiply-add over the window (a few ops, which a compiled step fuses). Packed documents come without a
cache (the GDN branch finds them only then); fla's conv restarts them by `cu_seqlens`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hydrahead.layers.context import Documents
from hydrahead.ops.gated_delta.fla import fla_applies, fla_short_conv


class ShortConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        weight = torch.zeros(channels, kernel_size)
        weight[:, -1] = 1.0  # identity: output_t = input_t
        self.weight = nn.Parameter(weight)  # (C, K)

    def forward(self, x: torch.Tensor, cache_layer=None, documents: Documents | None = None) -> torch.Tensor:
        """x: (B, T, C) -> silu(causal_conv(x)): (B, T, C). `documents`: packed rows (without a cache), whose
        taps never reach back into the previous document."""
        K = self.kernel_size
        if x.shape[1] > 1 and fla_applies(x):
            previous = cache_layer.conv_inputs_before(x, K) if cache_layer is not None else None
            return fla_short_conv(x, self.weight, previous=previous,
                                  cu_seqlens=documents.cu_seqlens if documents is not None else None)
        if cache_layer is None:
            window = F.pad(x, (0, 0, K - 1, 0))  # (B, K - 1 + T, C), zeros before the first token
        else:
            window = cache_layer.conv_window(x, K)  # (B, K - 1 + T, C)
        return self.convolve(window, documents.offsets if documents is not None else None)

    def convolve(self, window: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """window: (B, K - 1 + T, C), the K - 1 inputs before the first token then the T tokens ->
        silu(causal_conv): (B, T, C)."""
        K = self.kernel_size
        T = window.shape[1] - (K - 1)
        weight = self.weight.to(window.dtype)  # (C, K)
        if T == 1:
            y = (window * weight.t()).sum(1, keepdim=True)  # (B, 1, C): the decode step
        else:
            y = window[:, K - 1 :] * weight[:, K - 1]  # tap on the current token
            for j in range(K - 1):  # tap on token t - (K - 1 - j)
                tap = window[:, j : j + T]
                if offsets is not None:
                    tap = tap * (offsets >= K - 1 - j)[..., None].to(tap.dtype)
                y.addcmul_(tap, weight[:, j])
        return F.silu(y, inplace=not torch.is_grad_enabled())
