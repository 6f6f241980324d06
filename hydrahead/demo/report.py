"""The demo's report: <out>/report/index.md, the evaluation's own files, and the demo's extra plots.

It states plainly, per baseline, whether HydraHead 7:1 beat it at this scale: a measurement, not an
advertisement.
"""

from __future__ import annotations

import datetime
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hydrahead.demo.scale import RANDOM, DemoScale
from hydrahead.utils.io import atomic_write_text, save_figure

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


def plan_of(label: str) -> str:
    """"hydrahead-7:1/seed0" -> "hydrahead-7:1"; "teacher" stays."""
    return label.split("/seed")[0]


@dataclass
class PlanResult:
    """One plan over its seeds: per-length mean and per-seed overall means (the spread)."""

    name: str
    per_length: dict[int, list[float]]  # length -> one score per seed
    overall: list[float]  # one mean over lengths per seed
    ppl: list[float]

    @property
    def mean(self) -> float:
        return _mean(self.overall)

    @property
    def spread(self) -> float:
        """Max - min of the per-seed means (0 with one seed)."""
        return float(max(self.overall) - min(self.overall)) if self.overall else float("nan")


def plan_results(table: dict[str, dict[int, float]], ppl: dict[str, float]) -> dict[str, PlanResult]:
    out: dict[str, PlanResult] = {}
    for label, row in table.items():
        res = out.setdefault(plan_of(label), PlanResult(plan_of(label), {n: [] for n in row}, [], []))
        for n, v in row.items():
            res.per_length[n].append(v)
        res.overall.append(_mean(list(row.values())))
        res.ppl.append(ppl.get(label, float("nan")))
    return out


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
    save_figure(fig, path, dpi=120)


TEACHER_FLOOR = 0.2  # below this NIAH score at 1x, the teacher has no retrieval for students to keep


def verdicts(results: dict[str, PlanResult], validation: Any = None, at: str = "its training length") -> list[str]:
    """Plain sentences: can the teacher retrieve, do its top heads carry it, which plan wins and by how much
    relative to the spread between seeds. `at`: what the shortest evaluated length is to the teacher."""
    lines = []
    teacher = results.get("teacher")
    if teacher is not None:
        native = teacher.per_length[min(teacher.per_length)][0]
        if native < TEACHER_FLOOR:
            lines.append(f"- **The teacher itself scores {100 * native:.1f} on NIAH at {at}**, so no "
                         "student can show retrieval it kept: the NIAH comparison below says nothing about head "
                         "selection.")
        else:
            lines.append(f"- The teacher scores {100 * native:.1f} on NIAH at {at} "
                         f"({', '.join(f'{100 * v[0]:.1f} at {n}' for n, v in sorted(teacher.per_length.items())[1:])}).")
    if validation is not None:
        drop_top = validation.accuracy - validation.accuracy_top
        drop_random = validation.accuracy - validation.accuracy_random_mean
        lines.append(
            f"- Ablating the teacher's top-{validation.top_k} patching-scored heads moves teacher-forced NIAH accuracy "
            f"from {100 * validation.accuracy:.1f} to {100 * validation.accuracy_top:.1f} ({_points(drop_top)} "
            f"points); {validation.top_k} random other heads move it by {_points(drop_random)} points on average "
            f"over {len(validation.seeds)} seeds.")
    students = {n: r for n, r in results.items() if n != "teacher"}
    if not students:
        return lines
    best = max(students.values(), key=lambda r: r.mean)
    seeds = len(best.overall)
    over = f"mean over lengths, tasks and {seeds} seed{'s' * (seeds > 1)}"
    if all(r.mean == best.mean for r in students.values()):
        lines.append(f"- Every student scores the same on NIAH ({over}): {100 * best.mean:.1f}; no plan wins.")
    else:
        lines.append(f"- Best student on NIAH ({over}): **{best.name}**, {100 * best.mean:.1f}.")
    ours = students.get(HYDRAHEAD)
    if ours is None:
        return lines
    for name, other in students.items():
        if name == HYDRAHEAD:
            continue
        diff = ours.mean - other.mean
        noise = max(ours.spread, other.spread)
        if seeds < 2:
            clear = "one seed: no spread measured"
        elif abs(diff) > noise:
            clear = f"larger than the seed spread of {100 * noise:.1f}"
        else:
            clear = f"within the seed spread of {100 * noise:.1f}: not a clear difference"
        # a difference inside the seeds' spread is no win or loss: said as a tie, the sign in the figures
        within = seeds >= 2 and abs(diff) <= noise
        word = "ties" if diff == 0 or within else "beats" if diff > 0 else "does not beat"
        lines.append(f"- HydraHead 7:1 **{word}** {name}: NIAH {100 * ours.mean:.1f} vs {100 * other.mean:.1f} "
                     f"({100 * diff:+.1f} points, {clear}); held-out ppl {_mean(ours.ppl):.2f} vs {_mean(other.ppl):.2f}.")
    return lines


def _recipe_length() -> int:
    """The shipped teacher's training length (its recipe's seq_len)."""
    from hydrahead.demo.teacher_recipe import load_recipe

    return load_recipe().seq_len


def _points(drop: float) -> str:
    """A change in points, signed, without a "-0.0"."""
    return f"{-100 * drop:+.1f}".replace("-0.0", "+0.0")


def _cell(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.1f}"
    return f"{100 * _mean(values):.1f} ± {50 * (max(values) - min(values)):.1f}"


def write_demo_report(out: Path, *, scale: DemoScale, teacher: Any, models: dict[str, Any], plans: dict,
                      notes: dict[str, str], scores: dict, validation: Any, niah: list, ppl: list,
                      timings: dict[str, float], command: str | None = None) -> Path:
    import hydrahead.eval as ev
    from hydrahead.scoring.validate import agreement

    out.mkdir(parents=True, exist_ok=True)
    ev.write_report(out, niah=niah, perplexity=ppl, meta={"demo_scale": scale.to_dict()})
    labels = list(models)
    lengths = sorted({r.length for r in niah})
    table = niah_table(niah, labels, lengths)
    results = plan_results(table, {r.model: r.overall_ppl for r in ppl})
    per_seed: dict[str, list[int]] = {}  # a plan's KV bytes per token, per seed (random 7:1's draws differ)
    for label, model in models.items():
        per_seed.setdefault(plan_of(label), []).append(model_kv_bytes_per_token(model))
    sizes = {name: max(values) for name, values in per_seed.items()}
    plot_kv_bytes(sizes, out / "kv_bytes.png")
    k = plans[HYDRAHEAD].num_fa if HYDRAHEAD in plans else 8
    agree = agreement(scores, k=k) if len(scores) > 1 else {}
    config = teacher.model.config
    params = sum(p.numel() for p in teacher.model.parameters())
    L = teacher.train_length
    source = teacher.manifest.get("source")  # a pretrained teacher (`--teacher`), not the shipped one
    seeds = len(scale.seeds)
    trained_at = None if source else _recipe_length()
    at = "its training length" if L == trained_at else f"length {L}"
    command = command or (f"hydrahead demo --scale {scale.name}"
                          f"{'' if scale.preset == 'exact' else ' --preset ' + scale.preset}"
                          f"{' --teacher ' + source + ' --length ' + str(L) if source else ''}")
    lines = [
        "# hydrahead demo report",
        "",
        f"Command: `{command}` · machine: {platform.machine()} "
        f"{platform.processor() or ''} · python {platform.python_version()} · "
        f"date {datetime.date.today().isoformat()}",
        "",
        (f"Teacher: `{source}`, pretrained, " if source else
         f"Teacher: {config.model_type} trained from scratch by the project's recipe "
         f"(`hydrahead/demo/assets/teacher_recipe.yaml`, sha256 {str(teacher.manifest.get('recipe_sha256'))[:12]}), ")
        + f"{params / 1e6:.2f}M parameters, {config.num_hidden_layers} layers x {config.num_attention_heads} query heads "
        f"({config.num_key_value_heads} KV heads, head_dim {config.head_dim}), "
        f"{'training length' if L == trained_at else 'length'} {L}"
        f"{f' (trained at {trained_at})' if trained_at and L != trained_at else ''}. Every student was "
        f"distilled from it with the same recipe and budget (align {scale.align_tokens:,} + distill "
        f"{scale.distill_tokens:,} + long-context {scale.long_tokens:,} tokens) and the `{scale.preset}` hybrid "
        f"preset, once per seed {list(scale.seeds)}. "
        "NIAH score = fraction of the expected answers found in the greedy generation "
        f"(tasks: {', '.join(scale.tasks)}; depths {list(scale.eval_depths)}; {scale.eval_samples} samples per cell).",
        "",
        "## Verdict",
        "",
        *verdicts(results, validation, at),
        *[f"- {name} is not run separately: {why}." for name, why in notes.items()],
        "",
        "## Comparison",
        "",
        f"NIAH cells: mean over seeds{' ± half the range between seeds' if seeds > 1 else ''}.",
        "",
        "| model | FA heads | KV bytes/token | KV vs teacher | "
        + " | ".join(f"NIAH {n // L}x ({n})" for n in lengths) + " | NIAH mean | held-out ppl |",
        "|---|---:|---:|---:|" + "---:|" * len(lengths) + "---:|---:|",
    ]
    def share(n: int) -> str:
        return f"{100 * n / sizes['teacher']:.1f}%" if sizes["teacher"] else "nan%"

    for name, res in results.items():
        plan = plans.get(name)
        fa = "all" if plan is None else str(plan.num_fa)
        low, high = min(per_seed[name]), max(per_seed[name])
        kv = f"{high:,}" if low == high else f"{low:,}-{high:,}"
        frac = share(high) if low == high else f"{share(low)}-{share(high)}"
        cells = " | ".join(_cell(res.per_length[n]) for n in lengths)
        lines.append(f"| {name} | {fa} | {kv} | {frac} | {cells} | {_cell(res.overall)} | {_mean(res.ppl):.2f} |")
    lines += ["", "![NIAH accuracy vs length](niah_accuracy.png)", "", "![KV cache per token](kv_bytes.png)", "",
              "![perplexity by position](ppl_by_position.png)", ""]
    lines += ["## Head importance and its validation", "", "![head importance](heads.png)", ""]
    if validation is not None:
        lines += [validation.table(), ""]
    if agree:
        lines.append(f"Agreement with activation patching over all heads and the top {k}:")
        for method, row in agree.items():
            rho = "n/a" if row["spearman"] is None else f"{row['spearman']:.3f}"
            lines.append(f"- {method} vs {row['against']}: Spearman {rho}, top-{k} Jaccard {row['jaccard']:.3f}")
        lines.append("")
    lines += ["## Plans", ""]
    for name, plan in plans.items():
        drawn = (f" (heads drawn anew for every seed; seed {scale.seeds[0]}'s shown)"
                 if name == RANDOM and seeds > 1 else "")
        lines.append(f"- **{name}**{drawn}: FA heads per layer {plan.fa_heads_per_layer}, FA KV heads per layer "
                     f"{plan.fa_kv_heads_per_layer}, KV cache {100 * plan.kv_cache_fraction:.1f}% of the teacher")
    lines += ["", "## Time", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {step} | {seconds:.0f} |" for step, seconds in timings.items()]
    lines += ["", "Raw results: `niah.json`, `ppl.json`, `../scores/validation.json`; per-model depth x length "
              "heatmaps: `niah_heatmap.png`.", ""]
    index = out / "index.md"
    atomic_write_text(index, "\n".join(lines))
    return index
