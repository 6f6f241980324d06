"""The GPU study script (bench/gpu_real_model.sh) runs end to end on a CPU: a tiny random Llama written as
GGUF, sent in parts as the device gets it, at the tiny scale. What it measures on a GPU is in
docs/real_models.md; here only that every step runs and the report says what it ran on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.models.gguf_writer import write_tiny_gguf

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_study_runs_on_a_cpu_from_a_gguf_sent_in_parts(tmp_path):
    gguf = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf, num_attention_heads=8, num_key_value_heads=4, head_dim=8)  # 7:1 keeps 2 of 16 heads
    parts = tmp_path / "parts"
    parts.mkdir()
    data = gguf.read_bytes()
    third = len(data) // 3 + 1
    for i in range(3):
        (parts / f"part-0{i}").write_bytes(data[i * third:(i + 1) * third])
    out = tmp_path / "study"
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_real_model.sh"), str(parts), str(out), "--scale", "tiny",
                           "--length", "512", "--plans", "hydrahead-7:1,layerwise-3:1", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (parts / "model.gguf").read_bytes() == data  # the parts joined back into the file
    report = (out / "report" / "index.md").read_text()
    assert f"--teacher {parts / 'model.gguf'} --length 512" in report
    for name in ("teacher", "hydrahead-7:1", "layerwise-3:1"):
        assert f"| {name} |" in report
    assert "random-7:1" not in report.split("## Comparison")[1].split("## Head importance")[0]
    environment = (out / "environment.txt").read_text()
    assert "device cpu" in environment and "study took" in environment
    assert (out / "teacher" / "config.json").is_file()  # the GGUF exported once, for the recipes to name
