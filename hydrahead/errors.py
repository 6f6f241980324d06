"""Every error type hydrahead raises on purpose, in one place, and the category of its warnings
(`HydraHeadWarning`). Each message names the thing that is wrong and what to do about it; the CLI prints it as
one line and exits 2 (a warning: one line, and the command goes on). `one_line` puts a wrapped library error (from
transformers, a file reader) into such a message."""

from __future__ import annotations

from typing import Any


def one_line(err: BaseException) -> str:
    """An exception's message on one line (transformers' validation errors span several)."""
    return " ".join(str(err).split())


def shown(value: Any) -> str:
    """A value as a message shows it, with its type when the repr alone could hide it ('False' vs False)."""
    if isinstance(value, (bool, int, type(None))):
        return repr(value)
    return f"{value!r} (a {'string' if isinstance(value, str) else type(value).__name__})"


def integer(value: Any, what: str, error: type[Exception]) -> int:
    """`value` as an int when it is a whole number (numpy's integers and 0-d integer tensors too, never a bool, a
    float or a string); `error` naming `what` otherwise."""
    import operator

    if not isinstance(value, (bool, str, bytes, float)):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise error(f"{what} must be an integer, got {shown(value)}")


def items(value: Any) -> tuple | None:
    """A list-like value's items, or None when it is not one (a string, a scalar, a 0-d array)."""
    from collections.abc import Iterable

    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) or getattr(value, "ndim", 1) == 0:
        return None
    return tuple(value)


def number(value: Any, what: str, error: type[Exception]) -> float:
    """`value` as a float when it is a real number (an int, numpy's, never a bool or a string); `error` naming
    `what` otherwise."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{what} must be a number, got {shown(value)}")
    return float(value)


class HydraHeadError(Exception):
    """Base class of every error hydrahead raises on purpose; the CLI prints its message."""


class HydraHeadWarning(UserWarning):
    """A warning hydrahead gives on purpose: something the user may want to change, which does not stop the job.
    The CLI prints it as one line, `hydrahead COMMAND: warning: ...`; in Python, `warnings.filterwarnings(
    "ignore", category=hydrahead.HydraHeadWarning)` silences them all."""


class PlanError(HydraHeadError, ValueError):
    """A head plan does not fit the model (layer count, head count, head index)."""


class OptionsError(HydraHeadError, ValueError):
    """Hybrid options that are invalid or contradict each other."""


class UnsupportedModelError(HydraHeadError, TypeError):
    """The model class is not one hydrahead can convert."""


class CheckpointError(HydraHeadError, OSError):
    """A checkpoint directory is missing, incomplete or corrupt."""


class GgufNotInstalledError(CheckpointError):
    """A .gguf model was given, but the packages that read one (the `gguf` extra) are not installed."""


class CacheError(HydraHeadError, TypeError):
    """A hybrid model was given a cache it cannot use."""


class ServingError(HydraHeadError, RuntimeError):
    """A server cannot start as asked: a port in use, the serving packages missing, an option a hybrid refuses."""


class GenerationError(HydraHeadError, ValueError):
    """Text cannot be generated as asked: an empty prompt, a chat prompt for a model without a chat template, a
    padding mask of another shape than the forward's tokens."""


class NeedleError(HydraHeadError, ValueError):
    """A needle or haystack cannot be built as asked: an unknown value type or haystack, unreadable files."""


class DeviceError(HydraHeadError, ValueError):
    """A device name that is wrong, or names a device this machine does not have."""


# ------------------------------------------------------------------------------------------ ops
class GatedDeltaRuleError(HydraHeadError, ValueError):
    """Inputs to `gated_delta_rule` with the wrong rank, mismatched shapes, or an unknown or unusable mode."""


class FlaNotInstalledError(HydraHeadError, ImportError):
    """mode="fla" was asked for, but fla (package `fla-core`) cannot be imported."""


# ------------------------------------------------------------------------------------------ scoring
class ScoringError(HydraHeadError, ValueError):
    """Scoring cannot run as asked: an unsupported model, a score file for another model shape, a bad method."""


class ProbeError(ScoringError):
    """Probes cannot be built as asked: a context too short, a tokenizer that cannot make same-length distractors."""


# ------------------------------------------------------------------------------------------ distillation
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


# ------------------------------------------------------------------------------------------ evaluation, demo
class EvalError(HydraHeadError, ValueError):
    """An evaluation that cannot run as asked: a missing data file, a length too short, a bad task name."""


class TeacherError(HydraHeadError):
    """The shipped demo teacher is missing or damaged, or a retrain cannot run as asked."""


class TrainingInterrupted(DistillError):
    """SIGTERM or SIGINT stopped a run; a checkpoint was written at the step boundary first."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class OutputError(HydraHeadError, OSError):
    """An output path that cannot be written: a file where a directory is needed (or the reverse), no
    permission, a full disk."""
