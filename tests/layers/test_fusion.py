"""`fuse` (one normalisation over both branches, in place without autograd) gives what each branch's RMSNorm
then per-head gain gives on its own, side by side (paper Eq. 13-14)."""

import pytest
import torch

from hydrahead.layers.fusion import BranchNorm, fuse


@pytest.mark.parametrize("grad", [False, True])
def test_one_normalisation_equals_each_branch_on_its_own(grad):
    torch.manual_seed(0)
    norms = [BranchNorm(2, 16, 1e-6), BranchNorm(5, 16, 1e-6)]
    with torch.no_grad():
        for norm in norms:
            norm.norm.weight.normal_()
            norm.gain.uniform_(0.5, 3.0)
    outputs = [3.0 * torch.randn(2, 7, 2, 16), 0.01 * torch.randn(2, 7, 5, 16)]  # branches on different scales
    expected = torch.cat([norm.norm(o) * norm.gain[:, None] for norm, o in zip(norms, outputs)], dim=2)
    with torch.set_grad_enabled(grad):
        got = fuse(outputs, norms)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_without_norms_the_outputs_are_only_joined():
    outputs = [torch.randn(1, 3, 2, 8), torch.randn(1, 3, 1, 8)]
    assert torch.equal(fuse(outputs, [None, None]), torch.cat(outputs, dim=2))
