"""`EXAMPLE_RECIPE`: the commented recipe `hydrahead distill --print-example-recipe` prints (a test loads it)."""

EXAMPLE_RECIPE = """\
# hydrahead distillation recipe. Run with:
#   hydrahead distill recipe.yaml                 (one process)
#   torchrun --nproc-per-node 8 -m hydrahead distill recipe.yaml
#   hydrahead distill recipe.yaml --resume        (continue a stopped run exactly)
# Relative paths are relative to this file. Budgets accept 300M, 0.3B, 16K (K = 1000);
# lengths (seq_len) accept 4k, 16k (k = 1024).

teacher: models/Qwen3-1.7B          # transformers checkpoint directory, with its tokenizer
plan: plans/qwen3-1.7b-7to1.json    # from `hydrahead plan`
output_dir: runs/qwen3-1.7b-7to1    # checkpoint.safetensors, metrics.jsonl, final/ (the hybrid)
seed: 0

hybrid:                             # HybridOptions: a preset plus overrides
  preset: paper                     # paper (NoPE + log scale + gate on FA heads) or exact
  train_length: 16384               # the length the FA log-length scale is normalised by

data:
  train_files: [data/fineweb-edu/*.parquet]   # .txt, .jsonl/.json or .parquet; globs allowed
  eval_files: [data/heldout.jsonl]            # held-out perplexity (optional)
  text_field: text                  # column with the text in JSONL / Parquet
  packing: concat                   # concat (one stream cut into rows) or documents (whole documents per row)
  isolate_documents: false          # documents packing: each document of a row attends only to itself
  streaming: false                  # true: stream through a shuffle buffer instead of caching tokens
  shuffle_buffer: 10000             # documents (streaming only)
  eval_sequences: 16

training:
  distributed: auto                 # ddp with >1 process; fsdp for training that does not fit one GPU
  precision: auto                   # bf16 autocast on CUDA, fp32 on CPU
  gradient_checkpointing: true      # recompute activations in backward: about half the memory, a third slower
  checkpoint_every: 200             # optimiser steps (a checkpoint is also written at each stage end)
  log_every: 10
  eval_every: 200
  tensorboard: false

stages:                             # run in this order; leave one out or set skip: true to skip it
  align:                            # stage 1: only hybrid parameters; per-layer hidden-state MSE
    tokens: 0.3B
    seq_len: 4096
    batch_size: 32                  # global sequences per micro-step (divided over processes)
    grad_accum: 1
    lr: 1.0e-3                      # write 1.0e-3, not 1e-3: YAML 1.1 reads 1e-3 as text (both work here)
    schedule: cosine                # cosine, linear or constant after warm-up
    warmup_fraction: 0.02
    min_lr_ratio: 0.1
    loss: nmse                      # each layer's MSE / teacher variance (scale-free), or mse (plain Eq. 15)
    sink_tokens: 0                  # 1: leave each document's first token (an attention sink) out of the loss
  distill:                          # stage 2: everything trains; KL(teacher || student) + CE
    tokens: 1B
    seq_len: 4096
    batch_size: 32
    lr: 1.0e-4
    temperature: 1.0
    kl_weight: 1.0                  # 0: next-token CE alone (times ce_weight), and the teacher is not run
    ce_weight: 1.0
    loss_chunk: 1024                # logits computed 1024 positions at a time
    # lora: {r: 16, alpha: 32}      # LoRA (peft) on the backbone instead of full fine-tuning
  long_context:                     # stage 3: next-token CE at long length, no teacher
    tokens: 1B
    seq_len: 16384
    batch_size: 8
    lr: 5.0e-5
    # train_files: [data/long-docs/*.jsonl]
"""
