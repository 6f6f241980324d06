"""Depthwise causal short convolution (kernel K) with SiLU, as in front of q/k/v in Gated DeltaNet.

It starts as the identity (only the tap on the current token is 1), so a converted head sees the
teacher's q/k/v at initialisation (docs/method.md section 2, ours). With a cache, the last K - 1 inputs live
in the cache layer's conv state (`conv_window`), so decode needs only the new token: one multiply-add
over the K-wide window, as fla's `causal_conv1d_update` does, rather than a convolution call.

Everything stays in the projections' (B, T, C) layout: the convolution is K shifted multiply-adds over
the window, which on CPU is about twice as fast as a depthwise `conv1d` (whose (B, C, T) layout needs
two transposes) and allocates nothing beyond the window and the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ShortConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        weight = torch.zeros(channels, kernel_size)
        weight[:, -1] = 1.0  # identity: output_t = input_t
        self.weight = nn.Parameter(weight)  # (C, K)

    def forward(self, x: torch.Tensor, cache_layer=None, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, C) -> silu(causal_conv(x)): (B, T, C). `offsets` (B, T), each token's index inside its
        document (packed rows): a tap never reaches back into the previous document."""
        K = self.kernel_size
        if cache_layer is None:
            window = F.pad(x, (0, 0, K - 1, 0))  # (B, K - 1 + T, C), zeros before the first token
        else:
            window = cache_layer.conv_window(x, K)  # (B, K - 1 + T, C)
        return self.convolve(window, offsets)

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
