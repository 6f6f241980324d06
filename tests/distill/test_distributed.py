"""Two CPU processes (torchrun, gloo) train exactly like one process over the same global batch, with DDP
and with FSDP2, on full rows and on padded (document-packed) rows; so do micro-steps (grad_accum)."""

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
DOCUMENTS = {"packing": "documents"}  # rows padded unevenly: each process and micro-step holds other counts
CASES = {"ddp": (STAGES, {}), "fsdp": ({"align": STAGES["align"], "distill": STAGES["distill"]}, {}),
         "ddp-documents": (STAGES, DOCUMENTS)}


def curve(out):
    return [(m["stage"], m["step"], m["loss"], m["grad_norm"]) for m in read_metrics(out) if "loss" in m]


def assert_same_training(one, two, label):
    """Equal loss and gradient-norm curves, and equal final weights."""
    a, b = curve(one), curve(two)
    assert [c[:2] for c in a] == [c[:2] for c in b] and a, label
    for x, y in zip(a, b):
        assert y[2] == pytest.approx(x[2], rel=1e-5, abs=1e-6), (label, x, y)  # loss
        assert y[3] == pytest.approx(x[3], rel=1e-4, abs=1e-6), (label, x, y)  # gradient norm
    expected = from_pretrained(one / "final").state_dict()
    actual = from_pretrained(two / "final").state_dict()
    # Adam divides by sqrt(v): where a gradient is ~0, summation-order noise can move a single element by
    # up to ~lr * 0.1; all other elements agree to ~1e-6.
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-3, msg=name)
        moved = int(((actual[name] - expected[name]).abs() > 1e-5).sum())
        assert moved <= max(1, 0.01 * expected[name].numel()), (name, moved)  # one element of a small tensor


@pytest.mark.slow
def test_two_processes_match_one(workspace, tmp_path):
    recipes = []
    for case, (stages, data) in CASES.items():
        run(tiny_recipe(workspace, tmp_path / f"{case}-one", stages, data=data))
        path = tmp_path / f"{case}.yaml"
        strategy = case.split("-")[0]
        path.write_text(yaml.safe_dump(tiny_recipe(workspace, tmp_path / f"{case}-two", stages, data=data,
                                                   training={"distributed": strategy, "checkpoint_every": 1})))
        recipes.append(str(path))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(Path(__file__).with_name("torchrun_main.py")),
         *recipes],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("saved hybrid to") == len(CASES)  # printed by rank 0 only

    for case, (stages, _) in CASES.items():
        assert len(curve(tmp_path / f"{case}-one")) == sum(
            STAGES[s]["tokens"] // (STAGES[s]["batch_size"] * STAGES[s]["seq_len"] * STAGES[s].get("grad_accum", 1))
            for s in stages)
        assert_same_training(tmp_path / f"{case}-one", tmp_path / f"{case}-two", case)


def test_micro_steps_of_padded_rows_train_like_one_batch(workspace, tmp_path):
    """Document-packed rows (uneven padding): a global batch of 4 in one micro-step and in two of 2
    (grad_accum) give the same losses, gradients and weights: each loss is divided by the optimiser step's
    counts, not each micro-batch's (a mean of micro-batch means weighs a short row's targets more)."""
    def stages(batch_size, grad_accum):
        split = {"batch_size": batch_size, "grad_accum": grad_accum}
        return {"align": tiny_stage(tokens=2 * 4 * 32, **split),
                "distill": tiny_stage(tokens=2 * 4 * 32, lr=1.0e-3, loss_chunk=8, **split),
                "long_context": tiny_stage(tokens=2 * 4 * 64, seq_len=64, lr=1.0e-3, **split)}

    for name, split in {"one": (4, 1), "micro": (2, 2)}.items():
        run(tiny_recipe(workspace, tmp_path / name, stages(*split), data=DOCUMENTS))
    assert len(curve(tmp_path / "one")) == 6
    assert_same_training(tmp_path / "one", tmp_path / "micro", "grad_accum")


def _save_with_a_full_disk_on_rank_0(rank: int, port: int, path: str, results) -> None:
    """One of two gloo processes: a checkpoint save whose write fails on the main process (a file-size
    limit: the checkpoint writer fails, as on a full disk); reports what each process raised."""
    import resource
    import signal

    import torch.distributed as dist
    from torch import nn

    from hydrahead.distill import checkpoint as ckpt
    from hydrahead.distill.distributed import DistEnv

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        if rank == 0:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing the process
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
        env = DistEnv(rank, 2, 0, torch.device("cpu"), False)
        try:
            ckpt.save(Path(path), env, student=nn.Linear(256, 256), state=ckpt.TrainState("align", 0), identity={},
                      fingerprint="")
            results.put((rank, "saved", ""))
        except Exception as err:
            results.put((rank, type(err).__name__, str(err)))
    finally:
        dist.destroy_process_group()


def test_a_failed_write_on_the_main_process_stops_every_process_with_a_typed_error(tmp_path):
    """The writer's error on rank 0 (disk full) becomes OutputError there and DistillError on rank 1;
    before, rank 0 raised it untyped before telling the others, and rank 1 waited in all_reduce forever."""
    import multiprocessing
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_save_with_a_full_disk_on_rank_0, args=(rank, port, str(tmp_path / "ck.pt"), results))
             for rank in range(2)]
    for proc in procs:
        proc.start()
    try:
        got = dict((rank, (kind, message)) for rank, kind, message in (results.get(timeout=120) for _ in procs))
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    assert got[0][0] == "OutputError" and f"cannot write {tmp_path / 'ck.pt'}" in got[0][1], got
    assert got[1][0] == "DistillError" and "main process could not save" in got[1][1], got
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no temporary left behind


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
    with pytest.raises(ZeroDivisionError):  # any error, not only ours, after the other processes know
        distributed.on_main(env, lambda: 1 / 0)
