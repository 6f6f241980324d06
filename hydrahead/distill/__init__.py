"""Three-stage distillation of a hybrid from its teacher (docs/method.md section 4).

    from hydrahead import distill
    distill.run("recipe.yaml")              # or a Recipe, or a dict; resume=True to continue a run
    distill.pretrain(recipe)                # a model from scratch on the same engine (the demo teacher)

Stages: align (hybrid parameters only, hidden-state MSE), distill (KL + CE on chunked logits, optional
LoRA), long_context (next-token CE at long length). One code path for one process and for torchrun
(DDP, or FSDP2). Files: recipe (config; schema builds it from YAML, example documents it), data (files
-> packed batches), losses, stages, trainer (the engine), checkpoint (atomic, resumable), distributed,
metrics, evaluate (hooks), run (the pipeline), pretrain (from scratch, no teacher).
"""

from hydrahead.errors import DataError, DistillError, NonFiniteLossError, RecipeError, ResumeError, TrainingInterrupted
from hydrahead.distill.evaluate import EvalContext, Evaluator, HeldoutPerplexity
from hydrahead.distill.metrics import read_metrics
from hydrahead.distill.recipe import (
    EXAMPLE_RECIPE,
    AlignStageConfig,
    DataConfig,
    DistillStageConfig,
    LongContextStageConfig,
    LoraConfig,
    PretrainRecipe,
    Recipe,
    StageConfig,
    StagesConfig,
    TrainingConfig,
)
from hydrahead.distill.pretrain import pretrain
from hydrahead.distill.run import run
from hydrahead.distill.trainer import StepInfo

__all__ = [
    "EXAMPLE_RECIPE",
    "AlignStageConfig",
    "DataConfig",
    "DataError",
    "DistillError",
    "DistillStageConfig",
    "EvalContext",
    "Evaluator",
    "HeldoutPerplexity",
    "LongContextStageConfig",
    "LoraConfig",
    "NonFiniteLossError",
    "PretrainRecipe",
    "Recipe",
    "RecipeError",
    "ResumeError",
    "StageConfig",
    "StagesConfig",
    "StepInfo",
    "TrainingConfig",
    "TrainingInterrupted",
    "pretrain",
    "read_metrics",
    "run",
]
