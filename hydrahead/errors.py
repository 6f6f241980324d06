"""Typed errors. Every message names the thing that is wrong and what to do about it."""

from __future__ import annotations


class HydraHeadError(Exception):
    """Base class of every error hydrahead raises on purpose; the CLI prints its message."""


class PlanError(HydraHeadError, ValueError):
    """A head plan does not fit the model (layer count, head count, head index)."""


class OptionsError(HydraHeadError, ValueError):
    """Hybrid options that are invalid or contradict each other."""


class UnsupportedModelError(HydraHeadError, TypeError):
    """The model class is not one hydrahead can convert."""


class CheckpointError(HydraHeadError, OSError):
    """A checkpoint directory is missing, incomplete or corrupt."""


class CacheError(HydraHeadError, TypeError):
    """A hybrid model was given a cache it cannot use."""


class NeedleError(HydraHeadError, ValueError):
    """A needle or haystack cannot be built as asked: an unknown value type or haystack, unreadable files."""


class DeviceError(HydraHeadError, ValueError):
    """A device name that is wrong, or names a device this machine does not have."""
