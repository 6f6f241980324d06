"""NIAH over several evaluation seeds: mean and spread per task and length, as a table and a plot.

Each argument is a `hydrahead eval niah --seed S` output directory (its niah.json) of the same tasks and
lengths; a cell is the mean score of one seed's prompts, and the table gives the mean over seeds ± half the range
between them (docs/real_models.md section 1). A run that evaluated several models (`--models A B`) gives one
table per model, or the one `--model` names.

Usage: python bench/niah_seeds.py RUN_SEED1 RUN_SEED2[,RUN_SEED2_8K] [...] [--model LABEL] --plot niah_seeds.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean


def seed_records(run: str) -> list[dict]:
    """Every record of `run`: an output directory, or several of one seed joined by commas (lengths evaluated
    apart)."""
    return [r for part in run.split(",") for r in json.loads((Path(part) / "niah.json").read_text())["records"]]


def seed_cells(records: list[dict]) -> dict[tuple[str, int], float]:
    """(task, length) -> mean score in percent, over one seed's depths and samples (task "all": every task)."""
    cells: dict[tuple[str, int], list[float]] = {}
    for r in records:
        for task in (r["task"], "all"):
            cells.setdefault((task, r["length"]), []).append(100 * r["score"])
    return {key: mean(values) for key, values in cells.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="eval niah output directories, one per seed (DIR or DIR,DIR: one seed "
                                            "evaluated in several runs)")
    p.add_argument("--model", default=None, help="the model's label in the runs (default: every model, a table each)")
    p.add_argument("--plot", type=Path, default=None, help="PNG: accuracy vs length, mean and spread per task "
                                                           "(one model: give --model when the runs hold several)")
    args = p.parse_args()
    runs = [seed_records(run) for run in args.runs]
    models = list(dict.fromkeys(r["model"] for records in runs for r in records))
    if args.model is not None and args.model not in models:
        p.error(f"--model {args.model!r} is not in the runs, which hold {', '.join(models)}")
    if args.plot and args.model is None and len(models) > 1:
        p.error(f"the runs hold {len(models)} models ({', '.join(models)}): give --model for the plot")
    for model in [args.model] if args.model else models:
        stats, tasks, lengths = table([[r for r in records if r["model"] == model] for records in runs])
        print(f"{model}: NIAH accuracy (%), mean over {len(runs)} seeds ± half the range between them")
        print("| task | " + " | ".join(length_label(n) for n in lengths) + " |")
        print("|---|" + "---:|" * len(lengths))
        for task in tasks:
            print(f"| {task} | " + " | ".join(f"{stats[task, n][0]:.1f} ± {stats[task, n][1]:.1f}" for n in lengths)
                  + " |")
    if args.plot:
        plot(args.plot, stats, tasks, lengths)


def length_label(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def table(runs: list[list[dict]]):
    """Per (task, length): (mean over seeds, half the range); the tasks and lengths every seed has."""
    seeds = [seed_cells(records) for records in runs]
    keys = sorted(set.intersection(*(set(s) for s in seeds)), key=lambda k: (k[0] != "all", k[0], k[1]))
    tasks = list(dict.fromkeys(task for task, _ in keys))
    lengths = sorted({n for _, n in keys})
    stats = {k: (mean(s[k] for s in seeds), (max(s[k] for s in seeds) - min(s[k] for s in seeds)) / 2) for k in keys}
    return stats, tasks, lengths


def plot(path: Path, stats, tasks, lengths) -> None:
    """Accuracy vs length, mean and spread per task."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for task in tasks:
        ax.errorbar(lengths, [stats[task, n][0] for n in lengths], yerr=[stats[task, n][1] for n in lengths],
                    marker="o", capsize=3, label=task, linewidth=2.5 if task == "all" else 1.2)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [length_label(n) for n in lengths])
    ax.set_ylim(-5, 105)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("NIAH accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
