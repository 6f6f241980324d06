"""Scale-normalised fusion of the FA and GDN branches (paper Eq. 13-14).

O^_h = RMSNorm_branch(O_h), O~_h = gamma_h * O^_h. GDN outputs can be several times larger than FA
outputs in deep layers; normalising each branch and learning one gain per head puts them on one scale.
The gains start at the teacher's per-head output RMS (ours), so the converted layer starts near the teacher.
"""

from __future__ import annotations

import torch
from torch import nn

from hydrahead.layers.norm import RMSNorm


class BranchNorm(nn.Module):
    """RMSNorm over head_dim shared by the heads of one branch, then a learnable gain per head."""

    def __init__(self, num_heads: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.norm = RMSNorm(head_dim, eps)
        self.gain = nn.Parameter(torch.ones(num_heads))

    def forward(self, o: torch.Tensor) -> torch.Tensor:
        """o: (B, T, H, D) -> (B, T, H, D)."""
        return self.norm(o) * self.gain.to(o.dtype)[:, None]
