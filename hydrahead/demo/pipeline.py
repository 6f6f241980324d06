"""`hydrahead demo`: the paper's comparison reproduced at small scale, offline, on any machine.

1. the teacher: the small Llama shipped in the package (`demo.teacher`; `--retrain-teacher` rebuilds it
   from its recipe), trained here until it retrieves (its manifest holds its measured NIAH)
2. a distillation corpus in its format (`demo.teacher_data`, seeds the teacher never saw) and held-out
   standard-library sources, as JSONL
3. head scores (patching, and attribution for comparison), validated by ablation (top-k vs k random
   heads, several seeds), and the plans: HydraHead 7:1 (constrained global), random 7:1 (heads drawn anew
   for every distillation seed), fixed per-layer 7:1, layer-wise 3:1 and 7:1, all-GDN (a plan identical to an
   earlier one is run once, and said so; one this teacher's shape cannot have is left out before the scoring)
4. every plan converted and distilled with the same recipe and token budget, once per seed
5. NIAH at 1x, 2x, 4x, 8x the training length and held-out perplexity, teacher and students
6. <out>/report/index.md: mean and spread per plan, the verdict, tables and plots (see `report.py`)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hydrahead.errors import ResumeError, TrainingInterrupted
from hydrahead.demo.log import Log, rerun_to_continue
from hydrahead.demo.scale import PLAN_NAMES, RANDOM, DemoScale
from hydrahead.plan import HeadPlan

NEEDLE_TYPES = ("number", "word")  # the demo's probes; UUIDs take too many tokens at its short training length
CORPUS_SEED = 1  # distillation documents: a seed the teacher's documents (seed 0) did not use


@dataclass
class Teacher:
    model: Any
    tokenizer: Any
    path: Path  # a transformers checkpoint directory (what the distillation recipes name)
    manifest: dict[str, Any]
    train_length: int


def get_teacher(out: Path, retrain: bool, device: str, log: Log, source: str | Path | None = None,
                length: int | None = None) -> Teacher:
    """The shipped teacher, or (`retrain`) one rebuilt from the recipe in <out>/teacher_work (resumable), or
    (`source`) a pretrained model: a checkpoint directory or a GGUF file (exported to <out>/teacher first, so
    that every recipe names an ordinary checkpoint). `length`: the length its probes, students and
    evaluation are built around (default: the shipped teacher's training length; for `source`, 1024 or
    its window if shorter)."""
    from hydrahead.demo import teacher as shipped
    from hydrahead.demo.teacher_recipe import load_recipe, recipe_sha256

    if source is not None:
        return _pretrained_teacher(out, Path(source), length, device, log)
    length = length or load_recipe().seq_len
    if retrain:
        from hydrahead.demo.teacher_training import retrain as retrain_teacher
        from hydrahead.models.loading import load_model, load_tokenizer

        final = retrain_teacher(out / "teacher_work", device=device, log=log)
        return Teacher(load_model(final, "float32"), load_tokenizer(final), final,
                       {"recipe_sha256": recipe_sha256(), "retrained": str(final)}, length)
    manifest = shipped.check_teacher()
    model, tokenizer = shipped.load_teacher()
    log(f"teacher: the shipped demo teacher ({manifest['parameters'] / 1e6:.2f}M parameters, "
        f"{manifest['training_tokens'] / 1e6:.1f}M training tokens)")
    return Teacher(model, tokenizer, shipped.SHIPPED, manifest, length)


def _pretrained_teacher(out: Path, source: Path, length: int | None, device: str, log: Log) -> Teacher:
    from hydrahead.models.gguf import export_gguf, find_gguf
    from hydrahead.models.loading import load_model, load_tokenizer
    from hydrahead.utils.io import write_json
    from hydrahead.scoring import default_context_length

    path = source
    gguf = find_gguf(source)
    if gguf is not None:  # exported once into <out>/teacher, with a note of the file it came from
        path = out / "teacher"
        origin = {"source": str(gguf.resolve()), "bytes": gguf.stat().st_size}
        note = path / "manifest.json"
        if (path / "config.json").is_file():
            if not note.is_file() or json.loads(note.read_text()) != origin:
                raise ResumeError(f"{path} holds a teacher exported from another file than {gguf}; give the demo "
                                  "a new --out, or delete the old one")
        else:
            log(f"teacher: exporting {source} to {path}")
            export_gguf(source, path)
            write_json(note, origin, indent=None)
    model, tokenizer = load_model(path, "float32", device, supported=True), load_tokenizer(path)
    if tokenizer.pad_token_id is None:  # document-packed distillation pads rows (labels skip the padding)
        tokenizer.pad_token = tokenizer.eos_token
        log(f"teacher: its tokenizer has no pad token; padding with EOS {tokenizer.eos_token!r}")
    config = model.config
    length = length or default_context_length(config)
    log(f"teacher: {source} ({config.model_type}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
        f"parameters, {config.num_hidden_layers} layers x {config.num_attention_heads} heads); length {length}")
    return Teacher(model, tokenizer, path, {"source": str(source)}, length)


def build_corpus(out: Path, teacher: Teacher, scale: DemoScale, log: Log) -> None:
    """<out>/data/train.jsonl (distillation documents) and heldout.jsonl (sources the teacher never saw)."""
    from hydrahead.demo.corpus import code_split, write_jsonl
    from hydrahead.demo.teacher_recipe import load_recipe
    from hydrahead.demo.teacher_data import teacher_documents

    code, heldout = code_split(load_recipe().corpus.code_bytes)
    counts = dict(scale.documents)
    docs = teacher_documents(teacher.tokenizer, code, counts=counts, niah_tasks=scale.tasks,
                             max_tokens=teacher.train_length, seed=CORPUS_SEED)
    write_jsonl(out / "data" / "train.jsonl", docs)
    write_jsonl(out / "data" / "heldout.jsonl", heldout)
    log(f"distillation corpus: {len(docs)} documents ({counts}); {len(heldout)} held-out source files")


def score_and_plan(out: Path, teacher: Teacher, scale: DemoScale, log: Log) -> tuple[dict, Any, dict, dict]:
    """Head scores (patching, attribution), their validation by ablation, and the plans; all saved under <out>.

    Returns (scores, validation report, plans, notes): `notes` maps a plan left out to why (the same heads
    as an earlier plan, or impossible for this teacher's shape: found before any scoring). The random baseline
    draws its heads anew for every distillation seed (`plan_path`), so that its spread is over head sets, not
    over trainings of one draw; `plans` holds the first seed's."""
    import numpy as np

    from hydrahead.errors import PlanError
    from hydrahead.scoring import HeadScores, ProbeConfig, build_probes, score_heads, validate_scores

    config = teacher.model.config
    # 7:1 -> one FA head in eight, per layer: the nearest whole count (14 heads: 2; rounding down gave 1, a
    # 13:1 baseline); the FA count can still differ from HydraHead's, and the report shows each plan's
    per_layer = max(1, round(config.num_attention_heads / 8))
    makers = {  # (patching scores, seed) -> plan
        "hydrahead-7:1": lambda s, seed: HeadPlan.from_scores(s, ratio="7:1", min_per_layer=1, config=config),
        RANDOM: lambda s, seed: HeadPlan.random(config, ratio="7:1", seed=seed, min_per_layer=1),
        "fixed-per-layer-7:1": lambda s, seed: HeadPlan.fixed_per_layer(s, k=per_layer, config=config),
        "layerwise-3:1": lambda s, seed: HeadPlan.layerwise(config, ratio="3:1"),
        "layerwise-7:1": lambda s, seed: HeadPlan.layerwise(config, ratio="7:1"),
        "all-gdn": lambda s, seed: HeadPlan.none(config),
    }
    assert set(makers) == set(PLAN_NAMES), "every plan the demo can run has a maker"
    notes: dict[str, str] = {}
    shape = (config.num_hidden_layers, config.num_attention_heads)
    stand_in = HeadScores(np.random.default_rng(0).random(shape), "patching", config.num_key_value_heads)
    for name in [n for n in makers if n in scale.plans]:  # a plan this shape cannot have, said before the scoring
        try:
            makers[name](stand_in, scale.seeds[0])
        except PlanError as err:
            notes[name] = f"impossible for this teacher ({shape[0]} layers x {shape[1]} heads): {err}"
            log(f"{name} left out: {notes[name]}")
    probe_config = ProbeConfig(samples=scale.probe_samples, context_length=teacher.train_length,
                               needle_types=NEEDLE_TYPES)
    probes = build_probes(teacher.tokenizer, probe_config, model=teacher.model)
    heads = config.num_hidden_layers * config.num_attention_heads
    scores = {}
    for method in ("patching", "attribution"):
        log(f"scoring {heads} heads by {method} on {len(probes)} counterfactual probes")
        scores[method] = score_heads(teacher.model, teacher.tokenizer, method=method, probes=probes, progress=False,
                                     probe_config=probe_config)
        scores[method].to_json(out / "scores" / f"{method}.json")
        log(f"  {method}: {scores[method].metadata.get('wall_seconds', '?')} s")
    scores["patching"].plot(out / "report" / "heads.png", title="head importance (patching)", mark_top=8)
    top_k = max(1, round(0.03 * heads))  # about 3% of all heads (issue: k ~ 3%)
    validation_probes = build_probes(teacher.tokenizer, probe_config, model=teacher.model, seed=probe_config.seed + 1)
    log(f"validating: ablating the top-{top_k} heads vs {scale.validation_seeds} random sets on "
        f"{len(validation_probes)} unseen probes")
    validation = validate_scores(teacher.model, validation_probes, scores["patching"], top_k=top_k,
                                 seeds=tuple(range(scale.validation_seeds)), compare={"attribution": scores["attribution"]})
    validation.to_json(out / "scores" / "validation.json")
    plans: dict[str, HeadPlan] = {}
    for name, make in makers.items():
        if name not in scale.plans or name in notes:
            continue
        plan = make(scores["patching"], scale.seeds[0])
        # the random baseline is a draw per seed: never the same plan as another, whatever its first draw
        same = None if name == RANDOM else next(
            (other for other, p in plans.items() if other != RANDOM and p.fa_heads == plan.fa_heads), None)
        if same is not None:
            notes[name] = (f"the same FA heads as {same} on this teacher ({config.num_hidden_layers} layers x "
                           f"{config.num_attention_heads} heads), so it is run once, as {same}")
            continue
        plans[name] = plan
        plan.to_json(plan_path(out, name, scale.seeds[0]))
        for seed in scale.seeds[1:] if name == RANDOM else []:  # the other seeds' draws
            make(None, seed).to_json(plan_path(out, name, seed))
    return scores, validation, plans, notes


def plan_path(out: Path, name: str, seed: int | None = None) -> Path:
    """A plan's file under <out>/plans; the random baseline has one per distillation seed (its heads drawn with
    that seed)."""
    suffix = f"-seed{seed}" if name == RANDOM and seed is not None else ""
    return out / "plans" / f"{name.replace(':', 'to')}{suffix}.json"


def recipe_for(out: Path, teacher: Teacher, name: str, seed: int, scale: DemoScale, device: str) -> dict[str, Any]:
    """The one recipe every plan is distilled with (only the plan, the seed and the output differ)."""
    L, batch = teacher.train_length, scale.distill_batch
    return {
        "teacher": str(teacher.path),
        "plan": str(plan_path(out, name, seed)),
        "output_dir": str(out / "runs" / f"{name.replace(':', 'to')}-seed{seed}"),
        "seed": seed,
        "hybrid": {"preset": scale.preset, **({"train_length": L} if scale.preset == "paper" else {})},
        "data": {"train_files": [str(out / "data" / "train.jsonl")], "cache_dir": str(out / "cache"),
                 "packing": "documents", "isolate_documents": scale.isolate_documents},
        "training": {"device": device, "gradient_checkpointing": False, "progress": False,
                     "checkpoint_every": 0, "log_every": 10, "eval_every": 0},
        "stages": {
            "align": {"tokens": scale.align_tokens, "seq_len": L, "batch_size": batch, "lr": 3e-3},
            "distill": {"tokens": scale.distill_tokens, "seq_len": L, "batch_size": batch, "lr": 1e-3},
            "long_context": {"tokens": scale.long_tokens, "seq_len": 2 * L, "batch_size": max(1, batch // 2),
                             "lr": 3e-4},
        },
    }


def distill_all(out: Path, teacher: Teacher, plans: dict[str, HeadPlan], scale: DemoScale, device: str,
                log: Log) -> dict[str, Path]:
    """Every plan distilled once per seed; returns "<plan>/seed<s>" -> final checkpoint."""
    import hydrahead.distill as distill
    from hydrahead.distill import checkpoint as ckpt

    paths, runs = {}, [(name, seed) for name in plans for seed in scale.seeds]
    for i, (name, seed) in enumerate(runs, 1):
        started = time.time()
        recipe = recipe_for(out, teacher, name, seed, scale, device)
        plan = HeadPlan.from_json(recipe["plan"])  # random 7:1: this seed's draw
        log(f"distilling {name}, seed {seed} ({i}/{len(runs)}): {plan.num_fa} FA heads, "
            f"KV cache {100 * plan.kv_cache_fraction:.1f}% of the teacher")
        run_dir = Path(recipe["output_dir"])  # a demo rerun into the same --out: resumed, or refused
        again = (run_dir / ckpt.FILENAME).exists() or (run_dir / "metrics.jsonl").exists()
        try:
            paths[f"{name}/seed{seed}"] = distill.run(recipe, resume=again, teacher=teacher.model,
                                                     tokenizer=teacher.tokenizer, plan=plan)
        except TrainingInterrupted as err:  # distill's own advice, --resume, is no demo option
            raise TrainingInterrupted(rerun_to_continue(err), err.signum) from None
        except ResumeError as err:
            raise ResumeError(f"{out} holds an earlier demo's run that cannot be continued ({err}); "
                              "give the demo a new --out, or delete the old one") from err
        log(f"  done in {time.time() - started:.0f} s")
    return paths


def evaluate(out: Path, models: dict[str, Any], tokenizer: Any, train_length: int, scale: DemoScale,
             log: Log) -> tuple[list, list]:
    import hydrahead.eval as ev

    lengths = [m * train_length for m in scale.eval_multipliers]
    log(f"NIAH on {len(models)} models: tasks {', '.join(scale.tasks)}, lengths {lengths}, "
        f"depths {list(scale.eval_depths)}, {scale.eval_samples} samples per cell")
    records = ev.niah(models, tokenizer, lengths, scale.eval_depths, tasks=list(scale.tasks),
                      samples=scale.eval_samples, seed=0, progress=False)
    heldout = [json.loads(line)["text"] for line in (out / "data" / "heldout.jsonl").read_text().splitlines()]
    documents = [ev.Document(f"heldout-{i}", t) for i, t in enumerate(heldout)]
    ppl_length = max(lengths)
    log(f"held-out perplexity at {ppl_length} tokens on up to {scale.ppl_documents} documents")
    ppl = ev.perplexity(models, tokenizer, documents, length=ppl_length, bucket=train_length,
                        max_documents=scale.ppl_documents, progress=False)
    return records, ppl


def run(out: str | Path = "demo_out", scale: DemoScale | None = None, device: str = "auto",
        quiet: bool = False, retrain_teacher: bool = False,
        after_teacher: Callable[[Any], None] | None = None, teacher: str | Path | None = None,
        length: int | None = None, command: str | None = None) -> Path:
    """Run the whole demo into `out`; returns the path of report/index.md. `teacher`: a pretrained model
    (directory or GGUF) instead of the shipped one; `length`: the length everything is built around
    (`get_teacher`); `command`: the command line the report names (default: rebuilt from the scale)."""
    from hydrahead.demo.report import write_demo_report
    from hydrahead.demo.scale import SCALES
    from hydrahead.models.loading import load_model

    scale = scale or SCALES["default"]
    out = Path(out)
    log = Log(quiet=quiet)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    log(f"hydrahead demo, scale {scale.name!r}, device {device}, output {out}")
    timings: dict[str, float] = {}
    mark = time.time()
    teacher = get_teacher(out, retrain_teacher, device, log, source=teacher, length=length)
    if after_teacher is not None:
        after_teacher(teacher.model)
    build_corpus(out, teacher, scale, log)
    timings["teacher + corpus"] = time.time() - mark
    mark = time.time()
    scores, validation, plans, notes = score_and_plan(out, teacher, scale, log)
    timings["head scoring + validation + plans"] = time.time() - mark
    mark = time.time()
    checkpoints = distill_all(out, teacher, plans, scale, device, log)
    timings[f"distillation ({len(checkpoints)} runs)"] = time.time() - mark
    mark = time.time()
    models = {"teacher": teacher.model.to(device)}
    for name, path in checkpoints.items():
        # in fp32 like the teacher (checkpoints are stored in the teacher's fp16): the same numerics and
        # the same KV-cache element size for every model of the comparison
        models[name] = load_model(path, "float32", device)
    records, ppl = evaluate(out, models, teacher.tokenizer, teacher.train_length, scale, log)
    timings["evaluation"] = time.time() - mark
    timings["total"] = time.time() - log.start
    index = write_demo_report(out / "report", scale=scale, teacher=teacher, models=models, plans=plans, notes=notes,
                              scores=scores, validation=validation, niah=records, ppl=ppl, timings=timings,
                              command=command)
    log(f"report written to {index}")
    return index
