"""Interpretability-driven head selection: probes, causal head scores, ablation, validation.

    scores = score_heads(model, tokenizer, method="patching")   # or "attribution", "retrieval"
    plan = HeadPlan.from_scores(scores, ratio="7:1", min_per_layer=1)

Scoring runs on the teacher (a Qwen3 / Qwen2 / Llama / Mistral causal LM), in whatever dtype it is
loaded in (fp32 recommended on CPU). See docs/method.md section 3 and each module's docstring.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

from torch import nn

from hydrahead.scoring.ablate import ablate, head_means
from hydrahead.errors import ProbeError, ScoringError, integer, number, shown
from hydrahead.scoring.layers_similarity import LayerSimilarity, layer_similarity
from hydrahead.scoring.answer_format import follow_answer_format
from hydrahead.scoring.probes import (Probe, ProbeConfig, build_probes, check_probe_ids, default_context_length,
                                      kv_recall_words)
from hydrahead.scoring.runner import Runner
from hydrahead.scoring.scores import METHODS, HeadScores
from hydrahead.scoring.validate import ValidationReport, teacher_forced_accuracy, validate_scores


def _checked_options(batch_size: Any, options: dict[str, Any]) -> int:
    """`batch_size` as an int >= 1, and the numeric method options in range (ScoringError): a batch of -1 or a
    NaN threshold gave every head a score of 0."""
    batch_size = integer(batch_size, "batch_size", ScoringError)
    if batch_size < 1:
        raise ScoringError(f"batch_size must be >= 1, got {batch_size}")
    if "max_rounds" in options and integer(options["max_rounds"], "max_rounds", ScoringError) < 0:
        raise ScoringError(f"max_rounds must be >= 0, got {options['max_rounds']}")
    for name, low, high in (("receiver_fraction", 0.0, 1.0), ("threshold", 0.0, math.inf),
                            ("min_delta", 0.0, math.inf)):
        if name in options:
            value = number(options[name], name, ScoringError)
            if not (low <= value <= high and math.isfinite(value)) or (high == 1.0 and value == 0):
                span = "in (0, 1]" if name == "receiver_fraction" else "a finite number >= 0"
                raise ScoringError(f"{name} must be {span}, got {shown(value)}")
    return batch_size


def score_heads(
    model: nn.Module,
    tokenizer: Any = None,
    method: str = "patching",
    probes: Sequence[Probe] | None = None,
    *,
    probe_config: ProbeConfig | None = None,
    batch_size: int = 16,
    progress: bool | None = None,
    **method_options: Any,
) -> HeadScores:
    """Score every query head of `model` for retrieval with `method`.

    probes:         counterfactual probes; by default `build_probes(tokenizer, probe_config, model=model)`
    batch_size:     patched rows per forward (patching)
    method_options: patching: receiver_fraction, max_rounds, threshold, min_delta;
                    attribution: freeze_attention, senders (default True), receiver_fraction, max_rounds,
                    threshold, min_delta
    """
    from hydrahead.scoring.attribution import attribution_scores
    from hydrahead.scoring.patching import patching_scores
    from hydrahead.scoring.retrieval import retrieval_scores

    if method not in METHODS:
        raise ScoringError(f"method must be one of {METHODS}, got {method!r}")
    batch_size = _checked_options(batch_size, method_options)
    if probes is None:
        if tokenizer is None:
            raise ScoringError("score_heads needs a tokenizer to build probes (or pass probes=build_probes(...))")
        probe_config = probe_config or ProbeConfig(context_length=default_context_length(model.config))
        probes = build_probes(tokenizer, probe_config, model=model)  # their ids checked there
    else:
        check_probe_ids(probes, model)
    if not probes:
        raise ScoringError("no probes to score with")
    if progress is None:
        progress = sys.stderr.isatty()
    start = time.perf_counter()
    with Runner(model) as runner:
        if method == "patching":
            values, components, meta = patching_scores(runner, probes, batch_size=batch_size, progress=progress, **method_options)
        elif method == "attribution":
            values, components, meta = attribution_scores(runner, probes, progress=progress, **method_options)
        else:
            values, components, meta = retrieval_scores(runner, probes, progress=progress, **method_options)
        stats = runner.stats
        solved = [runner.solved.get(id(probe)) for probe in probes]
    config = model.config
    metadata = {
        **meta,
        "model_type": config.model_type,
        "num_layers": runner.num_layers,
        "num_heads": runner.num_heads,
        "num_kv_heads": runner.num_kv_heads,
        "num_probes": len(probes),
        # the fraction of probes the unpatched model answers (teacher-forced, greedy); low: the scores say little
        "clean_accuracy": None if None in solved else round(sum(solved) / len(probes), 4),
        "probe_config": probe_config.to_dict() if probe_config is not None else None,
        "batch_size": batch_size,
        "wall_seconds": round(time.perf_counter() - start, 3),
        "forward_calls": stats.forward_calls,
        "sequence_forwards": round(stats.sequence_forwards, 3),
        "backwards": stats.backwards,
    }
    return HeadScores(values, method, runner.num_kv_heads, components, metadata)


__all__ = [
    "HeadScores",
    "LayerSimilarity",
    "Probe",
    "ProbeConfig",
    "ProbeError",
    "ScoringError",
    "ValidationReport",
    "ablate",
    "build_probes",
    "default_context_length",
    "follow_answer_format",
    "head_means",
    "kv_recall_words",
    "layer_similarity",
    "score_heads",
    "teacher_forced_accuracy",
    "validate_scores",
]
