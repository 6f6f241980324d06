"""hydrahead: head-level hybrid attention for Hugging Face LLMs.

Softmax full attention is kept only for the heads that matter for retrieval; every other head becomes
Gated DeltaNet linear attention, joined by a scale-normalised fusion.
"""

from hydrahead.errors import (
    CacheError,
    CheckpointError,
    HydraHeadError,
    OptionsError,
    PlanError,
    UnsupportedModelError,
)
from hydrahead.models.cache import HybridHeadCache
from hydrahead.models.convert import convert, hybrid_parameters
from hydrahead.models.hybrid import is_hybrid  # importing registers the hybrid classes with the Auto classes
from hydrahead.models.io import from_pretrained
from hydrahead.options import HybridOptions
from hydrahead.plan import HeadPlan

__version__ = "0.1.0"

__all__ = [
    "CacheError",
    "CheckpointError",
    "HeadPlan",
    "HybridHeadCache",
    "HybridOptions",
    "HydraHeadError",
    "OptionsError",
    "PlanError",
    "UnsupportedModelError",
    "convert",
    "from_pretrained",
    "hybrid_parameters",
    "is_hybrid",
]
