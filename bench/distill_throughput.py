"""Distillation throughput: training tokens/s per stage, through the real training step.

Each stage runs `Trainer._step` (teacher targets, the stage loss in the wrapped module, backward, gradient
clipping) plus the AdamW step on random tokens, after warm-up steps; the device is synchronised around
the timed steps. No data files or tokenizer are involved: this measures the engine, not tokenisation.

  CPU (always):  a tiny Qwen3-shaped model, every stage.
  CUDA (when available): a Qwen3-1.7B-shaped model (28 layers x 16 heads, 8 KV heads, vocab 151936) with
                 random weights, 7:1 GDN:FA heads, stage 2 (distill) at 4K tokens, bf16 autocast on fp32
                 master weights, gradient checkpointing; model FLOPs utilisation = 6 * N * tokens/s over
                 the measured peak bf16 matmul rate (N = student parameters without embeddings; the
                 teacher's forward and attention FLOPs are not counted, so MFU is a lower bound).

Usage:
  python bench/distill_throughput.py                  # CPU table (+ the GPU row when CUDA is present)
  python bench/distill_throughput.py --threads 2 --steps 5
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hydrahead import HeadPlan, HybridOptions, convert
from hydrahead.distill.data import BatchLoader
from hydrahead.distill.distributed import DistEnv
from hydrahead.distill.metrics import MetricsLog
from hydrahead.distill.recipe import (
    AlignStageConfig,
    DistillStageConfig,
    LongContextStageConfig,
    TrainingConfig,
)
from hydrahead.distill.stages import STAGES
from hydrahead.distill.trainer import Trainer, make_optimizer

TINY = dict(vocab_size=8192, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=4, head_dim=32, max_position_embeddings=8192, tie_word_embeddings=False)
QWEN3_1_7B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                  tie_word_embeddings=True, rope_theta=1000000.0)
CONFIGS = {"align": AlignStageConfig, "distill": DistillStageConfig, "long_context": LongContextStageConfig}


class RandomTokens:
    """A SequenceSource of uniformly random token ids (deterministic), every sequence full."""

    pad_id = None

    def __init__(self, vocab: int, seq_len: int) -> None:
        self.vocab, self.seq_len = vocab, seq_len

    def iter_from(self, start: int):
        rng = np.random.default_rng(start)
        while True:
            yield rng.integers(0, self.vocab, self.seq_len, dtype=np.int64)


def build(shape: dict, fa_per_layer: int, seq_len: int, device: torch.device):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**shape)
    torch.manual_seed(0)
    with torch.device(device):
        teacher = Qwen3ForCausalLM(config).eval()
    H, KV = config.num_attention_heads, config.num_key_value_heads
    group = H // KV
    fa = tuple(tuple(g * group for g in range(fa_per_layer)) for _ in range(config.num_hidden_layers))
    plan = HeadPlan(fa, H, KV)
    student = convert(teacher, plan, HybridOptions.preset("paper", train_length=seq_len),
                      calibration=torch.randint(0, config.vocab_size, (1, 64)))
    student.config.use_cache = False
    return teacher.requires_grad_(False), student


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(stage_name: str, teacher, student, seq_len: int, batch: int, steps: int, warmup: int,
            device: torch.device, precision: str) -> float:
    """Training tokens/s of `steps` optimiser steps of one stage, after `warmup` untimed steps."""
    config = CONFIGS[stage_name](tokens=10**12, seq_len=seq_len, batch_size=batch, lr=1e-4)
    stage = STAGES[stage_name](config, 0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(student=student, teacher=teacher, tokenizer=None,
                          training=TrainingConfig(precision=precision, progress=False),
                          env=DistEnv(0, 1, 0, device, False), output_dir=Path(tmp), identity={}, fingerprint="",
                          metrics=MetricsLog(Path(tmp), enabled=False))
        stage.prepare(student)
        student.train()
        module = trainer._wrap()
        params = [p for p in student.parameters() if p.requires_grad]
        optimizer = make_optimizer(params, config, device)
        loader = BatchLoader(RandomTokens(student.config.vocab_size, seq_len), batch)
        for i in range(warmup + steps):
            if i == warmup:
                sync(device)
                start = time.perf_counter()
            trainer._step(module, stage, loader, params, optimizer)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync(device)
        elapsed = time.perf_counter() - start
        stage.finish(student)
    return steps * batch * seq_len / elapsed


def peak_bf16_flops(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """Measured dense bf16 matmul rate (FLOP/s): the ceiling MFU is reported against."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def non_embedding_parameters(model) -> int:
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads (torch)")
    parser.add_argument("--steps", type=int, default=5, help="timed optimiser steps per stage")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--cpu-seq-len", type=int, default=512)
    parser.add_argument("--cpu-batch", type=int, default=4)
    parser.add_argument("--gpu-seq-len", type=int, default=4096)
    parser.add_argument("--gpu-batch", type=int, default=1)
    parser.add_argument("--skip-gpu", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    cpu = torch.device("cpu")
    teacher, student = build(TINY, fa_per_layer=1, seq_len=args.cpu_seq_len, device=cpu)
    params = sum(p.numel() for p in student.parameters())
    for stage in ("align", "distill", "long_context"):
        # long context: 4x the length, a quarter of the sequences (the same tokens per step)
        seq_len, batch = (args.cpu_seq_len * 4, max(1, args.cpu_batch // 4)) if stage == "long_context" else (
            args.cpu_seq_len, args.cpu_batch)
        tps = measure(stage, teacher, student, seq_len, batch, args.steps, args.warmup, cpu, "fp32")
        rows.append((f"CPU, {args.threads} thread(s)", f"tiny Qwen3 ({params / 1e6:.1f}M, 4 layers, 7:1)", stage,
                     f"{batch} x {seq_len}", "fp32", f"{tps:,.0f}", "-"))
    del teacher, student

    if torch.cuda.is_available() and not args.skip_gpu:
        gpu = torch.device("cuda")
        peak = peak_bf16_flops(gpu)
        teacher, student = build(QWEN3_1_7B, fa_per_layer=2, seq_len=args.gpu_seq_len, device=gpu)
        teacher.to(torch.bfloat16)
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        n = non_embedding_parameters(student)
        tps = measure("distill", teacher, student, args.gpu_seq_len, args.gpu_batch, args.steps, args.warmup, gpu,
                      "bf16")
        mfu = 6 * n * tps / peak
        rows.append((torch.cuda.get_device_name(gpu), f"Qwen3-1.7B shape ({n / 1e9:.2f}B non-emb., 7:1)", "distill",
                     f"{args.gpu_batch} x {args.gpu_seq_len}", "bf16 autocast", f"{tps:,.0f}",
                     f"{100 * mfu:.1f}% (peak {peak / 1e12:.0f} TFLOP/s measured)"))

    print(f"<!-- {datetime.date.today()} {platform.processor() or platform.machine()} torch {torch.__version__} -->")
    print("| device | model | stage | batch x seq | precision | tokens/s | MFU |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
