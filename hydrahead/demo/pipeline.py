"""`hydrahead demo`: the paper's comparison reproduced at small scale, offline, on any machine.

1. corpus: standard-library sources + synthetic key-value retrieval documents (in the evaluation's and
   the probes' formats, from seeds neither uses), written as JSONL for the distillation recipes
2. tokenizer (byte-level BPE) and a small Qwen3 teacher trained from scratch (cached in <out>/teacher)
3. head scores (patching, and attribution for comparison) and six plans: HydraHead 7:1 (constrained
   global), random 7:1, fixed per-layer 7:1, layer-wise 3:1, layer-wise 7:1, all-GDN
4. every plan converted and distilled with the same recipe and token budget
5. NIAH at 1x, 2x, 4x, 8x the training length and held-out perplexity, teacher and students
6. <out>/report/index.md with the tables and plots (see `report.py`)
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hydrahead.demo.corpus import stdlib_texts
from hydrahead.demo.retrieval_docs import retrieval_documents
from hydrahead.demo.scale import DemoScale
from hydrahead.demo.teacher import new_teacher, pack, teacher_config, train_causal_lm
from hydrahead.demo.tokenizer import train_tokenizer
from hydrahead.plan import HeadPlan
from hydrahead.scoring.haystack import vocabulary
from hydrahead.utils.io import atomic_write_text

NEEDLE_TYPES = ("number", "word")  # the demo's tasks; UUIDs take too many tokens at its short training length
PLAN_NAMES = ("hydrahead-7:1", "random-7:1", "fixed-per-layer-7:1", "layerwise-3:1", "layerwise-7:1", "all-gdn")


@dataclass
class Log:
    """Progress lines with elapsed time; every step of the demo says what it is doing."""

    start: float = field(default_factory=time.time)
    quiet: bool = False

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.time() - self.start:6.0f}s] {message}", file=sys.stderr, flush=True)


def write_jsonl(path: Path, texts: list[str]) -> None:
    atomic_write_text(path, "".join(json.dumps({"text": t}) + "\n" for t in texts))


class _Whitespace:
    """Stand-in tokenizer (one token per word) for drafting documents before the real tokenizer exists."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[str]]:
        return {"input_ids": text.split()}


def probe_documents(tokenizer: Any, scale: DemoScale, seed: int) -> list[str]:
    """Retrieval documents in the head-scoring probes' format (prompt + answer), from a training seed."""
    from hydrahead.scoring import ProbeConfig, build_probes

    config = ProbeConfig(samples=max(1, scale.retrieval_docs // 12), context_length=scale.train_length,
                         needle_types=NEEDLE_TYPES, seed=seed)
    probes = build_probes(tokenizer, config)
    return [tokenizer.decode(list(p.clean_ids) + [p.answer[-1]]) for p in probes]


def build_corpus(out: Path, scale: DemoScale, log: Log) -> tuple[Any, list[str], list[str]]:
    """Tokenizer, training documents and held-out documents; JSONL copies under <out>/data."""
    texts = stdlib_texts(int(scale.corpus_bytes * 1.25))
    rng = random.Random(0)
    rng.shuffle(texts)
    held_count = max(scale.ppl_documents * 2, len(texts) // 20)
    heldout, code = texts[:held_count], texts[held_count:]
    draft = retrieval_documents(_Whitespace(), list(scale.tasks), 200, 3 * scale.train_length // 4,
                                scale.train_length, seed=1)
    log(f"training a {scale.vocab_size}-token BPE tokenizer on {sum(map(len, code)) / 1e6:.1f} MB")
    tokenizer = train_tokenizer(code + draft, scale.vocab_size, whole_words=vocabulary())
    retrieval = retrieval_documents(tokenizer, list(scale.tasks), scale.retrieval_docs,
                                    3 * scale.train_length // 4, scale.train_length, seed=2)
    retrieval += probe_documents(tokenizer, scale, seed=1_000_003)
    train = code + retrieval
    random.Random(1).shuffle(train)
    write_jsonl(out / "data" / "train.jsonl", train)
    write_jsonl(out / "data" / "heldout.jsonl", heldout)
    log(f"corpus: {len(code)} source files, {len(retrieval)} retrieval documents, {len(heldout)} held out")
    return tokenizer, code, retrieval


TEACHER_RECIPE = 2  # bump when the corpus, tokenizer or teacher training changes, so caches are retrained


def teacher_key(scale: DemoScale) -> str:
    fields_ = {k: v for k, v in scale.to_dict().items() if k not in {
        "probe_samples", "align_tokens", "distill_tokens", "long_tokens", "distill_batch", "eval_multipliers",
        "eval_depths", "eval_samples", "ppl_documents"}}
    fields_["recipe"] = TEACHER_RECIPE
    fields_["python"] = sys.version.split()[0]
    fields_["torch"] = torch.__version__
    return hashlib.sha256(json.dumps(fields_, sort_keys=True).encode()).hexdigest()[:16]


def get_teacher(out: Path, scale: DemoScale, log: Log) -> tuple[Any, Any]:
    """The cached teacher and tokenizer if <out>/teacher was made by the same settings, else train them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, key = out / "teacher", teacher_key(scale)
    stamp = path / "demo_key.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        log(f"reusing the cached teacher in {path}")
        return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    tokenizer, code, retrieval = build_corpus(out, scale, log)
    L = scale.train_length
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    code_rows = pack([tokenizer(t)["input_ids"] for t in code], L, eos, pad)
    retrieval_rows = pack([tokenizer(t)["input_ids"] for t in retrieval], L, eos, pad)
    # Two thirds retrieval, one third code: retrieval is the skill under test and must be learnt within a
    # few hundred CPU steps; code keeps the language modelling honest.
    data = torch.cat([retrieval_rows, code_rows[: max(len(retrieval_rows) // 2, 1)]])
    config = teacher_config(len(tokenizer), hidden=scale.hidden, layers=scale.layers, heads=scale.heads,
                            kv_heads=scale.kv_heads, head_dim=scale.head_dim, max_positions=16 * L)
    config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    model = new_teacher(config, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"training the teacher ({n_params / 1e6:.2f}M parameters, {scale.layers} layers x {scale.heads} heads, "
        f"{scale.kv_heads} KV heads) for {scale.teacher_steps} steps on {data.shape[0]} sequences of {L} tokens")
    every = max(1, scale.teacher_steps // 10)

    def report(step: int, loss: float, tokens_per_s: float) -> None:
        if step % every == 0 or step == scale.teacher_steps - 1:
            log(f"  teacher step {step + 1}/{scale.teacher_steps}  loss {loss:.3f}  {tokens_per_s:,.0f} tok/s")

    train_causal_lm(model, data, pad_id=pad, steps=scale.teacher_steps, batch_size=scale.teacher_batch,
                    lr=scale.teacher_lr, seed=0, log=report)
    model.generation_config.eos_token_id = None  # answers are cut by length, not by EOS
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    atomic_write_text(stamp, json.dumps({"key": key, "scale": scale.to_dict()}, indent=1))
    return model, tokenizer


def score_and_plan(out: Path, teacher: Any, tokenizer: Any, scale: DemoScale, log: Log) -> tuple[dict, dict]:
    """Head scores (patching, attribution) and the six plans, saved under <out>/scores and <out>/plans."""
    from hydrahead.scoring import ProbeConfig, build_probes, score_heads

    probes = build_probes(tokenizer, ProbeConfig(samples=scale.probe_samples, context_length=scale.train_length,
                                                 needle_types=NEEDLE_TYPES))
    scores = {}
    for method in ("patching", "attribution"):
        log(f"scoring {scale.layers * scale.heads} heads by {method} on {len(probes)} counterfactual probes")
        scores[method] = score_heads(teacher, tokenizer, method=method, probes=probes, progress=False)
        scores[method].to_json(out / "scores" / f"{method}.json")
        log(f"  {method}: {scores[method].metadata.get('wall_seconds', '?')} s")
    scores["patching"].plot(out / "report" / "heads.png", title="head importance (patching)", mark_top=8)
    config = teacher.config
    per_layer = scale.heads // 8  # 7:1 -> one FA head in eight, per layer
    plans = {
        "hydrahead-7:1": HeadPlan.from_scores(scores["patching"], ratio="7:1", min_per_layer=1, config=config),
        "random-7:1": HeadPlan.random(config, ratio="7:1", seed=0, min_per_layer=1),
        "fixed-per-layer-7:1": HeadPlan.fixed_per_layer(scores["patching"], k=max(1, per_layer), config=config),
        "layerwise-3:1": HeadPlan.layerwise(config, ratio="3:1"),
        "layerwise-7:1": HeadPlan.layerwise(config, ratio="7:1"),
        "all-gdn": HeadPlan.none(config),
    }
    for name, plan in plans.items():
        plan.to_json(out / "plans" / f"{name.replace(':', 'to')}.json")
    return scores, plans


def recipe_for(out: Path, name: str, scale: DemoScale, device: str) -> dict[str, Any]:
    """The one recipe every plan is distilled with (only the plan and the output differ)."""
    L, batch = scale.train_length, scale.distill_batch
    return {
        "teacher": str(out / "teacher"),
        "plan": str(out / "plans" / f"{name.replace(':', 'to')}.json"),
        "output_dir": str(out / "runs" / name.replace(":", "to")),
        "seed": 0,
        "hybrid": {"preset": "paper", "train_length": L},
        "data": {"train_files": [str(out / "data" / "train.jsonl")], "cache_dir": str(out / "cache")},
        "training": {"device": device, "gradient_checkpointing": False, "progress": False,
                     "checkpoint_every": 0, "log_every": 10, "eval_every": 0},
        "stages": {
            "align": {"tokens": scale.align_tokens, "seq_len": L, "batch_size": batch, "lr": 3e-3},
            "distill": {"tokens": scale.distill_tokens, "seq_len": L, "batch_size": batch, "lr": 1e-3},
            "long_context": {"tokens": scale.long_tokens, "seq_len": 2 * L, "batch_size": max(1, batch // 2),
                             "lr": 3e-4},
        },
    }


def distill_all(out: Path, plans: dict[str, HeadPlan], scale: DemoScale, device: str, log: Log) -> dict[str, Path]:
    from hydrahead import distill

    paths = {}
    for i, name in enumerate(plans, 1):
        started = time.time()
        log(f"distilling {name} ({i}/{len(plans)}): {plans[name].num_fa} FA heads, "
            f"KV cache {100 * plans[name].kv_cache_fraction:.1f}% of the teacher")
        paths[name] = distill.run(recipe_for(out, name, scale, device))
        log(f"  done in {time.time() - started:.0f} s")
    return paths


def evaluate(out: Path, models: dict[str, Any], tokenizer: Any, scale: DemoScale, log: Log) -> tuple[list, list]:
    import hydrahead.eval as ev

    lengths = [m * scale.train_length for m in scale.eval_multipliers]
    log(f"NIAH on {len(models)} models: tasks {', '.join(scale.tasks)}, lengths {lengths}, "
        f"depths {list(scale.eval_depths)}, {scale.eval_samples} samples per cell")
    records = ev.niah(models, tokenizer, lengths, scale.eval_depths, tasks=list(scale.tasks),
                      samples=scale.eval_samples, seed=0, progress=False)
    heldout = [json.loads(line)["text"] for line in (out / "data" / "heldout.jsonl").read_text().splitlines()]
    documents = [ev.Document(f"heldout-{i}", t) for i, t in enumerate(heldout)]
    ppl_length = max(lengths)
    log(f"held-out perplexity at {ppl_length} tokens on up to {scale.ppl_documents} documents")
    ppl = ev.perplexity(models, tokenizer, documents, length=ppl_length, bucket=scale.train_length,
                        max_documents=scale.ppl_documents, progress=False)
    return records, ppl


def run(out: str | Path = "demo_out", scale: DemoScale | None = None, device: str = "auto",
        quiet: bool = False, after_teacher: Callable[[Any], None] | None = None) -> Path:
    """Run the whole demo into `out`; returns the path of report/index.md."""
    from hydrahead.demo.report import write_demo_report
    from hydrahead.demo.scale import SCALES
    from hydrahead.models.io import from_pretrained

    scale = scale or SCALES["default"]
    out = Path(out)
    log = Log(quiet=quiet)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    log(f"hydrahead demo, scale {scale.name!r}, device {device}, output {out}")
    timings: dict[str, float] = {}
    mark = time.time()
    teacher, tokenizer = get_teacher(out, scale, log)
    timings["corpus + tokenizer + teacher"] = time.time() - mark
    if after_teacher is not None:
        after_teacher(teacher)
    mark = time.time()
    scores, plans = score_and_plan(out, teacher, tokenizer, scale, log)
    timings["head scoring + plans"] = time.time() - mark
    mark = time.time()
    checkpoints = distill_all(out, plans, scale, device, log)
    timings["distillation (6 plans)"] = time.time() - mark
    mark = time.time()
    models = {"teacher": teacher.to(device)}
    for name, path in checkpoints.items():
        model = from_pretrained(path).to(device).eval()
        model.generation_config.eos_token_id = None
        models[name] = model
    records, ppl = evaluate(out, models, tokenizer, scale, log)
    timings["evaluation"] = time.time() - mark
    timings["total"] = time.time() - log.start
    index = write_demo_report(out / "report", scale=scale, models=models, plans=plans, scores=scores,
                              niah=records, ppl=ppl, timings=timings)
    log(f"report written to {index}")
    return index
