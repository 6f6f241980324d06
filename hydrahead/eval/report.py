"""One comparison report for several models: JSON with every raw result, markdown tables, PNG plots.

NIAH (`niah.json`, `niah.md`, `niah_accuracy.png`, `niah_heatmap.png`): accuracy is the mean `score` in percent
(RULER's metric); the JSON holds every record plus a flat summary (model, task or "all", length, depth or
null for the mean over depths). Perplexity (`ppl.json`, `ppl.md`, `ppl_by_position.png`): per-bucket
perplexity of each model. Every file is written atomically; NIAH and perplexity files can share one folder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from statistics import mean
from typing import Any

from hydrahead.errors import EvalError
from hydrahead.eval.niah import NiahRecord
from hydrahead.eval.ppl import PerplexityResult
from hydrahead.utils.units import format_length
from hydrahead.utils.io import atomic_write_text, check_output, save_figure, write_json


def model_labels(paths: Sequence[str | Path]) -> list[str]:
    """Label each model by its directory name; where names collide, parent directories are added until they
    differ. EvalError when two paths are one model (a repeat, or a link to it): its results would merge."""
    from hydrahead.errors import EvalError

    resolved = [Path(p).resolve() for p in paths]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise EvalError(f"{paths[i]} is {paths[resolved.index(path)]} again: give each model once")
    parts = [p.parts for p in resolved]
    depths = [1] * len(parts)
    while True:
        labels = [Path(*p[-d:]).as_posix() for p, d in zip(parts, depths)]
        clashing = [i for i, label in enumerate(labels) if labels.count(label) > 1 and depths[i] < len(parts[i])]
        if not clashing:
            return labels
        for i in clashing:
            depths[i] += 1


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


# ------------------------------------------------------------------------------------------------ NIAH
def niah_summary(records: Sequence[NiahRecord]) -> list[dict[str, Any]]:
    """Mean accuracy and exact match (percent) per model x task (and "all") x length x depth (and None = all)."""
    rows = []
    for model in _unique(r.model for r in records):
        mine = [r for r in records if r.model == model]
        for task in ["all", *_unique(r.task for r in mine)]:
            for length in sorted(_unique(r.length for r in mine)):
                for depth in [None, *sorted(_unique(r.depth for r in mine))]:
                    cell = [r for r in mine if (task == "all" or r.task == task) and r.length == length
                            and (depth is None or r.depth == depth)]
                    if cell:
                        rows.append({
                            "model": model, "task": task, "length": length, "depth": depth, "n": len(cell),
                            "accuracy": 100 * mean(r.score for r in cell),
                            "exact": 100 * mean(r.exact for r in cell),
                        })
    return rows


def _lookup(summary: list[dict], **key) -> float | None:
    for row in summary:
        if all(row[k] == v for k, v in key.items()):
            return row["accuracy"]
    return None


def niah_markdown(records: Sequence[NiahRecord], summary: list[dict]) -> str:
    models = _unique(r.model for r in records)
    tasks = _unique(r.task for r in records)
    lengths = sorted(_unique(r.length for r in records))
    depths = sorted(_unique(r.depth for r in records))
    samples = len(_unique(r.sample for r in records))
    head = [format_length(n) for n in lengths]

    def row(label: list[str], task: str, model: str) -> str:
        values = [_lookup(summary, model=model, task=task, length=n, depth=None) for n in lengths]
        known = [v for v in values if v is not None]
        return "| " + " | ".join(label + [_cell(v) for v in values] + [_cell(mean(known) if known else None)]) + " |"

    lines = [
        "# Needle in a haystack (RULER-style)", "",
        f"Models: {', '.join(models)}. Tasks: {', '.join(tasks)}. "
        f"Depths: {', '.join(f'{d:g}' for d in depths)}. Samples per task, length and depth: {samples}.",
        "Accuracy: mean fraction of expected answers found in the greedy output, in percent.", "",
        "## Accuracy (%) by length, mean over tasks and depths", "",
        "| model | " + " | ".join(head) + " | mean |", "|---" * (len(head) + 2) + "|",
        *[row([m], "all", m) for m in models],
        "", "## Accuracy (%) by task and length, mean over depths", "",
        "| model | task | " + " | ".join(head) + " | mean |", "|---" * (len(head) + 3) + "|",
        *[row([m, t], t, m) for m in models for t in tasks],
        "",
    ]
    return "\n".join(lines)


def _save(fig: Any, path: Path) -> None:
    save_figure(fig, path, dpi=110, bbox_inches="tight")


def plot_niah_accuracy(records: Sequence[NiahRecord], summary: list[dict], path: Path) -> None:
    """Accuracy vs length, one line per model; a panel for all tasks and one per task."""
    from matplotlib.figure import Figure

    models = _unique(r.model for r in records)
    tasks = _unique(r.task for r in records)
    lengths = sorted(_unique(r.length for r in records))
    panels = ["all", *tasks] if len(tasks) > 1 else ["all"]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for k, (ax, task) in enumerate(zip(axes, panels)):
        for model in models:
            ys = [_lookup(summary, model=model, task=task, length=n, depth=None) for n in lengths]
            ax.plot(lengths, [math.nan if y is None else y for y in ys], marker="o", label=model)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [format_length(n) for n in lengths])
        ax.set_ylim(-3, 103)
        ax.set_title("all tasks" if task == "all" else task)
        ax.set_xlabel("context length (tokens)")
        if k % cols == 0:
            ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    _save(fig, path)


def plot_niah_heatmaps(records: Sequence[NiahRecord], summary: list[dict], path: Path) -> None:
    """Depth x length accuracy (mean over tasks), one panel per model, one colour scale."""
    from matplotlib.figure import Figure

    models = _unique(r.model for r in records)
    lengths = sorted(_unique(r.length for r in records))
    depths = sorted(_unique(r.depth for r in records))
    cols = min(3, len(models))
    rows = math.ceil(len(models) / cols)
    panel = max(2.4, 0.9 * len(lengths))  # inches: wide enough for the axis label with one or two lengths
    fig = Figure(figsize=(1.2 + panel * cols, 0.6 + 0.45 * len(depths) * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    image = None
    for ax, model in zip(axes, models):
        grid = [[_lookup(summary, model=model, task="all", length=n, depth=d) for n in lengths] for d in depths]
        grid = [[math.nan if v is None else v for v in line] for line in grid]
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
        for i, line in enumerate(grid):
            for j, v in enumerate(line):
                ax.text(j, i, _cell(v, 0), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(lengths)), [format_length(n) for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("needle depth")
        ax.set_title(model)
    for ax in axes[len(models):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[: len(models)]), label="accuracy (%)")
    _save(fig, path)


# the files each report writes into its directory (the CLI keeps them apart from the files it reads)
REPORT_FILES = {"niah": ("niah.json", "niah.md", "niah_accuracy.png", "niah_heatmap.png"),
                "ppl": ("ppl.json", "ppl.md", "ppl_by_position.png")}


def write_niah_report(out_dir: Path, records: Sequence[NiahRecord], meta: dict[str, Any]) -> list[Path]:
    summary = niah_summary(records)
    paths = [out_dir / name for name in REPORT_FILES["niah"]]
    payload = {"meta": meta, "summary": summary, "records": [asdict(r) for r in records]}
    write_json(paths[0], payload)
    atomic_write_text(paths[1], niah_markdown(records, summary) + _notes(meta))
    plot_niah_accuracy(records, summary, paths[2])
    plot_niah_heatmaps(records, summary, paths[3])
    return paths


def _notes(meta: dict[str, Any]) -> str:
    """meta["notes"] (what a reader must know to read the figures) as markdown lines after the tables."""
    return "".join(f"\nNote: {note}\n" for note in meta.get("notes", []))


# ------------------------------------------------------------------------------------------ perplexity
def _bucket_label(start: int, end: int) -> str:
    return f"{format_length(start) if start else 0}-{format_length(end)}"


def ppl_markdown(results: Sequence[PerplexityResult]) -> str:
    lines = ["# Perplexity by position", ""]
    for length, bucket in _unique((r.length, r.bucket) for r in results):
        group = [r for r in results if (r.length, r.bucket) == (length, bucket)]
        buckets = group[0].buckets
        lines += [
            f"First {length} tokens of each document, buckets of {bucket} tokens "
            f"(a bucket's perplexity is over every document's tokens in it).", "",
            "| model | docs | " + " | ".join(_bucket_label(*b) for b in buckets) + " | all |",
            "|---" * (len(buckets) + 3) + "|",
        ]
        for r in group:
            cells = [_cell(p, 2) for p in r.ppl] + [_cell(r.overall_ppl, 2)]
            lines.append(f"| {r.model} | {len(r.documents)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_ppl(results: Sequence[PerplexityResult], path: Path) -> None:
    """Perplexity vs position (bucket middle), one line per model."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for r in results:
        ax.plot([(a + b) / 2 for a, b in r.buckets], r.ppl, marker="o", label=r.model)
    values = [p for r in results for p in r.ppl if math.isfinite(p)]
    if values and max(values) > 3 * min(values):  # log scale only where values span a wide range
        ax.set_yscale("log")
    ax.set_xlabel("position in document (tokens)")
    ax.set_ylabel("perplexity")
    ax.set_title("Perplexity by position")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    _save(fig, path)


def write_ppl_report(out_dir: Path, results: Sequence[PerplexityResult], meta: dict[str, Any]) -> list[Path]:
    paths = [out_dir / name for name in REPORT_FILES["ppl"]]
    payload = {
        "meta": meta,
        "results": [{**asdict(r), "buckets": r.buckets, "ppl": r.ppl, "overall_ppl": r.overall_ppl} for r in results],
    }
    write_json(paths[0], payload)
    atomic_write_text(paths[1], ppl_markdown(results) + _notes(meta))
    plot_ppl(results, paths[2])
    return paths


def write_report(
    out_dir: str | Path,
    niah: Sequence[NiahRecord] = (),
    perplexity: Sequence[PerplexityResult] = (),
    meta: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the NIAH and/or perplexity report files into `out_dir`; returns the paths written. EvalError when
    there is nothing to write; OutputError when `out_dir` cannot be a directory (a file, say)."""
    if not niah and not perplexity:  # [] came back, and an empty directory was made
        raise EvalError("nothing to report: give niah records, perplexity results or both")
    out_dir = check_output(out_dir, "directory")  # a file there raised FileExistsError
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    paths = []
    if niah:
        paths += write_niah_report(out_dir, niah, meta)
    if perplexity:
        paths += write_ppl_report(out_dir, perplexity, meta)
    return paths
