"""The scoring attention function against a written-out softmax attention."""

import pytest
import torch

from hydrahead.scoring.attention import AttentionControl, scoring_attention


class Module(torch.nn.Module):
    layer_idx = 0


def reference(q, k, v, window=None):
    """softmax(q k^T / sqrt(D) + causal) v with GQA, written out. q (B, H, T, D); k, v (B, KV, T, D)."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    T = q.shape[2]
    i = torch.arange(T)
    allowed = i[None, :] <= i[:, None]
    if window is not None:
        allowed &= i[:, None] - i[None, :] < window
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return (scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v).transpose(1, 2)  # (B, T, H, D)


@pytest.mark.parametrize("window", [None, 3], ids=["causal", "window3"])
def test_free_record_frozen(window):
    torch.manual_seed(0)
    B, H, KV, T, D = 3, 4, 2, 7, 5
    q, k, v = torch.randn(B, H, T, D), torch.randn(B, KV, T, D), torch.randn(B, KV, T, D)
    control = AttentionControl("record", probs_last=2)
    out, _ = scoring_attention(Module(), q[:1], k[:1], v[:1], None, scaling=D**-0.5, sliding_window=window,
                               hydrahead_attention=control)
    torch.testing.assert_close(out, reference(q[:1], k[:1], v[:1], window))
    assert control.qk[0][0].shape == (1, H, T, D)
    # probabilities of the last 2 query positions
    full = (q[:1] @ k[:1].repeat_interleave(2, 1).transpose(-1, -2) / D**0.5)
    torch.testing.assert_close(control.probs[0].sum(-1), torch.ones(1, H, 2))
    assert control.probs[0].shape == (1, H, 2, T) and full.shape[-1] == T
    # frozen: pattern from the recorded (clean) q, k; values from this batch
    frozen = AttentionControl("frozen", qk=control.qk)
    out, _ = scoring_attention(Module(), q, k, v, None, scaling=D**-0.5, sliding_window=window, hydrahead_attention=frozen)
    expected = reference(q[:1].expand(B, -1, -1, -1), k[:1].expand(B, -1, -1, -1), v, window)
    torch.testing.assert_close(out, expected)


def test_detach_cuts_the_pattern_from_the_graph():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 3, requires_grad=True) for _ in range(3))
    out, _ = scoring_attention(Module(), q, k, v, None, hydrahead_attention=AttentionControl("detach"))
    out.sum().backward()
    assert q.grad is None and k.grad is None and v.grad is not None
