"""Scale-normalised fusion of the FA and GDN branches (paper Eq. 13-14).

O^_h = RMSNorm_branch(O_h), O~_h = gamma_h * O^_h. GDN outputs can be several times larger than FA
outputs in deep layers; normalising each branch and learning one gain per head puts them on one scale.
The gains start at the teacher's per-head output RMS (ours), so the converted layer starts near the teacher.
"""

from __future__ import annotations

import torch
from torch import nn

from hydrahead.layers.norm import RMSNorm, head_table, weight_table
from hydrahead.ops.gated_delta import in_compute_dtype, l2_length


class BranchNorm(nn.Module):
    """RMSNorm over head_dim shared by the heads of one branch, then a learnable gain per head."""

    def __init__(self, num_heads: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.norm = RMSNorm(head_dim, eps)
        self.gain = nn.Parameter(torch.ones(num_heads))

    def table(self, scale: float = 1.0) -> torch.Tensor:
        """(H, D): what each head's RMS-normalised output is multiplied by, the norm's weight times the head's
        gain (times `scale`)."""
        return self.norm.weight * (self.gain[:, None].to(self.norm.weight.dtype) * scale)


def fuse(outputs: list[torch.Tensor], norms: list[BranchNorm | None], store: object | None = None) -> torch.Tensor:
    """The branches' outputs (B, T, H_i, D) side by side on the head axis, each normalised by its BranchNorm
    when it has one: one normalisation over all heads with a per-head weight table (`BranchNorm.table`), the
    values of RMSNorm then gain applied per branch (tests/layers/test_fusion.py). The RMS comes from one norm
    reduction (x / sqrt(mean(x^2) + eps) == x / (hypot(|x|, sqrt(D eps)) / sqrt(D))), and without autograd
    the scaling is in place: no temporary of the output's size. With `store` (the layer's cache layer), the
    weight table is kept there for the generation (`weight_table`)."""
    out = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
    if all(norm is None for norm in norms):
        return out
    D = out.shape[-1]

    def build() -> torch.Tensor:
        return head_table(*((norm.table(D**0.5), o.shape[2]) for norm, o in zip(norms, outputs))).to(out.dtype)

    table = weight_table(store, ("fusion", out.dtype), build)
    x32 = in_compute_dtype(out)  # fp32, or fp64 kept
    rms = l2_length(x32, D * norms[0].norm.variance_epsilon)  # sqrt(D) * RMS: the sqrt(D) is in the table
    if torch.is_grad_enabled() or len(outputs) == 1 or x32 is not out:  # out may be a branch's own tensor
        return (x32 / rms).to(out.dtype) * table
    return out.div_(rms).mul_(table)
