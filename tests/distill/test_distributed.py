"""Two CPU processes (torchrun, gloo) train exactly like one process over the same global batch, with DDP
and with FSDP2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hydrahead import from_pretrained
from hydrahead.distill import read_metrics, run
from tests.distill.conftest import tiny_recipe, tiny_stage

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
STAGES = {
    "align": tiny_stage(tokens=3 * 4 * 32, grad_accum=2, batch_size=2),
    "distill": tiny_stage(tokens=3 * 4 * 32, loss_chunk=8),
    "long_context": tiny_stage(tokens=2 * 4 * 64, seq_len=64, batch_size=4, lr=1.0e-3),
}
CASES = {"ddp": STAGES, "fsdp": {"align": STAGES["align"], "distill": STAGES["distill"]}}


def curve(out):
    return [(m["stage"], m["step"], m["loss"], m["grad_norm"]) for m in read_metrics(out) if "loss" in m]


@pytest.mark.slow
def test_two_processes_match_one(workspace, tmp_path):
    recipes = []
    for strategy, stages in CASES.items():
        run(tiny_recipe(workspace, tmp_path / f"{strategy}-one", stages))
        path = tmp_path / f"{strategy}.yaml"
        path.write_text(yaml.safe_dump(tiny_recipe(workspace, tmp_path / f"{strategy}-two", stages,
                                                   training={"distributed": strategy, "checkpoint_every": 1})))
        recipes.append(str(path))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(Path(__file__).with_name("torchrun_main.py")),
         *recipes],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("saved hybrid to") == 2  # printed by rank 0 only

    for strategy, stages in CASES.items():
        one, two = curve(tmp_path / f"{strategy}-one"), curve(tmp_path / f"{strategy}-two")
        assert [c[:2] for c in one] == [c[:2] for c in two] and len(one) == sum(
            STAGES[s]["tokens"] // (STAGES[s]["batch_size"] * STAGES[s]["seq_len"] * STAGES[s].get("grad_accum", 1))
            for s in stages)
        for a, b in zip(one, two):
            assert b[2] == pytest.approx(a[2], rel=1e-5, abs=1e-6), (strategy, a, b)  # loss
            assert b[3] == pytest.approx(a[3], rel=1e-4, abs=1e-6), (strategy, a, b)  # gradient norm
        expected = from_pretrained(tmp_path / f"{strategy}-one" / "final").state_dict()
        actual = from_pretrained(tmp_path / f"{strategy}-two" / "final").state_dict()
        # Adam divides by sqrt(v): where a gradient is ~0, summation-order noise can move a single element by
        # up to ~lr * 0.1; all other elements agree to ~1e-6.
        for name in expected:
            torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-3, msg=name)
            moved = int(((actual[name] - expected[name]).abs() > 1e-5).sum())
            assert moved <= max(1, 0.01 * expected[name].numel()), (name, moved)  # one element of a small tensor


def test_on_main_reraises_the_main_process_error():
    from hydrahead.distill import distributed
    from hydrahead.errors import OutputError

    env = distributed.init("cpu")
    done = []
    distributed.on_main(env, lambda: done.append(1))
    assert done == [1]

    def fail():
        raise OutputError("cannot write x")

    with pytest.raises(OutputError, match="cannot write x"):
        distributed.on_main(env, fail)
