"""hydrahead: head-level hybrid attention for Hugging Face LLMs.

Softmax full attention is kept only for the heads that matter for retrieval; every other head becomes
Gated DeltaNet linear attention, joined by a scale-normalised fusion.
"""

from hydrahead.errors import (
    CacheError,
    CheckpointError,
    DataError,
    DeviceError,
    DistillError,
    EvalError,
    HydraHeadError,
    OptionsError,
    PlanError,
    RecipeError,
    ScoringError,
    ServingError,
    UnsupportedModelError,
)
from hydrahead.cache import HybridHeadCache
from hydrahead.models.convert import convert, hybrid_parameters
from hydrahead.models.gguf import export_gguf
from hydrahead.models.hybrid import is_hybrid  # importing registers the hybrid classes with the Auto classes
from hydrahead.models.loading import from_pretrained, load_model, load_tokenizer, save_hybrid
from hydrahead.options import HybridOptions
from hydrahead.plan import HeadPlan
from hydrahead.serving import serve
from hydrahead.utils.memory import keep_freed_memory
from hydrahead.scoring import (
    HeadScores,
    ProbeConfig,
    ablate,
    build_probes,
    layer_similarity,
    score_heads,
    validate_scores,
)

__version__ = "0.1.0"

# Heavier subpackages load on first use (`hydrahead.distill.run(...)`, `hydrahead.eval.niah(...)`),
# so `import hydrahead` and the CLI stay quick.
_LAZY_MODULES = {"distill", "eval", "demo"}


def __getattr__(name: str):
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(f"hydrahead.{name}")
    raise AttributeError(f"module 'hydrahead' has no attribute {name!r}")


__all__ = [
    "CacheError",
    "CheckpointError",
    "DataError",
    "DeviceError",
    "DistillError",
    "EvalError",
    "HeadPlan",
    "HeadScores",
    "HybridHeadCache",
    "HybridOptions",
    "HydraHeadError",
    "OptionsError",
    "PlanError",
    "ProbeConfig",
    "RecipeError",
    "ScoringError",
    "ServingError",
    "UnsupportedModelError",
    "ablate",
    "build_probes",
    "convert",
    "distill",
    "export_gguf",
    "from_pretrained",
    "hybrid_parameters",
    "is_hybrid",
    "keep_freed_memory",
    "load_model",
    "load_tokenizer",
    "layer_similarity",
    "save_hybrid",
    "score_heads",
    "serve",
    "validate_scores",
]
