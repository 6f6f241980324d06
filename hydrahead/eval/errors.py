"""The error type of the evaluation package."""

from __future__ import annotations

from hydrahead.errors import HydraHeadError


class EvalError(HydraHeadError, ValueError):
    """An evaluation that cannot run as asked: a missing model, tokenizer or data file, a length too short."""
