"""Scale-normalised fusion of the FA and GDN branches (paper Eq. 13-14).

O^_h = RMSNorm_branch(O_h), O~_h = gamma_h * O^_h. GDN outputs can be several times larger than FA
outputs in deep layers; normalising each branch and learning one gain per head puts them on one scale.
The gains start at the teacher's per-head output RMS (ours), so the converted layer starts near the teacher.
"""

from __future__ import annotations

import torch
from torch import nn

from hydrahead.layers.norm import RMSNorm, head_table, rms_norm


class BranchNorm(nn.Module):
    """RMSNorm over head_dim shared by the heads of one branch, then a learnable gain per head."""

    def __init__(self, num_heads: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.norm = RMSNorm(head_dim, eps)
        self.gain = nn.Parameter(torch.ones(num_heads))

    def forward(self, o: torch.Tensor) -> torch.Tensor:
        """o: (B, T, H, D) -> (B, T, H, D)."""
        return self.norm(o) * self.gain.to(o.dtype)[:, None]


def fuse(outputs: list[torch.Tensor], norms: list[BranchNorm | None]) -> torch.Tensor:
    """The branches' outputs (B, T, H_i, D) side by side on the head axis, each normalised by its BranchNorm
    when it has one: one normalisation over all heads with a per-head weight table (each branch's RMSNorm
    weight times its gains), the same values as each BranchNorm applied on its own."""
    out = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
    if all(norm is None for norm in norms):
        return out
    table = head_table(*((norm.norm.weight * norm.gain[:, None].to(norm.norm.weight.dtype), o.shape[2])
                         for norm, o in zip(norms, outputs)))
    return rms_norm(out, table.to(out.dtype), norms[0].norm.variance_epsilon)
