"""Depthwise causal short convolution (kernel K) with SiLU, as in front of q/k/v in Gated DeltaNet.

It starts as the identity (only the tap on the current token is 1), so a converted head sees the
teacher's q/k/v at initialisation (METHOD.md section 2, ours). With a cache, the last K - 1 inputs live
in the cache layer's conv state (`conv_window`), so decode needs only the new token: one multiply-add
over the K-wide window, as fla's `causal_conv1d_update` does, rather than a convolution call.
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

    def forward(self, x: torch.Tensor, cache_layer=None) -> torch.Tensor:
        """x: (B, T, C) -> silu(causal_conv(x)): (B, T, C)."""
        T = x.shape[1]
        weight = self.weight.to(x.dtype)
        x = x.transpose(1, 2)  # (B, C, T)
        if cache_layer is None:
            window = F.pad(x, (self.kernel_size - 1, 0))  # zeros before the first token
        else:
            window = cache_layer.conv_window(x, self.kernel_size)  # (B, C, K - 1 + T)
        if T == 1:
            y = (window * weight).sum(-1, keepdim=True)  # (B, C, 1): the decode step
        else:
            y = F.conv1d(window, weight.unsqueeze(1), groups=x.shape[1])  # (B, C, T)
        return F.silu(y).transpose(1, 2)
