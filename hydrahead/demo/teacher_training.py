"""Rebuilding the demo teacher from its recipe, and shipping it into the package.

    retrain(work)   corpus -> tokenizer -> per phase: documents -> pretrain -> <work>/run/<phase>/final, with
                    the project's own trainer (`hydrahead.distill.pretrain`: resumable, metrics, NaN guard)
                    and a monitor of greedy NIAH (seed 9999) and the induction phase change while it trains
    ship(work)      the last phase's model into `assets/teacher/` (fp16), with its manifest: the recipe's hash,
                    training tokens, and NIAH at the training length over the evaluation seeds
    plot_training   loss, held-out loss and the monitor's NIAH against training tokens

`python -m hydrahead.demo.teacher_training --work DIR [--ship]` runs it from a shell (`hydrahead demo
--retrain-teacher` calls `retrain`). To train longer, raise the last phase's `tokens` in the recipe and rerun:
a constant-schedule run continues where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from hydrahead.demo.corpus import code_split, write_jsonl
from hydrahead.demo.log import Log, rerun_to_continue
from hydrahead.demo.teacher import MANIFEST, SHIPPED, WEIGHTS
from hydrahead.demo.teacher_recipe import RECIPE, TeacherRecipe, load_recipe, recipe_sha256
from hydrahead.errors import HydraHeadError, TeacherError, TrainingInterrupted
from hydrahead.utils.io import json_sha256, save_figure, write_json

MONITOR_SEED = 9_999  # NIAH prompts watched during training: neither the evaluation's seeds nor training's
EVALUATION_SEEDS = tuple(range(1, 11))  # what the manifest reports: seeds neither training nor its monitor used


def build_tokenizer(corpus: Any, code: list[str]) -> Any:
    from hydrahead.demo.teacher_data import template_texts
    from hydrahead.demo.tokenizer import train_tokenizer
    from hydrahead.needles import vocabulary

    return train_tokenizer(code + template_texts(corpus.seed), corpus.vocab_size, whole_words=vocabulary())


def per_task(records: list, tasks: list[str]) -> dict[str, float]:
    """Mean NIAH score per task of `hydrahead.eval.niah` records."""
    return {t: sum(r.score for r in records if r.task == t) / max(1, sum(r.task == t for r in records)) for t in tasks}


class NiahMonitor:
    """An evaluator for the trainer: greedy NIAH at the training length on a few prompts per task, and the
    induction phase change (next-token loss on the second copy of a random 48-word span of needle words,
    against the first copy: the second drops below the first once the model copies)."""

    def __init__(self, tokenizer: Any, length: int, tasks: list[str], samples: int = 4,
                 depths: tuple[float, ...] = (0.2, 0.8), spans: int = 16, span_tokens: int = 48) -> None:
        import torch

        self.tokenizer, self.length, self.tasks = tokenizer, length, tasks
        self.samples, self.depths = samples, depths
        from hydrahead.needles import vocabulary

        # spans of the needle and haystack words (single tokens of this tokenizer), as the training data has them
        pool = sorted({ids[0] for w in vocabulary() if len(ids := tokenizer(" " + w)["input_ids"]) == 1})
        generator = torch.Generator().manual_seed(MONITOR_SEED)
        picks = torch.randint(0, len(pool), (spans, span_tokens), generator=generator)
        span = torch.tensor(pool)[picks]  # (N, S)
        self.copies = torch.cat([span, span], dim=1)  # (N, 2S)

    def __call__(self, ctx: Any) -> dict[str, float]:
        import torch.nn.functional as F

        import hydrahead.eval as ev

        records = ev.niah({"teacher": ctx.student}, self.tokenizer, [self.length], self.depths, tasks=self.tasks,
                          samples=self.samples, seed=MONITOR_SEED, progress=False)
        out = {f"niah_{t}": score for t, score in per_task(records, self.tasks).items()}
        ids = self.copies.to(ctx.env.device)
        logits = ctx.student(input_ids=ids, use_cache=False).logits[:, :-1].float()  # (N, 2S-1, V)
        loss = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (N, 2S-1)
        half = ids.shape[1] // 2
        out["copy_loss_first"] = loss[:, : half - 1].mean().item()
        out["copy_loss_second"] = loss[:, half:].mean().item()
        return out


def run_dirs(work: str | Path, recipe: TeacherRecipe) -> list[Path]:
    """Where each phase trains: <work>/run/<phase> (its checkpoints, metrics.jsonl and final model)."""
    return [Path(work) / "run" / name for name, _, _ in recipe.phase_list()]


def retrain(work: str | Path, device: str = "auto", log: Log | None = None, recipe_path: Path = RECIPE) -> Path:
    """Rebuild the teacher from its recipe in `work`, phase after phase; resumes a stopped run there.
    Returns the last phase's final model, <work>/run/<phase>/final."""
    from hydrahead.demo.teacher_data import teacher_documents
    from hydrahead.distill import checkpoint as ckpt
    from hydrahead.distill.pretrain import pretrain
    from hydrahead.models.loading import load_tokenizer
    from hydrahead.distill.recipe import PretrainRecipe

    work, log = Path(work), log or Log()
    recipe = load_recipe(recipe_path)
    corpus, base = recipe.corpus, dict(recipe.pretrain)
    tokenizer_dir, heldout = work / "tokenizer", work / "data" / "heldout.jsonl"
    # the tokenizer depends only on the corpus section (less its documents): other changes keep it
    source = {"code_bytes": corpus.code_bytes, "vocab_size": corpus.vocab_size, "niah_tasks": corpus.niah_tasks,
              "seed": corpus.seed}
    digest = json_sha256(source)
    stamp = work / "tokenizer.json"
    code, held = code_split(corpus.code_bytes)
    if not (stamp.is_file() and json.loads(stamp.read_text()).get("sha256") == digest):
        log(f"training a {corpus.vocab_size}-token BPE tokenizer on {sum(map(len, code)) / 1e6:.1f} MB of sources")
        build_tokenizer(corpus, code).save_pretrained(tokenizer_dir)
        write_jsonl(heldout, held)
        write_json(stamp, {"sha256": digest}, indent=None)
    tokenizer = load_tokenizer(tokenizer_dir)
    seq_len = recipe.seq_len
    monitor = NiahMonitor(tokenizer, seq_len, list(corpus.niah_tasks))
    init = None
    for (name, counts, tokens), run in zip(recipe.phase_list(), run_dirs(work, recipe)):
        train = work / "data" / name / "train.jsonl"
        # a phase's documents depend on the tokenizer, its counts and the row length
        docs_digest = json_sha256([digest, counts, seq_len])
        docs_stamp = train.with_name("documents.json")
        if not (docs_stamp.is_file() and json.loads(docs_stamp.read_text()).get("sha256") == docs_digest):
            log(f"writing the {name} phase's training documents: {counts}")
            docs = teacher_documents(tokenizer, code, counts=counts, niah_tasks=corpus.niah_tasks,
                                     max_tokens=seq_len, seed=corpus.seed)
            write_jsonl(train, docs)
            write_json(docs_stamp, {"sha256": docs_digest, "documents": len(docs)}, indent=None)
        spec = {**base, "stage": {**base["stage"], "tokens": tokens}, "tokenizer": str(tokenizer_dir),
                "output_dir": str(run), "init": None if init is None else str(init)}
        spec["data"] = {**base.get("data", {}), "train_files": [str(train)], "eval_files": [str(heldout)]}
        spec["training"] = {**base.get("training", {}), "device": device}
        pretrain_recipe = PretrainRecipe.from_dict(spec)
        resume = (run / ckpt.FILENAME).is_file() or (run / "metrics.jsonl").is_file()  # stopped before its first
        # checkpoint: --resume starts it over (without it, every rerun was refused as "an earlier run")
        log(f"pretraining the teacher, phase {name} ({pretrain_recipe.stage.tokens / 1e6:.1f}M tokens) in {run}"
            + (" (resuming)" if resume else ""))
        try:
            init = pretrain(pretrain_recipe, resume=resume, evaluators=[monitor])
        except TrainingInterrupted as err:  # pretrain's own advice, --resume, is no demo option
            raise TrainingInterrupted(rerun_to_continue(err), err.signum) from None
    assert init is not None  # phase_list() is never empty
    return init


def training_metrics(work: str | Path, recipe: TeacherRecipe) -> list[dict[str, Any]]:
    """Every phase's metrics.jsonl records in order, `tokens` counted from the start of the first phase and
    each record marked with its `phase`."""
    out: list[dict[str, Any]] = []
    offset = 0
    for (name, _, _), run in zip(recipe.phase_list(), run_dirs(work, recipe)):
        file = run / "metrics.jsonl"
        records = [json.loads(line) for line in file.read_text().splitlines()] if file.is_file() else []
        out += [{**r, "phase": name, "tokens": r.get("tokens", 0) + offset} for r in records]
        offset += max((r.get("tokens", 0) for r in records), default=0)
    return out


def measure(model: Any, tokenizer: Any, length: int, tasks: list[str], samples: int = 8,
            seeds: tuple[int, ...] = EVALUATION_SEEDS) -> dict[str, Any]:
    """Greedy NIAH at `length` as `hydrahead eval niah` scores it (5 depths, `samples` prompts each), once per
    evaluation seed: per task the mean over seeds and half the range between them (bench/niah_seeds.py's
    figure), and every seed's score."""
    import hydrahead.eval as ev

    depths = (0.0, 0.25, 0.5, 0.75, 1.0)
    runs = [per_task(ev.niah({"teacher": model}, tokenizer, [length], depths, tasks=tasks, samples=samples,
                             seed=seed, progress=False), tasks) for seed in seeds]
    out: dict[str, Any] = {"length": length, "depths": len(depths), "samples_per_depth": samples, "seeds": list(seeds)}
    for task in tasks:
        scores = [run[task] for run in runs]
        out[task] = {"mean": round(statistics.mean(scores), 4), "spread": round((max(scores) - min(scores)) / 2, 4),
                     "per_seed": [round(s, 4) for s in scores]}
    return out


def plot_training(records: list[dict[str, Any]], png: str | Path) -> None:
    """Training loss, held-out loss and greedy NIAH (per task) against training tokens (`training_metrics`),
    with a dotted line where each phase after the first begins."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    FigureCanvasAgg(fig)
    loss_ax, niah_ax = fig.subplots(1, 2)
    train = [(r["tokens"] / 1e6, r["loss"]) for r in records if "loss" in r]
    held = [(r["tokens"] / 1e6, r["eval_loss"]) for r in records if "eval_loss" in r]
    loss_ax.plot(*zip(*train), lw=0.8, label="train (batch)")
    if held:
        loss_ax.plot(*zip(*held), marker="o", ms=3, label="held-out code")
    for key, label in (("copy_loss_first", "random span, 1st copy"), ("copy_loss_second", "random span, 2nd copy")):
        points = [(r["tokens"] / 1e6, r[key]) for r in records if key in r]
        if points:
            loss_ax.plot(*zip(*points), ls="--", marker=".", label=label)
    loss_ax.set_xlabel("training tokens (M)")
    loss_ax.set_ylabel("next-token loss (nats)")
    loss_ax.legend()
    for task in sorted({k for r in records for k in r if k.startswith("niah_")}):
        points = [(r["tokens"] / 1e6, 100 * r[task]) for r in records if task in r]
        niah_ax.plot(*zip(*points), marker="o", ms=3, label=task.removeprefix("niah_"))
    starts = {}
    for r in records:
        starts.setdefault(r.get("phase"), r["tokens"] / 1e6)
    for name, start in list(starts.items())[1:]:
        for ax in (loss_ax, niah_ax):
            ax.axvline(start, color="grey", ls=":", lw=1)
        loss_ax.annotate(str(name), (start, 1), xycoords=("data", "axes fraction"), fontsize=7, va="top")
    niah_ax.set_xlabel("training tokens (M)")
    niah_ax.set_ylabel("greedy NIAH at the training length")
    niah_ax.set_ylim(-5, 105)
    niah_ax.legend()
    fig.suptitle("demo teacher: when retrieval forms")
    fig.tight_layout()
    save_figure(fig, png, dpi=110)


def ship(work: str | Path, dest: Path = SHIPPED, recipe_path: Path = RECIPE, log: Log | None = None,
         seeds: tuple[int, ...] = EVALUATION_SEEDS) -> Path:
    """Write the teacher retrained in `work` (its last phase's final model) into `dest` (fp16 weights,
    tokenizer, manifest with NIAH over the evaluation `seeds`)."""
    import torch

    from hydrahead.models.loading import load_model, load_tokenizer, save_hybrid

    log = log or Log()
    recipe = load_recipe(recipe_path)
    final = run_dirs(work, recipe)[-1] / "final"
    if not final.is_dir():
        raise TeacherError(f"nothing to ship: {final} does not exist (retrain first)")
    # what is measured is what ships: the fp16 weights, computed in fp32 as `load_teacher` does
    model, tokenizer = load_model(final, "float16").float(), load_tokenizer(final)
    length = recipe.seq_len
    # the config's window is the length it was trained at (the recipe's max_position_embeddings is a bound
    # that RoPE never reads), so that tools taking a default length from it (`hydrahead score`'s probes, at
    # 1024 otherwise: it solves none there) stay inside what the teacher learnt; longer prompts still run
    model.config.max_position_embeddings = length
    log("measuring greedy NIAH at the training length")
    niah = measure(model, tokenizer, length, list(recipe.corpus.niah_tasks), seeds=seeds)
    metrics = training_metrics(work, recipe)
    tokens = max((m.get("tokens", 0) for m in metrics), default=0)
    monitor = [m for m in metrics if any(k.startswith("niah_") for k in m)]

    def write_manifest(tmp: Path) -> None:
        manifest = {
            "recipe": Path(recipe_path).name,
            "recipe_sha256": recipe_sha256(recipe_path),
            "weights_sha256": hashlib.sha256((tmp / WEIGHTS).read_bytes()).hexdigest(),
            "training_tokens": tokens,
            "phases": {name: tokens for name, _, tokens in recipe.phase_list()},
            "parameters": sum(p.numel() for p in model.parameters()),
            "niah_at_training_length": niah,
            "last_training_monitor": monitor[-1] if monitor else None,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
        }
        write_json(tmp / MANIFEST, manifest)

    save_hybrid(model, dest, tokenizer, dtype=torch.float16, finish=write_manifest)
    log(f"shipped the teacher to {dest}: " + ", ".join(f"{t} {100 * niah[t]['mean']:.1f} +- {100 * niah[t]['spread']:.1f}"
                                                          for t in recipe.corpus.niah_tasks))
    return dest


def remeasure(path: Path = SHIPPED, recipe_path: Path = RECIPE, log: Log | None = None,
               seeds: tuple[int, ...] = EVALUATION_SEEDS) -> dict[str, Any]:
    """Measure a shipped teacher's NIAH again (as `ship` does) and rewrite that entry of its manifest; the
    weights and every other entry stay as they are."""
    from hydrahead.demo.teacher import check_teacher, load_teacher

    log = log or Log()
    manifest = check_teacher(path)
    if manifest.get("recipe_sha256") != recipe_sha256(recipe_path):
        raise TeacherError(f"{recipe_path} is not the recipe the teacher in {path} was made by (its manifest names "
                           "another recipe hash): measure it with the recipe it was trained from")
    model, tokenizer = load_teacher(path)
    recipe = load_recipe(recipe_path)
    log(f"measuring greedy NIAH at {recipe.seq_len} tokens over seeds {list(seeds)}")
    manifest["niah_at_training_length"] = measure(model, tokenizer, recipe.seq_len, list(recipe.corpus.niah_tasks),
                                                  seeds=seeds)
    write_json(Path(path) / MANIFEST, manifest)
    return manifest["niah_at_training_length"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hydrahead.demo.teacher_training",
                                description="Retrain the demo teacher from its recipe (resumable), optionally ship it.")
    p.add_argument("--work", help="working directory (corpus, checkpoints); rerun to resume")
    p.add_argument("--device", default="auto")
    p.add_argument("--ship", action="store_true", help=f"write the result into {SHIPPED}")
    p.add_argument("--ship-only", action="store_true", help="ship what <work> holds, without training")
    p.add_argument("--remeasure", action="store_true",
                   help="only measure the shipped teacher's NIAH again and rewrite it in its manifest")
    p.add_argument("--recipe", type=Path, default=RECIPE, help=f"the recipe (default: {RECIPE.name} in the package)")
    a = p.parse_args(argv)
    try:
        _run(p, a)
    except HydraHeadError as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        sys.exit(2)


def _run(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.remeasure:
        print(json.dumps(remeasure(recipe_path=a.recipe), indent=1))
        return
    if a.work is None:
        p.error("--work is needed to retrain or ship")
    if not a.ship_only:
        retrain(a.work, a.device, recipe_path=a.recipe)
    metrics = training_metrics(a.work, load_recipe(a.recipe))
    if metrics:
        plot_training(metrics, Path(a.work) / "training.png")
        print(f"training curves: {Path(a.work) / 'training.png'}")
    if a.ship or a.ship_only:
        ship(a.work, recipe_path=a.recipe)


if __name__ == "__main__":
    main()
