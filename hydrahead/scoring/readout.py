"""The readout m(x) of Eq. 9 and the indirect effect of Eq. 10.

m(x) = (1/Z) sum_j lambda^j (z_j[a+_j] - z_j[a-_j]),  Z = sum_j lambda^j,  lambda = 0.9,
over the answer span with teacher forcing: z_j are the logits at the position that predicts answer
token j (prompt_length - 1 + j). Positions where a+_j == a-_j add zero.

IE = (m(x) - m(x; patched)) / (m(x) - m(x')): 0 when the patch changes nothing, 1 when it moves the
readout all the way to the corrupted run's.
"""

from __future__ import annotations

import torch

LAMBDA = 0.9


def readout_weights(n: int, lam: float = LAMBDA) -> torch.Tensor:
    """lambda^j / Z for j < n: (n,)"""
    w = lam ** torch.arange(n, dtype=torch.float64)
    return (w / w.sum()).float()


def logit_margin(logits: torch.Tensor, answer: torch.Tensor, distractor: torch.Tensor, lam: float = LAMBDA) -> torch.Tensor:
    """m for each batch row. logits: (B, n, V) at the readout positions; answer, distractor: (n,) ids -> (B,)"""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 at least: float64 stays float64
    idx = torch.arange(answer.shape[0], device=z.device)
    diff = z[:, idx, answer] - z[:, idx, distractor]  # (B, n)
    return diff @ readout_weights(answer.shape[0], lam).to(z.device, z.dtype)


def exact_match(logits: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """Greedy decoding would produce the whole answer: argmax is right at every teacher-forced step. (B,) bool"""
    return (logits.argmax(-1) == answer).all(-1)


def unsolved_note(accuracy: float | None, unchanged: str, consequence: str) -> str | None:
    """A warning when the model solves fewer than half of the probes with nothing `unchanged` ("ablated",
    "changed"): then `consequence`."""
    if accuracy is None or accuracy >= 0.5:
        return None
    return (f"note: the model solves only {accuracy:.0%} of the probes with nothing {unchanged}, so {consequence}; "
            "use probes it can solve (a shorter --context-length, easier --needle-types)")


def indirect_effect(m_clean: torch.Tensor | float, m_patched: torch.Tensor, m_corrupt: torch.Tensor | float) -> torch.Tensor:
    """(m(x) - m(x; patched)) / (m(x) - m(x')), elementwise over m_patched."""
    return (m_clean - m_patched) / (m_clean - m_corrupt)
