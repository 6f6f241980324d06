"""NIAH over several evaluation seeds: mean and spread per task and length, as a table and a plot.

Each argument is a `hydrahead eval niah --seed S` output directory (its niah.json) of the same tasks and
lengths; a cell is the mean score of one seed's prompts, and the table gives the mean over seeds ± half the range
between them (docs/real_models.md section 1). A run that evaluated several models (`--models A B`) gives one
table per model, or the one `--model` names.

`--series NAME MODEL RUN [RUN ...]` (repeated) compares models evaluated in different runs instead: NAME is the
label to show, MODEL the model's label in the runs, then its runs, one per seed. It prints one table per task (a
row per series) and plots one panel per task, a line per series.

Usage: python bench/niah_seeds.py RUN_SEED1 RUN_SEED2[,RUN_SEED2_8K] [...] [--model LABEL] --plot niah_seeds.png
       python bench/niah_seeds.py --series teacher teacher S1 S2 S3 --series student final S1 S2 S3 --plot cmp.png
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
    p.add_argument("runs", nargs="*", help="eval niah output directories, one per seed (DIR or DIR,DIR: one seed "
                                            "evaluated in several runs)")
    p.add_argument("--model", default=None, help="the model's label in the runs (default: every model, a table each)")
    p.add_argument("--plot", type=Path, default=None, help="PNG: accuracy vs length, mean and spread per task "
                                                           "(one model: give --model when the runs hold several)")
    p.add_argument("--series", nargs="+", action="append", default=[], metavar=("NAME MODEL RUN", "RUN"),
                   help="compare: NAME (the label shown), MODEL (its label in the runs), then its runs, one per seed; "
                        "repeat for each model; takes the place of the positional runs")
    args = p.parse_args()
    if args.series:
        if args.runs or args.model:
            p.error("--series takes the place of the positional runs and --model: give one or the other")
        try:
            compare(args.series, args.plot)
        except ValueError as err:
            p.error(str(err))
        except OSError as err:
            p.error(f"cannot read {err.filename}: {err.strerror}")
        return
    if not args.runs:
        p.error("give the runs (one per seed), or --series")
    try:
        runs = [seed_records(run) for run in args.runs]
    except OSError as err:
        p.error(f"cannot read {err.filename}: {err.strerror}")
    models = list(dict.fromkeys(r["model"] for records in runs for r in records))
    if args.model is not None and args.model not in models:
        p.error(f"--model {args.model!r} is not in the runs, which hold {', '.join(models)}")
    if args.plot and args.model is None and len(models) > 1:
        p.error(f"the runs hold {len(models)} models ({', '.join(models)}): give --model for the plot")
    for model in [args.model] if args.model else models:
        stats, tasks, lengths = table([[r for r in records if r["model"] == model] for records in runs])
        if args.plot:  # one model: before its table, as in compare
            plot(args.plot, stats, tasks, lengths)
        print(f"{model}: NIAH accuracy (%), mean over {len(runs)} seeds ± half the range between them")
        print("| task | " + " | ".join(length_label(n) for n in lengths) + " |")
        print("|---|" + "---:|" * len(lengths))
        for task in tasks:
            print(f"| {task} | " + " | ".join(f"{stats[task, n][0]:.1f} ± {stats[task, n][1]:.1f}" for n in lengths)
                  + " |")


def compare(series: list[list[str]], path: Path | None) -> None:
    """One table per task, a row per series; a plot with a panel per task, a line per series."""
    results = {}
    for spec in series:
        if len(spec) < 3:
            raise ValueError(f"--series {' '.join(spec)}: give NAME MODEL RUN [RUN ...]")
        name, model, runs = spec[0], spec[1], spec[2:]
        if name in results:
            raise ValueError(f"--series {name}: the name is given twice")
        records = [[r for r in seed_records(run) if r["model"] == model] for run in runs]
        if not all(records):
            raise ValueError(f"--series {name}: model {model!r} is missing from "
                             f"{', '.join(run for run, rs in zip(runs, records) if not rs)}")
        results[name] = (table(records), len(runs))
    tasks = list(dict.fromkeys(t for (_, ts, _), _ in results.values() for t in ts))
    lengths = sorted({n for (_, _, ns), _ in results.values() for n in ns})
    if path:  # before the tables, so that a reader that stops early (`| head`) does not cost the plot
        plot_compare(path, {name: stats for name, ((stats, _, _), _) in results.items()}, tasks, lengths)
    for task in tasks:
        print(f"{task}: NIAH accuracy (%), mean over seeds ± half the range between them")
        print("| model (seeds) | " + " | ".join(length_label(n) for n in lengths) + " |")
        print("|---|" + "---:|" * len(lengths))
        for name, ((stats, _, _), seeds) in results.items():
            cells = [f"{stats[task, n][0]:.1f} ± {stats[task, n][1]:.1f}" if (task, n) in stats else ""
                     for n in lengths]
            print(f"| {name} ({seeds}) | " + " | ".join(cells) + " |")
        print()


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
    fig, (ax,) = _figure(1)
    for task in tasks:
        _line(ax, stats, task, lengths, label=task, linewidth=2.5 if task == "all" else 1.2)
    _axes(ax, lengths)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_compare(path: Path, results: dict[str, dict], tasks: list[str], lengths: list[int]) -> None:
    """A panel per task, accuracy vs length, a line (mean and spread) per series, each series shifted a little
    along x so that equal lines stay visible."""
    fig, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks):
        for i, (name, stats) in enumerate(results.items()):
            _line(ax, stats, task, [n for n in lengths if (task, n) in stats], label=name, linewidth=1.5,
                  shift=2 ** (0.04 * (i - (len(results) - 1) / 2)))
        _axes(ax, lengths)
        ax.set_title(task, fontsize=10)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(results), fontsize=8)
    _save(fig, path, bottom=0.1)


def _figure(panels: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6) if panels == 1 else (3.2 * panels, 3.9))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, panels, sharey=True, squeeze=False)[0]


def _line(ax, stats, task: str, lengths: list[int], shift: float = 1.0, **style) -> None:
    ax.errorbar([n * shift for n in lengths], [stats[task, n][0] for n in lengths],
                yerr=[stats[task, n][1] for n in lengths], marker="o", capsize=3, **style)


def _axes(ax, lengths: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [length_label(n) for n in lengths])
    ax.set_ylim(-5, 105)
    ax.set_xlabel("context length (tokens)")
    if ax.get_subplotspec().is_first_col():
        ax.set_ylabel("NIAH accuracy (%)")


def _save(fig, path: Path, bottom: float = 0.0) -> None:
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
