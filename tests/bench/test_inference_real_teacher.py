"""bench/inference.py --teacher: a saved checkpoint and a plan file instead of the random slice (what
docs/real_models.md section 8 runs on SmolLM2), at tiny sizes on a CPU; --prefill-chunk and --profile (at one of two lengths) too."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hydrahead
from hydrahead import HeadPlan
from tests.conftest import make_teacher

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_real_teacher_and_its_plan_are_timed(tmp_path):
    teacher = make_teacher("llama")
    hydrahead.save_hybrid(teacher, tmp_path / "teacher")
    HeadPlan(((0, 1), ()), 4, 2).to_json(tmp_path / "plan.json")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "inference.py"), "--teacher", str(tmp_path / "teacher"),
         "--plan", str(tmp_path / "plan.json"), "--sections", "prefill,decode", "--prefill", "64,96",
         "--prefill-chunk", "64", "--profile", "96", "--decode", "32", "--batch", "1", "--steps", "1", "--repeats", "1",
         "--json", str(tmp_path / "out.json")],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["teacher"] == str(tmp_path / "teacher") and result["prefill_chunk"] == 64
    for section in ("decode", "profiles"):
        assert [row["model"] for row in result[section]] == ["teacher", "plan"], section
    assert [row["model"] for row in result["prefill"]] == ["teacher", "plan"] * 2
    assert [row["bytes"] == row["expected"] for row in result["cache"]] == [True, True]
    assert all(row["ops"] for row in result["profiles"]) and {row["tokens"] for row in result["profiles"]} == {96}
