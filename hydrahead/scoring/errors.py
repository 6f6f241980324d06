"""The error types of head scoring."""

from __future__ import annotations

from hydrahead.errors import HydraHeadError


class ScoringError(HydraHeadError, ValueError):
    """Scoring cannot run as asked: an unsupported model, a score file for another model shape, a bad method."""


class ProbeError(ScoringError):
    """Probes cannot be built as asked: a context too short, a tokenizer that cannot make same-length distractors."""
