"""The demo's teacher: a small Llama trained here from scratch, shipped inside the package.

No 20-minute CPU budget trains a model that retrieves (docs/method.md section 7), so the demo ships its teacher
(4 layers x 16 heads, 24.7M tokens in two phases, induction then retrieval; greedy NIAH at 256: number
0.95, word 1.0, multikey 0.725; docs/results.md section 0b):
`assets/teacher/` holds its weights (half precision safetensors), tokenizer and a manifest (the recipe's
SHA-256, training tokens, measured NIAH). `assets/teacher_recipe.yaml` is the one file that says how it
is made; `retrain` rebuilds it with the project's own machinery (`hydrahead.distill.pretrain`: resumable,
metrics, NaN guard, greedy NIAH logged while it trains), in several sittings if need be.

    load_teacher()        the shipped teacher (model, tokenizer), its files checked against the manifest
    export_teacher(dir)   the same as an ordinary Hugging Face checkpoint directory
    retrain(work)         corpus -> tokenizer -> per phase: documents -> pretrain -> <work>/run/<phase>/final
    ship(work)            write a retrained teacher into the package, with its manifest

`python -m hydrahead.demo.teacher --work DIR [--ship]` runs `retrain` (and `ship`) from a shell. To train
longer, raise the last phase's `tokens` in the recipe and rerun: a constant-schedule run continues where it
stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from hydrahead.errors import TeacherError
from hydrahead.utils.io import atomic_write_text, save_figure

ASSETS = Path(__file__).parent / "assets"
RECIPE = ASSETS / "teacher_recipe.yaml"
SHIPPED = ASSETS / "teacher"
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
HELDOUT_FRACTION = 0.05  # standard-library files kept out of training, for held-out perplexity
MONITOR_SEED = 9_999  # NIAH prompts watched during training: neither the evaluation's seeds nor training's

Log = Callable[[str], None]


# ----------------------------------------------------------------------------------------------- recipe
def recipe_sha256(path: Path = RECIPE) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_recipe(path: Path = RECIPE) -> dict[str, Any]:
    try:
        recipe = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise TeacherError(f"cannot read the teacher recipe {path}: {err}") from err
    if not isinstance(recipe, dict) or not {"corpus", "pretrain"} <= set(recipe):
        raise TeacherError(f"teacher recipe {path} needs a corpus and a pretrain section")
    return recipe


def code_split(code_bytes: int) -> tuple[list[str], list[str]]:
    """Standard-library sources, split into (training, held-out) by a fixed shuffle."""
    from hydrahead.demo.corpus import stdlib_texts

    texts = stdlib_texts(code_bytes)
    random.Random(0).shuffle(texts)
    held = max(4, int(len(texts) * HELDOUT_FRACTION))
    return texts[held:], texts[:held]


def write_jsonl(path: Path, texts: list[str]) -> None:
    atomic_write_text(path, "".join(json.dumps({"text": t}) + "\n" for t in texts))


def build_tokenizer(corpus: dict[str, Any], code: list[str]) -> Any:
    from hydrahead.demo.teacher_data import template_texts
    from hydrahead.demo.tokenizer import train_tokenizer
    from hydrahead.needles import vocabulary

    return train_tokenizer(code + template_texts(corpus["seed"]), corpus["vocab_size"], whole_words=vocabulary())


# ----------------------------------------------------------------------------------------------- monitor
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


# ----------------------------------------------------------------------------------------------- retrain
def phases(recipe: dict[str, Any]) -> list[tuple[str, dict[str, int], Any]]:
    """The recipe's training phases in order, as (name, document counts, stage tokens): each phase trains on
    its own documents, from the previous phase's weights. A recipe without `phases` is one phase, "main", of
    `corpus.documents` and `pretrain.stage.tokens`."""
    spec = recipe.get("phases")
    if spec is None:
        return [("main", dict(recipe["corpus"].get("documents", {})), recipe["pretrain"]["stage"]["tokens"])]
    if not isinstance(spec, dict) or not spec or not all(
            isinstance(p, dict) and {"documents", "tokens"} <= set(p) for p in spec.values()):
        raise TeacherError("the teacher recipe's phases must map each phase name to its documents and tokens")
    return [(str(name), dict(p["documents"]), p["tokens"]) for name, p in spec.items()]


def run_dirs(work: str | Path, recipe: dict[str, Any]) -> list[Path]:
    """Where each phase trains: <work>/run/<phase> (its checkpoints, metrics.jsonl and final model)."""
    return [Path(work) / "run" / name for name, _, _ in phases(recipe)]


def retrain(work: str | Path, device: str = "auto", log: Log = print, recipe_path: Path = RECIPE) -> Path:
    """Rebuild the teacher from its recipe in `work`, phase after phase; resumes a stopped run there.
    Returns the last phase's final model, <work>/run/<phase>/final."""
    from hydrahead.demo.teacher_data import teacher_documents
    from hydrahead.distill.pretrain import pretrain
    from hydrahead.models.loading import load_tokenizer
    from hydrahead.distill.recipe import PretrainRecipe

    work = Path(work)
    recipe = load_recipe(recipe_path)
    corpus, base = recipe["corpus"], dict(recipe["pretrain"])
    tokenizer_dir, heldout = work / "tokenizer", work / "data" / "heldout.jsonl"
    # the tokenizer depends only on the corpus section (less its documents): other changes keep it
    source = {k: v for k, v in corpus.items() if k != "documents"}
    digest = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()
    stamp = work / "tokenizer.json"
    code, held = code_split(corpus["code_bytes"])
    if not (stamp.is_file() and json.loads(stamp.read_text()).get("sha256") == digest):
        log(f"training a {corpus['vocab_size']}-token BPE tokenizer on {sum(map(len, code)) / 1e6:.1f} MB of sources")
        build_tokenizer(corpus, code).save_pretrained(tokenizer_dir)
        write_jsonl(heldout, held)
        atomic_write_text(stamp, json.dumps({"sha256": digest}))
    tokenizer = load_tokenizer(tokenizer_dir)
    seq_len = base["stage"]["seq_len"]
    monitor = NiahMonitor(tokenizer, seq_len, list(corpus["niah_tasks"]))
    init = None
    for (name, counts, tokens), run in zip(phases(recipe), run_dirs(work, recipe)):
        train = work / "data" / name / "train.jsonl"
        # a phase's documents depend on the tokenizer, its counts and the row length
        docs_digest = hashlib.sha256(json.dumps([digest, counts, seq_len], sort_keys=True).encode()).hexdigest()
        docs_stamp = train.with_name("documents.json")
        if not (docs_stamp.is_file() and json.loads(docs_stamp.read_text()).get("sha256") == docs_digest):
            log(f"writing the {name} phase's training documents: {counts}")
            docs = teacher_documents(tokenizer, code, counts=counts, niah_tasks=corpus["niah_tasks"],
                                     max_tokens=seq_len, seed=corpus["seed"])
            write_jsonl(train, docs)
            atomic_write_text(docs_stamp, json.dumps({"sha256": docs_digest, "documents": len(docs)}))
        spec = {**base, "stage": {**base["stage"], "tokens": tokens}, "tokenizer": str(tokenizer_dir),
                "output_dir": str(run), "init": None if init is None else str(init)}
        spec["data"] = {**base.get("data", {}), "train_files": [str(train)], "eval_files": [str(heldout)]}
        spec["training"] = {**base.get("training", {}), "device": device}
        pretrain_recipe = PretrainRecipe.from_dict(spec)
        resume = (run / "checkpoint.pt").is_file()
        log(f"pretraining the teacher, phase {name} ({pretrain_recipe.stage.tokens / 1e6:.1f}M tokens) in {run}"
            + (" (resuming)" if resume else ""))
        init = pretrain(pretrain_recipe, resume=resume, evaluators=[monitor])
    assert init is not None  # phases() is never empty
    return init


def training_metrics(work: str | Path, recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """Every phase's metrics.jsonl records in order, `tokens` counted from the start of the first phase and
    each record marked with its `phase`."""
    out: list[dict[str, Any]] = []
    offset = 0
    for (name, _, _), run in zip(phases(recipe), run_dirs(work, recipe)):
        file = run / "metrics.jsonl"
        records = [json.loads(line) for line in file.read_text().splitlines()] if file.is_file() else []
        out += [{**r, "phase": name, "tokens": r.get("tokens", 0) + offset} for r in records]
        offset += max((r.get("tokens", 0) for r in records), default=0)
    return out


def measure(model: Any, tokenizer: Any, length: int, tasks: list[str], samples: int = 8) -> dict[str, float]:
    """Greedy NIAH at `length`, as `hydrahead eval niah` scores it (5 depths, `samples` each, seed 0)."""
    import hydrahead.eval as ev

    records = ev.niah({"teacher": model}, tokenizer, [length], (0.0, 0.25, 0.5, 0.75, 1.0), tasks=tasks,
                      samples=samples, seed=0, progress=False)
    return {t: round(score, 4) for t, score in per_task(records, tasks).items()}


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


def ship(work: str | Path, dest: Path = SHIPPED, recipe_path: Path = RECIPE, log: Log = print) -> Path:
    """Write the teacher retrained in `work` (its last phase's final model) into `dest` (fp16 weights,
    tokenizer, manifest)."""
    import torch

    from hydrahead.models.loading import load_model, load_tokenizer, save_hybrid

    recipe = load_recipe(recipe_path)
    final = run_dirs(work, recipe)[-1] / "final"
    if not final.is_dir():
        raise TeacherError(f"nothing to ship: {final} does not exist (retrain first)")
    # what is measured is what ships: the fp16 weights, computed in fp32 as `load_teacher` does
    model, tokenizer = load_model(final, "float16").float(), load_tokenizer(final)
    length = recipe["pretrain"]["stage"]["seq_len"]
    log("measuring greedy NIAH at the training length")
    niah = measure(model, tokenizer, length, list(recipe["corpus"]["niah_tasks"]))
    metrics = training_metrics(work, recipe)
    tokens = max((m.get("tokens", 0) for m in metrics), default=0)
    monitor = [m for m in metrics if any(k.startswith("niah_") for k in m)]

    def write_manifest(tmp: Path) -> None:
        manifest = {
            "recipe": RECIPE.name,
            "recipe_sha256": recipe_sha256(recipe_path),
            "weights_sha256": hashlib.sha256((tmp / WEIGHTS).read_bytes()).hexdigest(),
            "training_tokens": tokens,
            "phases": {name: tokens for name, _, tokens in phases(recipe)},
            "parameters": sum(p.numel() for p in model.parameters()),
            "niah_at_training_length": {"length": length, "samples_per_depth": 8, "depths": 5, **niah},
            "last_training_monitor": monitor[-1] if monitor else None,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")

    save_hybrid(model, dest, tokenizer, dtype=torch.float16, finish=write_manifest)
    log(f"shipped the teacher to {dest}: {json.dumps(niah)}")
    return dest


# ----------------------------------------------------------------------------------------------- load
_RETRAIN = "reinstall hydrahead, or rebuild it with `hydrahead demo --retrain-teacher`"


def read_manifest(path: Path = SHIPPED) -> dict[str, Any]:
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise TeacherError(f"the demo teacher is missing: no {file}; {_RETRAIN}")
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TeacherError(f"the demo teacher's manifest {file} is corrupt ({err}); {_RETRAIN}") from err


def check_teacher(path: Path = SHIPPED) -> dict[str, Any]:
    """The manifest, after checking that the weights are the ones it names (TeacherError otherwise)."""
    manifest = read_manifest(path)
    weights = Path(path) / WEIGHTS
    if not weights.is_file():
        raise TeacherError(f"the demo teacher is missing its weights {weights}; {_RETRAIN}")
    if hashlib.sha256(weights.read_bytes()).hexdigest() != manifest.get("weights_sha256"):
        raise TeacherError(f"the demo teacher's weights {weights} do not match its manifest (damaged or "
                           f"replaced); {_RETRAIN}")
    return manifest


def load_teacher(path: Path = SHIPPED) -> tuple[Any, Any]:
    """The shipped teacher in fp32 and eval mode, and its tokenizer (TeacherError when damaged)."""
    from hydrahead.errors import CheckpointError
    from hydrahead.models.loading import load_model, load_tokenizer

    check_teacher(path)
    try:
        model, tokenizer = load_model(path, "float32"), load_tokenizer(path)
    except CheckpointError as err:
        raise TeacherError(f"the demo teacher in {path} cannot be loaded ({err}); {_RETRAIN}") from err
    return model, tokenizer


def export_teacher(dest: str | Path, path: Path = SHIPPED) -> Path:
    """The shipped teacher as an ordinary Hugging Face checkpoint directory (fp32), with its manifest. Its
    config's `max_position_embeddings` is the length it was trained at (the recipe's 4096 is a bound that
    RoPE never reads), so that tools taking a default length from the config (`hydrahead score`'s probes)
    stay inside what the teacher learnt; longer prompts still run (RoPE extrapolation)."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise TeacherError(f"--export-teacher: {dest} exists and is not an empty directory")
    from hydrahead.models.loading import save_hybrid

    model, tokenizer = load_teacher(path)
    model.config.max_position_embeddings = load_recipe()["pretrain"]["stage"]["seq_len"]
    save_hybrid(model, dest, tokenizer, finish=lambda tmp: shutil.copy(Path(path) / MANIFEST, tmp / "demo_teacher_manifest.json"))
    return dest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hydrahead.demo.teacher",
                                description="Retrain the demo teacher from its recipe (resumable), optionally ship it.")
    p.add_argument("--work", required=True, help="working directory (corpus, checkpoints); rerun to resume")
    p.add_argument("--device", default="auto")
    p.add_argument("--ship", action="store_true", help=f"write the result into {SHIPPED}")
    p.add_argument("--ship-only", action="store_true", help="ship what <work> holds, without training")
    p.add_argument("--recipe", type=Path, default=RECIPE, help=f"the recipe (default: {RECIPE.name} in the package)")
    a = p.parse_args(argv)
    if not a.ship_only:
        retrain(a.work, a.device, recipe_path=a.recipe)
    plot_training(training_metrics(a.work, load_recipe(a.recipe)), Path(a.work) / "training.png")
    print(f"training curves: {Path(a.work) / 'training.png'}")
    if a.ship or a.ship_only:
        ship(a.work, recipe_path=a.recipe)


if __name__ == "__main__":
    main()
