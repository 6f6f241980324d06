"""The demo's report: <out>/report/index.md, the evaluation's own files, and the demo's extra plots.

It states plainly, per baseline, whether HydraHead 7:1 beat it at this scale: a measurement, not an
advertisement.
"""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from hydrahead.demo.scale import DemoScale
from hydrahead.utils.io import atomic_write_text

HYDRAHEAD = "hydrahead-7:1"


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def niah_table(records: list, models: list[str], lengths: list[int]) -> dict[str, dict[int, float]]:
    """model -> length -> mean score (fraction of answers found) over tasks, depths and samples."""
    table: dict[str, dict[int, float]] = {m: {} for m in models}
    for m in models:
        for n in lengths:
            table[m][n] = _mean([r.score for r in records if r.model == m and r.length == n])
    return table


def model_kv_bytes_per_token(model: Any) -> int:
    """KV-cache bytes per token of a hybrid (its FA KV heads) or of a teacher (every KV head)."""
    from hydrahead.models.footprint import footprint, kv_bytes_per_token
    from hydrahead.models.hybrid import is_hybrid

    if is_hybrid(model):
        return footprint(model)["kv_bytes_per_token"]
    c = model.config
    return kv_bytes_per_token(c, c.num_hidden_layers * c.num_key_value_heads, next(model.parameters()).element_size())


def plot_kv_bytes(sizes: dict[str, int], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = list(sizes)
    ax.barh(names, [sizes[n] for n in names], color=["#555" if n == "teacher" else "#1f77b4" for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("KV-cache bytes per token")
    ax.set_title("KV cache per token (GDN heads keep a constant-size state instead)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


TEACHER_FLOOR = 0.2  # below this NIAH score at 1x, the teacher has no retrieval for students to keep


def verdicts(table: dict[str, dict[int, float]], ppl: dict[str, float]) -> list[str]:
    lines = []
    if HYDRAHEAD not in table:
        return lines
    if "teacher" in table and table["teacher"]:
        native = table["teacher"][min(table["teacher"])]
        if native < TEACHER_FLOOR:
            lines.append(
                f"- **The teacher itself scores {100 * native:.1f} on NIAH at its training length**, so no student can "
                "show retrieval it kept: at this scale the NIAH comparison below says nothing about head selection "
                "(train the teacher longer, e.g. `--teacher-steps`, or use `--scale gpu`)."
            )
    ours = table[HYDRAHEAD]
    for name, row in table.items():
        if name in (HYDRAHEAD, "teacher"):
            continue
        wins = sum(ours[n] > row[n] for n in row)
        losses = sum(ours[n] < row[n] for n in row)
        diff = _mean(list(ours.values())) - _mean(list(row.values()))
        if diff > 0:
            word = "beats"
        elif diff < 0:
            word = "does not beat"
        else:
            word = "ties"
        lines.append(
            f"- HydraHead 7:1 **{word}** {name} on NIAH: mean {100 * _mean(list(ours.values())):.1f} vs "
            f"{100 * _mean(list(row.values())):.1f} ({diff * 100:+.1f} points; better at {wins}, worse at "
            f"{losses} of {len(row)} lengths); held-out ppl {ppl.get(HYDRAHEAD, float('nan')):.2f} vs "
            f"{ppl.get(name, float('nan')):.2f}."
        )
    return lines


def write_demo_report(out: Path, *, scale: DemoScale, models: dict[str, Any], plans: dict, scores: dict,
                      niah: list, ppl: list, timings: dict[str, float]) -> Path:
    import hydrahead.eval as ev
    from hydrahead.scoring.validate import agreement

    out.mkdir(parents=True, exist_ok=True)
    ev.write_report(out, niah=niah, perplexity=ppl, meta={"demo_scale": scale.to_dict()})
    names = list(models)
    lengths = sorted({r.length for r in niah})
    table = niah_table(niah, names, lengths)
    ppl_by_model = {r.model: r.overall_ppl for r in ppl}
    sizes = {n: model_kv_bytes_per_token(m) for n, m in models.items()}
    plot_kv_bytes(sizes, out / "kv_bytes.png")
    k = plans[HYDRAHEAD].num_fa if HYDRAHEAD in plans else 8
    agree = agreement(scores, k=k) if len(scores) > 1 else {}

    teacher = models["teacher"]
    params = sum(p.numel() for p in teacher.parameters())
    lines = [
        "# hydrahead demo report",
        "",
        f"Command: `hydrahead demo --scale {scale.name}` · machine: {platform.machine()} "
        f"{platform.processor() or ''} · python {platform.python_version()} · "
        f"date {datetime.date.today().isoformat()}",
        "",
        f"Teacher: Qwen3 architecture trained from scratch here, {params / 1e6:.2f}M parameters, {scale.layers} "
        f"layers x {scale.heads} query heads ({scale.kv_heads} KV heads, head_dim {scale.head_dim}), training "
        f"length {scale.train_length}. Every student was distilled from it with the same recipe and budget "
        f"(align {scale.align_tokens:,} + distill {scale.distill_tokens:,} + long-context {scale.long_tokens:,} "
        "tokens). NIAH score = fraction of the expected answers found in the greedy generation "
        f"(tasks: {', '.join(scale.tasks)}; depths {list(scale.eval_depths)}; {scale.eval_samples} samples per cell).",
        "",
        "## Verdict at this scale",
        "",
        *(verdicts(table, ppl_by_model) or ["- (no HydraHead plan in this run)"]),
        "",
        "## Comparison",
        "",
        "| model | FA heads | KV bytes/token | KV vs teacher | "
        + " | ".join(f"NIAH {n // scale.train_length}x ({n})" for n in lengths) + " | held-out ppl |",
        "|---|---:|---:|---:|" + "---:|" * len(lengths) + "---:|",
    ]
    for name in names:
        plan = plans.get(name)
        fa = "all" if plan is None else str(plan.num_fa)
        frac = sizes[name] / sizes["teacher"] if sizes["teacher"] else float("nan")
        cells = " | ".join(f"{100 * table[name][n]:.1f}" for n in lengths)
        lines.append(f"| {name} | {fa} | {sizes[name]:,} | {100 * frac:.1f}% | {cells} | "
                     f"{ppl_by_model.get(name, float('nan')):.2f} |")
    lines += ["", "![NIAH accuracy vs length](niah_accuracy.png)", "", "![KV cache per token](kv_bytes.png)", "", "![perplexity by position](ppl_by_position.png)", ""]
    lines += ["## Head importance", "", "![head importance](heads.png)", ""]
    if agree:
        lines.append(f"Agreement of attribution patching with activation patching (top-{k} Jaccard, Spearman):")
        for method, row in agree.items():
            lines.append(f"- {method}: {json.dumps(row)}")
        lines.append("")
    lines += ["## Plans", ""]
    for name, plan in plans.items():
        lines.append(f"- **{name}**: FA heads per layer {plan.fa_heads_per_layer}, FA KV heads per layer "
                     f"{plan.fa_kv_heads_per_layer}, KV cache {100 * plan.kv_cache_fraction:.1f}% of the teacher")
    lines += ["", "## Time", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {step} | {seconds:.0f} |" for step, seconds in timings.items()]
    lines += ["", "Raw results: `niah.json`, `ppl.json`; per-model depth x length heatmaps: `niah_heatmap.png`.", ""]
    index = out / "index.md"
    atomic_write_text(index, "\n".join(lines))
    return index
