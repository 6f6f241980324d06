"""Scale-normalised fusion of the FA and GDN branches (paper Eq. 13-14).

O^_h = RMSNorm_branch(O_h), O~_h = gamma_h * O^_h. GDN outputs can be several times larger than FA
outputs in deep layers; normalising each branch and learning one gain per head puts them on one scale.
The gains start at the teacher's per-head output RMS (ours), so the converted layer starts near the teacher.
"""

from __future__ import annotations

import torch
from torch import nn

from hydrahead.layers.norm import RMSNorm, head_table
from hydrahead.ops.gated_delta import scalar_constant


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
    weight times its gains), the values of each BranchNorm applied on its own. The RMS comes from one norm
    reduction (x / sqrt(mean(x^2) + eps) == x / (hypot(|x|, sqrt(D eps)) / sqrt(D))), and without autograd
    the scaling is in place: no temporary of the output's size."""
    out = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
    if all(norm is None for norm in norms):
        return out
    D = out.shape[-1]
    table = head_table(*((norm.norm.weight * (norm.gain[:, None].to(norm.norm.weight.dtype) * D**0.5), o.shape[2])
                         for norm, o in zip(norms, outputs)))
    x32 = out.float()
    eps = norms[0].norm.variance_epsilon
    rms = torch.hypot(torch.linalg.vector_norm(x32, dim=-1, keepdim=True), scalar_constant((D * eps) ** 0.5, x32))
    if torch.is_grad_enabled() or len(outputs) == 1 or x32 is not out:  # out may be a branch's own tensor
        return (x32 / rms).to(out.dtype) * table.to(out.dtype)
    return out.div_(rms).mul_(table.to(out.dtype))
