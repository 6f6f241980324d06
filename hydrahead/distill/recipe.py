"""The distillation recipe: plain dataclasses, validated on load, serialisable back to a dict.

A recipe names the teacher, the head plan, the hybrid options, the data, the engine settings and, per
stage, its token budget, sequence length, optimiser and schedule. `Recipe.from_yaml` / `from_dict`
reject an unknown or misspelt key with its full path ("stages.align.lr_warmup") and a suggestion, a
missing required key, a value of the wrong type and an out-of-range value. Relative paths in a YAML
recipe are relative to the recipe file, so a recipe and its data can move together.

Batch sizes are global: `batch_size` sequences per micro-step over all processes together (each of N
processes takes batch_size / N), `grad_accum` micro-steps per optimiser step, and every loss is divided by
the counts (targets, real positions, sequences) of the whole optimiser step, not of a micro-batch. The same
recipe therefore trains the same way on one process or on many, with padded rows too.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hydrahead.errors import RecipeError
from hydrahead.distill.example import EXAMPLE_RECIPE
from hydrahead.distill.schema import FieldError, build, check, suggest
from hydrahead.utils.io import json_sha256, read_yaml_mapping
from hydrahead.utils.units import parse_length, parse_tokens
from hydrahead.errors import OptionsError
from hydrahead.options import HybridOptions

__all__ = [  # EXAMPLE_RECIPE (example.py) is re-exported here: it documents this module's dataclasses
    "EXAMPLE_RECIPE", "RUNTIME_KEYS", "STAGE_NAMES", "AlignStageConfig", "DataConfig", "DistillStageConfig",
    "LongContextStageConfig", "LoraConfig", "PretrainRecipe", "Recipe", "StageConfig", "StagesConfig", "TrainingConfig",
    "diff_identities", "parse_tokens", "set_dotted",
]

STAGE_NAMES = ("align", "distill", "long_context")

# Keys that change how a run is observed or how much memory it takes, not what it computes: they may differ on
# --resume (gradient checkpointing recomputes the same activations: turned on after running out of memory).
RUNTIME_KEYS = (
    "output_dir",
    "training.gradient_checkpointing",
    "training.checkpoint_every",
    "training.log_every",
    "training.eval_every",
    "training.tensorboard",
    "training.progress",
    "data.eval_files",
    "data.eval_sequences",
    "data.cache_dir",
)


# ----------------------------------------------------------------------------------------------- sections
@dataclass(kw_only=True)
class DataConfig:
    train_files: list[str]
    """Text (.txt), JSON lines (.jsonl/.json) or Parquet (.parquet) files or glob patterns, read in this order."""
    eval_files: list[str] = field(default_factory=list)
    """Held-out files for the perplexity evaluation (none: no evaluation)."""
    text_field: str = "text"
    """Column holding the document text in JSONL / Parquet files."""
    txt_sample_by: Literal["paragraph", "line", "document"] = "paragraph"
    """What one document is in a .txt file: a blank-line-separated paragraph, a line, or the whole file."""
    packing: Literal["concat", "documents"] = "concat"
    """How documents fill training rows. concat: one stream cut every seq_len tokens (documents run across
    rows). documents: a document that fits in a row is never cut; it starts a new row when it does not fit
    in what is left, the rest of the row is padding with no loss in any term (found by position, so a pad
token equal to EOS is fine; longer documents are cut into full rows).
    For retrieval data, where a cut separates a needle from its question. Needs streaming: false."""
    isolate_documents: bool = False
    """With packing: documents, each document of a row sees only itself, as if run alone: position ids
    restart, FA heads get a block-diagonal mask, GDN heads restart their state and conv window (cu_seqlens),
    and the token after a document's EOS is no target. Off: a row is one sequence (what the demo's scales for
    its shipped teacher use; `study`, for a pretrained one, turns it on)."""
    streaming: bool = False
    """False: tokenise once into a cached token file, shuffle packed sequences exactly. True: stream documents
    through a shuffle buffer (for corpora that do not fit on disk twice); resuming re-reads the skipped prefix."""
    shuffle_buffer: int = 10_000
    """Documents in the shuffle buffer (streaming only)."""
    eval_sequences: int = 8
    """Held-out sequences per evaluation, at the stage's sequence length."""
    cache_dir: str | None = None
    """Where tokenised corpora are cached (default: <output_dir>/cache)."""

    def __post_init__(self) -> None:
        check(len(self.train_files) > 0, "train_files", "must name at least one file")
        check(self.shuffle_buffer >= 1, "shuffle_buffer", f"must be >= 1, got {self.shuffle_buffer}")
        check(self.eval_sequences >= 1, "eval_sequences", f"must be >= 1, got {self.eval_sequences}")
        check(not (self.streaming and self.packing == "documents"), "packing",
              "documents needs streaming: false (rows are laid out over the cached token file)")
        check(not self.isolate_documents or self.packing == "documents", "isolate_documents",
              "needs packing: documents (rows of whole documents)")


@dataclass(kw_only=True)
class LoraConfig:
    r: int = 16
    """Rank of the LoRA update."""
    alpha: float = 32.0
    """LoRA scaling numerator (update scaled by alpha / r)."""
    dropout: float = 0.0
    target_modules: list[str] | None = None
    """Backbone linear layers to adapt, by name suffix (e.g. [qkv_proj, o_proj]: the FA branch's q/k/v are one
    fused qkv_proj); default: every backbone linear layer except lm_head. Hybrid-attention parameters (the GDN
    branch's projections among them) always train in full."""

    def __post_init__(self) -> None:
        check(self.r >= 1, "r", f"must be >= 1, got {self.r}")
        check(self.target_modules is None or len(self.target_modules) > 0, "target_modules",
              "must name at least one layer, or be left out (every backbone linear layer)")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass(kw_only=True)
class StageConfig:
    """Settings every stage has. A stage ends when it has seen `tokens` tokens."""

    tokens: int = field(metadata={"parse": parse_tokens})
    """Token budget: the stage runs ceil(tokens / tokens_per_step) optimiser steps. Accepts "300M", "0.3B" (M = 10^6; hydrahead/utils/units.py)."""
    seq_len: int = field(metadata={"parse": parse_length})
    """Tokens per packed training sequence. Accepts "4k" (= 4096: lengths count k = 1024)."""
    batch_size: int
    """Global sequences per micro-step (all processes together; must divide by the process count)."""
    lr: float
    """Peak learning rate (AdamW)."""
    grad_accum: int = 1
    """Micro-steps per optimiser step."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warm-up, down to lr * min_lr_ratio."""
    warmup_fraction: float = 0.01
    """Fraction of the stage's steps spent in linear warm-up from 0."""
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    """AdamW weight decay, on matrices only (not on norms, biases, gains)."""
    betas: tuple[float, float] = (0.9, 0.95)
    max_grad_norm: float = 1.0
    """Gradient clipping threshold (0: no clipping, the norm is still logged)."""
    train_files: list[str] | None = None
    """Data files for this stage only (e.g. long documents for long_context); default: data.train_files."""
    skip: bool = False
    """Leave the stage out (same as leaving its section out)."""

    def __post_init__(self) -> None:
        for name in ("tokens", "seq_len", "batch_size", "grad_accum"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(self.seq_len >= 2, "seq_len", f"must be >= 2 (a next-token target needs two tokens), got {self.seq_len}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(0.0 <= self.warmup_fraction < 1.0, "warmup_fraction", f"must be in [0, 1), got {self.warmup_fraction}")
        check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(all(0.0 <= b < 1.0 for b in self.betas), "betas", f"must be in [0, 1), got {list(self.betas)}")
        check(self.max_grad_norm >= 0, "max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        check(self.train_files is None or len(self.train_files) > 0, "train_files",
              "must name at least one file, or be left out (data.train_files)")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    @property
    def total_steps(self) -> int:
        return math.ceil(self.tokens / self.tokens_per_step)

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_fraction * self.total_steps))


@dataclass(kw_only=True)
class AlignStageConfig(StageConfig):
    """Stage 1: only the hybrid-attention parameters train; per-layer hidden-state MSE to the teacher."""

    loss: Literal["nmse", "mse"] = "nmse"
    """nmse: each layer's MSE divided by the teacher's variance of that layer's output (scale-free: deep layers
    with massive activations do not drown the others); mse: plain MSE (paper Eq. 15). See losses.hidden_state_loss."""
    sink_tokens: int = 0
    """The first `sink_tokens` positions of every document (of every row unless data.isolate_documents) count in
    neither the loss nor the teacher variance nmse divides by. A model with an attention sink writes a massive
    activation at a sequence's first token that the converted layers do not reproduce: on SmolLM2-135M that one
    position held 98.9% of layer 15's error, and layers 11-27 read 1.00 for a whole run (docs/real_models.md
    section 7). 1 leaves that position out; 0 (the default) counts every position, as the paper does."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.sink_tokens >= 0, "sink_tokens", f"must be >= 0, got {self.sink_tokens}")
        check(self.sink_tokens < self.seq_len, "sink_tokens",
              f"must be below seq_len ({self.seq_len}), got {self.sink_tokens}: no position of a row would count")


@dataclass(kw_only=True)
class DistillStageConfig(StageConfig):
    """Stage 2: every parameter trains (or hybrid parameters + LoRA); KL(teacher || student) + CE."""

    temperature: float = 1.0
    """Softmax temperature of the KL term (the KL is scaled by temperature**2)."""
    kl_weight: float = 1.0
    ce_weight: float = 1.0
    """Weight of the next-token cross-entropy (paper Eq. 16 adds KL and CE with equal weight)."""
    loss_chunk: int = 1024
    """Sequence positions per logits chunk: full (B, T, vocab) logits are never held."""
    lora: LoraConfig | None = None
    """Train LoRA adapters on the backbone (through peft) instead of the full backbone; merged at stage end."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        check(self.kl_weight >= 0 and self.ce_weight >= 0, "kl_weight", "and ce_weight must be >= 0")
        check(self.kl_weight + self.ce_weight > 0, "kl_weight", "and ce_weight cannot both be 0")
        check(self.loss_chunk >= 1, "loss_chunk", f"must be >= 1, got {self.loss_chunk}")


@dataclass(kw_only=True)
class LongContextStageConfig(StageConfig):
    """Stage 3: next-token cross-entropy at a long sequence length; no teacher."""

    loss_chunk: int = 1024
    """Sequence positions per logits chunk."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.loss_chunk >= 1, "loss_chunk", f"must be >= 1, got {self.loss_chunk}")


@dataclass(kw_only=True)
class StagesConfig:
    align: AlignStageConfig | None = None
    distill: DistillStageConfig | None = None
    long_context: LongContextStageConfig | None = None

    def __post_init__(self) -> None:
        check(bool(self.active()), "", "must run at least one of align, distill, long_context")

    def active(self) -> list[tuple[str, StageConfig]]:
        """The stages that run, in order."""
        return [(n, s) for n in STAGE_NAMES if (s := getattr(self, n)) is not None and not s.skip]


@dataclass(kw_only=True)
class TrainingConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when available (one GPU per process under torchrun), else CPU."""
    distributed: Literal["auto", "ddp", "fsdp"] = "auto"
    """With more than one process: DDP (auto), or FSDP2 (fully_shard) for training that does not fit one GPU (the
    student and teacher are built whole on each GPU before sharding: they must fit one; distill/distributed.py)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast (fp32 master weights); auto: bf16 on CUDA, fp32 on CPU."""
    teacher_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Teacher weights in memory; auto: bfloat16 on CUDA, float32 on CPU."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in backward instead of keeping them: SmolLM2-135M's distillation at
    4 x 512 tokens on the CPU peaked at 6.4 GB with it, 15.5 GB without (`hydrahead distill`, glibc's allocator
    defaults; docs/real_models.md section 7)."""
    checkpoint_every: int = 500
    """Optimiser steps between checkpoints (0: only at the end of each stage)."""
    log_every: int = 10
    """Optimiser steps between metrics lines."""
    eval_every: int = 0
    """Optimiser steps between held-out evaluations (0: only at the end of each stage)."""
    tensorboard: bool = False
    """Also write metrics for TensorBoard, one run per stage in <output_dir>/tensorboard/<stage>
    (pip install 'hydrahead[tensorboard]')."""
    progress: bool = True
    """Progress bar with loss, tokens/s and ETA."""

    def __post_init__(self) -> None:
        for name in ("checkpoint_every", "eval_every"):
            check(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")


class _RecipeFile:
    """Loading, saving and identity, shared by `Recipe` and `PretrainRecipe`."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return build(cls, data, "")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None):
        """Load a YAML recipe; `overrides` maps dotted keys ("stages.align.lr") to values set before validation."""
        path = Path(path)
        data = read_yaml_mapping(path, RecipeError, "recipe file")
        for key, value in (overrides or {}).items():
            set_dotted(data, key, value)
        return cls.from_dict(_resolve_paths(data, path.parent.resolve()))

    @classmethod
    def load(cls, recipe: Any):
        """A recipe as is, a dict, or a path to a YAML recipe."""
        if isinstance(recipe, cls):
            return recipe
        if isinstance(recipe, dict):
            return cls.from_dict(recipe)
        return cls.from_yaml(recipe)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(json.dumps(self.to_dict())), sort_keys=False)

    def check_seed(self) -> None:
        # numpy's and torch's generators take seeds from 0 to 2**64 - 1
        check(0 <= self.seed < 2**64, "seed", f"must be a whole number from 0 to 2**64 - 1, got {self.seed}")

    def identity(self, plan: dict[str, Any] | None = None) -> dict[str, Any]:
        """The keys that decide what a run computes (RUNTIME_KEYS removed): two recipes with the same
        identity train the same model, so a checkpoint of one resumes the other."""
        return without_runtime_keys(self.to_dict())

    def fingerprint(self, plan: dict[str, Any] | None = None) -> str:
        return fingerprint_of(self.identity(plan))


@dataclass(kw_only=True)
class Recipe(_RecipeFile):
    teacher: str
    """Teacher checkpoint directory (transformers format, with its tokenizer)."""
    plan: str
    """Head plan JSON (`hydrahead plan` / HeadPlan.to_json)."""
    output_dir: str
    """Checkpoints, metrics.jsonl and the final hybrid (<output_dir>/final)."""
    data: DataConfig
    stages: StagesConfig
    hybrid: dict[str, Any] = field(default_factory=lambda: {"preset": "paper"})
    """Hybrid options: `preset` ("paper" or "exact") plus any HybridOptions field as an override."""
    training: TrainingConfig = field(default_factory=TrainingConfig)
    seed: int = 0
    """Seeds conversion, data order and every random number generator."""

    def __post_init__(self) -> None:
        self.check_seed()
        self.hybrid_options()  # validate now

    def hybrid_options(self) -> HybridOptions:
        spec = dict(self.hybrid)
        preset = spec.pop("preset", "paper")
        allowed = ["preset", *HybridOptions.field_names()]
        for key in spec:
            if key not in allowed:
                raise FieldError(f"hybrid.{key}", f"is an unknown key (not a hybrid option){suggest(key, allowed)}")
        try:
            return HybridOptions.preset(preset, **spec)
        except OptionsError as err:
            raise FieldError("hybrid", f"is invalid: {err}") from err

    def identity(self, plan: dict[str, Any] | None = None) -> dict[str, Any]:
        """The run's identity with the resolved hybrid options and the plan's contents in."""
        data = super().identity()
        data["hybrid"] = self.hybrid_options().to_dict()
        if not data["hybrid"]["gdn_mean_output"]:  # what a run from before the option computed: it resumes
            del data["hybrid"]["gdn_mean_output"]
        if plan is not None:  # its meta's tie count is a note about how it was made, not what it is
            data["plan"] = {**plan, "meta": {k: v for k, v in plan.get("meta", {}).items() if k != "tied_picks"}} \
                if isinstance(plan.get("meta"), dict) else plan
        return data


@dataclass(kw_only=True)
class PretrainRecipe(_RecipeFile):
    """A model trained from scratch by next-token prediction (the demo's teacher): no teacher, no plan."""

    model: dict[str, Any]
    """A transformers config as a mapping: `model_type` ("llama", "qwen3", ...) plus its fields. vocab_size,
    eos/pad token ids default to the tokenizer's."""
    tokenizer: str
    """Directory holding the tokenizer (saved with the final model)."""
    output_dir: str
    """Checkpoints, metrics.jsonl and the final model (<output_dir>/final)."""
    data: DataConfig
    stage: LongContextStageConfig
    """Token budget, sequence length, batch, optimiser and schedule (next-token loss, as stage 3)."""
    training: TrainingConfig = field(default_factory=TrainingConfig)
    seed: int = 0
    """Seeds the initialisation, data order and every random number generator."""
    init: str | None = None
    """A checkpoint directory (a `pretrain` final model) whose weights training starts from instead of a fresh
    initialisation: a curriculum's next phase. Its config must be `model`'s."""

    def __post_init__(self) -> None:
        self.check_seed()
        check("model_type" in self.model, "model", "must name its model_type (e.g. llama)")
        # what a distillation stage has and pretraining has not: one stage, on data.train_files
        check(self.stage.train_files is None, "stage.train_files", "is not read by pretrain: use data.train_files")
        check(not self.stage.skip, "stage.skip", "is not read by pretrain: its one stage always runs")


def fingerprint_of(identity: dict[str, Any]) -> str:
    """A run identity's fingerprint, what a checkpoint records and --resume compares."""
    return json_sha256(identity)[:16]


def without_runtime_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a recipe mapping (or a stored identity: one written before a key joined RUNTIME_KEYS still has
    it) without the RUNTIME_KEYS."""
    data = json.loads(json.dumps(data))
    for key in RUNTIME_KEYS:
        *parents, leaf = key.split(".")
        node = data
        for parent in parents:
            node = node.get(parent, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """data["a"]["b"]["c"] = value for key "a.b.c", creating sections on the way."""
    *parents, leaf = key.split(".")
    node = data
    for i, parent in enumerate(parents):
        if node.get(parent) is None:  # absent, or left empty in the YAML (`training:`), which reads as defaults
            node[parent] = {}
        node = node[parent]
        if not isinstance(node, dict):
            raise RecipeError(f"cannot set {key}: {'.'.join(parents[: i + 1])} is not a section")
    node[leaf] = value


def diff_identities(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths whose values differ, with both values: ["stages.align.lr: 0.001 -> 0.002", ...]."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(diff_identities(a, b, f"{path}."))
        elif a != b:
            out.append(f"{path}: {_short(a)} -> {_short(b)}")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------------------------- building
_PATH_KEYS = ("teacher", "plan", "output_dir", "tokenizer", "init")


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the recipe's relative paths relative to `base` (the recipe file's folder)."""
    def resolve(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            return str(base / value)
        if isinstance(value, str):
            return str(Path(value).expanduser())
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    data = dict(data)
    for key in _PATH_KEYS:
        if key in data:
            data[key] = resolve(data[key])
    if isinstance(data.get("data"), dict):
        section = data["data"] = dict(data["data"])
        for key in ("train_files", "eval_files", "cache_dir"):
            if key in section and section[key] is not None:
                section[key] = resolve(section[key])
    if isinstance(data.get("stages"), dict):
        stages = data["stages"] = dict(data["stages"])
        for name, stage in stages.items():
            if isinstance(stage, dict) and stage.get("train_files") is not None:
                stages[name] = {**stage, "train_files": resolve(stage["train_files"])}
    return data
