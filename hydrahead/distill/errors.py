"""Typed errors of the distillation pipeline. Each message names what is wrong and what to do about it."""

from __future__ import annotations

from hydrahead.errors import HydraHeadError


class DistillError(HydraHeadError):
    """Base class of every error the distillation pipeline raises on purpose."""


class RecipeError(DistillError, ValueError):
    """A recipe key that is unknown, missing, of the wrong type or out of range; the message names its path."""


class DataError(DistillError, ValueError):
    """A data file that is missing, empty, unreadable or too small for one training sequence."""


class NonFiniteLossError(DistillError, FloatingPointError):
    """The loss or the gradient norm became NaN or inf; the last good checkpoint is left as it was."""


class ResumeError(DistillError):
    """`--resume` without a checkpoint, a checkpoint from a different recipe, or a fresh run over an old one."""
