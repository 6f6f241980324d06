"""Run models over a NIAH grid (task x length x depth x sample): greedy generation, scored per example.

Prompts of one length are batched with left padding, `batch_tokens // length` prompts at a time, and
decoded greedily; hybrids get a fresh `HybridHeadCache` per batch (full-attention K/V plus GDN states),
plain transformers models their usual cache. Each example generates at most its own `max_new_tokens`,
so results do not depend on how examples were batched.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import torch
from tqdm.auto import tqdm

from hydrahead.errors import EvalError, shown
from hydrahead.eval.answers import exact, score
from hydrahead.eval.tasks import Example, Haystack, TaskSpec, make_examples, parse_tasks
from hydrahead.generation import eos_ids
from hydrahead.models.loading import check_vocabulary
from hydrahead.models.shape import check_positions

DEFAULT_BATCH_TOKENS = 32768


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding (so batched prompts end where generation starts) and a pad token (the EOS if none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise EvalError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass
class NiahRecord:
    """One generated answer and its score: a raw result of the report."""

    model: str
    task: str
    length: int
    depth: float
    sample: int
    prompt_tokens: int
    answers: list[str]
    prediction: str
    score: float  # fraction of the answers found (scoring.score)
    exact: bool  # every answer found


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generate_answers(model: Any, tokenizer: Any, batch: Sequence[Example]) -> list[str]:
    """Greedy continuations of a batch of prompts (left-padded), each cut at its own `max_new_tokens`."""
    from transformers import GenerationConfig

    from hydrahead.cache import HybridHeadCache
    from hydrahead.models.hybrid import is_hybrid

    pad = tokenizer.pad_token_id
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(batch):
        ids[i, width - len(e.input_ids):] = torch.tensor(e.input_ids)
        mask[i, width - len(e.input_ids):] = 1
    config = GenerationConfig(
        max_new_tokens=max(e.max_new_tokens for e in batch), do_sample=False, pad_token_id=pad,
        eos_token_id=eos_ids(model, tokenizer),
    )
    extra = {"past_key_values": HybridHeadCache(model.config)} if is_hybrid(model) else {}
    device = _device(model)
    # Plain greedy decoding: generate fills every setting left unset from the model's own generation config, so a
    # checkpoint's repetition penalty (Qwen2.5-Instruct's 1.05-1.1, which also weighs against copying the
    # needle), n-gram ban, beams or stop strings would reach the evaluation; they are set aside for the call.
    kept, model.generation_config = model.generation_config, GenerationConfig()
    try:
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                             **extra)
    finally:
        model.generation_config = kept
    new = out[:, width:].cpu()  # (B, generated)
    return [tokenizer.decode(new[i, : e.max_new_tokens], skip_special_tokens=True) for i, e in enumerate(batch)]


def _past_the_window(record: logging.LogRecord) -> bool:
    """False for transformers' "friendly reminder" that a generation has passed the config's
    max_position_embeddings: a NIAH sweep past a model's window is an extrapolation test on purpose (`check_positions`
    refuses a learned position table's limit; `hydrahead eval niah` notes a rotary model's before it runs). The
    reminder is transformers' once per process, so a later generation past a window is not reminded either."""
    return "predefined maximum length" not in record.getMessage()


def _batches(examples: Sequence[Example], batch_tokens: int) -> list[list[int]]:
    """Indices of `examples` in batches of one length, similar prompt sizes together."""
    order = sorted(range(len(examples)), key=lambda i: (examples[i].length, len(examples[i].input_ids)))
    batches = []
    for length, group in groupby(order, key=lambda i: examples[i].length):
        group, size = list(group), max(1, batch_tokens // length)
        batches.extend(group[j: j + size] for j in range(0, len(group), size))
    return batches


def check_models(models: Any) -> None:
    """EvalError unless `models` is a non-empty mapping of label -> model (what `niah` and `perplexity` compare;
    none gave no results and no error, a list failed on `.items`)."""
    if not isinstance(models, Mapping) or not models:
        raise EvalError(f"models must be a non-empty mapping of label -> model, e.g. {{'hybrid': model}}, got "
                        f"{shown(models)}")
    for label, model in models.items():  # a path, say: an AttributeError after every prompt was built
        if not (hasattr(model, "generate") and hasattr(model, "config")):
            raise EvalError(f"models[{label!r}] must be a transformers causal LM (hydrahead.load_model(path)), got "
                            f"{shown(model)}")


def evaluate_niah(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    label: str = "model",
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    progress: bool = True,
) -> list[NiahRecord]:
    """Generate and score every example with one model; records come back in the order of `examples`.
    UnsupportedModelError before any work when an example needs more positions than a learned table has, EvalError
    when the tokenizer has more tokens than the model has embeddings (another model's)."""
    check_vocabulary(tokenizer, model.config, getattr(tokenizer, "name_or_path", None), EvalError)
    if examples:
        check_positions(model.config, max(len(e.input_ids) + e.max_new_tokens for e in examples), "a prompt of",
                        label)
    tokenizer = prepare_tokenizer(copy.deepcopy(tokenizer))  # the caller's keeps its padding side and pad token
    predictions: list[str | None] = [None] * len(examples)
    stopping = logging.getLogger("transformers.generation.stopping_criteria")
    stopping.addFilter(_past_the_window)
    try:
        with tqdm(total=len(examples), desc=f"niah {label}", unit="prompt", disable=not progress) as bar:
            for batch in _batches(examples, batch_tokens):
                answers = generate_answers(model, tokenizer, [examples[i] for i in batch])
                for i, answer in zip(batch, answers):
                    predictions[i] = answer
                bar.update(len(batch))
    finally:
        stopping.removeFilter(_past_the_window)
    return [
        NiahRecord(label, e.task, e.length, e.depth, e.sample, len(e.input_ids), list(e.answers), p,
                   score(p, e.answers), exact(p, e.answers))
        for e, p in zip(examples, predictions)
    ]


def niah(
    models: Mapping[str, Any],
    tokenizer: Any,
    lengths: Iterable[int],
    depths: Iterable[float],
    tasks: str | Iterable[str | TaskSpec] = "all",
    samples: int = 4,
    seed: int = 0,
    haystack: Haystack | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    progress: bool = True,
) -> list[NiahRecord]:
    """Every model in `models` (label -> model) over the same grid of prompts; raw records of all of them."""
    check_models(models)
    specs = parse_tasks(tasks) if isinstance(tasks, str) else tasks
    examples = make_examples(tokenizer, specs, lengths, depths, samples, seed, haystack)
    records = []
    for label, model in models.items():
        records.extend(evaluate_niah(model, tokenizer, examples, label, batch_tokens, progress))
    return records
