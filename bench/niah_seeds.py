"""NIAH over several evaluation seeds: mean and spread per task and length, as a table and a plot.

Each argument is a `hydrahead eval niah --seed S` output directory (its niah.json) of the same model, tasks
and lengths; a cell is the mean score of one seed's prompts, and the table gives the mean over seeds
± half the range between them (docs/real_models.md section 1).

Usage: python bench/niah_seeds.py RUN_SEED1 RUN_SEED2[,RUN_SEED2_8K] [...] --plot niah_seeds.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean


def seed_cells(run: str) -> dict[tuple[str, int], float]:
    """(task, length) -> mean score in percent, over the run's depths and samples (task "all": every task).
    `run`: an output directory, or several of one seed joined by commas (lengths evaluated apart)."""
    records = [r for part in run.split(",") for r in json.loads((Path(part) / "niah.json").read_text())["records"]]
    cells: dict[tuple[str, int], list[float]] = {}
    for r in records:
        for task in (r["task"], "all"):
            cells.setdefault((task, r["length"]), []).append(100 * r["score"])
    return {key: mean(values) for key, values in cells.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="eval niah output directories, one per seed (DIR or DIR,DIR: one seed "
                                            "evaluated in several runs)")
    p.add_argument("--plot", type=Path, default=None, help="PNG: accuracy vs length, mean and spread per task")
    args = p.parse_args()
    seeds = [seed_cells(run) for run in args.runs]
    keys = sorted(set.intersection(*(set(s) for s in seeds)), key=lambda k: (k[0] != "all", k[0], k[1]))
    tasks = list(dict.fromkeys(task for task, _ in keys))
    lengths = sorted({n for _, n in keys})
    stats = {k: (mean(s[k] for s in seeds), (max(s[k] for s in seeds) - min(s[k] for s in seeds)) / 2) for k in keys}
    print(f"NIAH accuracy (%), mean over {len(seeds)} seeds ± half the range between them")
    print("| task | " + " | ".join(f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in lengths) + " |")
    print("|---|" + "---:|" * len(lengths))
    for task in tasks:
        print(f"| {task} | " + " | ".join(f"{stats[task, n][0]:.1f} ± {stats[task, n][1]:.1f}" for n in lengths) + " |")
    if args.plot:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 3.6))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for task in tasks:
            ax.errorbar(lengths, [stats[task, n][0] for n in lengths], yerr=[stats[task, n][1] for n in lengths],
                        marker="o", capsize=3, label=task, linewidth=2.5 if task == "all" else 1.2)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [f"{n // 1024}k" for n in lengths])
        ax.set_ylim(-5, 105)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("NIAH accuracy (%)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
