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
    GenerationError,
    HydraHeadError,
    HydraHeadWarning,
    OptionsError,
    PlanError,
    RecipeError,
    ScoringError,
    ServingError,
    UnsupportedModelError,
)
import sys

__version__ = "0.1.0"

# The public API, imported on first use (PEP 562): `hydrahead.convert(...)`, `from hydrahead import HeadPlan`.
_ATTRIBUTES = {
    "HybridHeadCache": "hydrahead.cache",
    "convert": "hydrahead.models.convert",
    "hybrid_parameters": "hydrahead.models.convert",
    "export_gguf": "hydrahead.models.gguf",
    "GenerationResult": "hydrahead.generation",
    "generate_text": "hydrahead.generation",
    "is_hybrid": "hydrahead.models.hybrid",
    "from_pretrained": "hydrahead.models.loading",
    "load_model": "hydrahead.models.loading",
    "load_tokenizer": "hydrahead.models.loading",
    "save_hybrid": "hydrahead.models.loading",
    "HybridOptions": "hydrahead.options",
    "HeadPlan": "hydrahead.plan",
    "serve": "hydrahead.serving",
    "keep_freed_memory": "hydrahead.utils.memory",
    **{name: "hydrahead.scoring" for name in ("HeadScores", "ProbeConfig", "ablate", "build_probes",
                                              "layer_similarity", "score_heads", "validate_scores")},
}
_SUBPACKAGES = {"distill", "eval", "demo"}

# `import hydrahead` registers the hybrid classes with transformers' Auto classes and its checkpoint conversion
# mapping (importing hydrahead.models.hybrid does; torch and transformers come with it, seconds here). The
# `hydrahead` command (hydrahead_command.py) defers that to the first subcommand that loads a model, so that
# `hydrahead --help` and a one-line error need neither.
if "hydrahead_command" not in sys.modules:
    import hydrahead.models.hybrid  # noqa: F401


def __getattr__(name: str):
    import importlib

    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"hydrahead.{name}")
    raise AttributeError(f"module 'hydrahead' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ATTRIBUTES) | _SUBPACKAGES)


__all__ = [
    "CacheError",
    "CheckpointError",
    "DataError",
    "DeviceError",
    "DistillError",
    "EvalError",
    "GenerationError",
    "GenerationResult",
    "HeadPlan",
    "HeadScores",
    "HybridHeadCache",
    "HybridOptions",
    "HydraHeadError",
    "HydraHeadWarning",
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
    "generate_text",
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
