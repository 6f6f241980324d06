"""Checkpoints: kill-and-resume equals an uninterrupted run; the NaN guard; --resume mismatches."""

import shutil

import pytest
import torch

import hydrahead
from hydrahead.distill import NonFiniteLossError, ResumeError, read_metrics, run
from hydrahead.distill.checkpoint import FILENAME, read_payload, write_payload
from hydrahead.distill.stages import DistillStage
from tests.distill.conftest import tiny_recipe, tiny_stage

STAGES = {
    "align": tiny_stage(tokens=3 * 4 * 32),
    "distill": tiny_stage(tokens=6 * 4 * 32, loss_chunk=8, grad_accum=2, batch_size=2, schedule="cosine",
                          warmup_fraction=0.2),
    "long_context": tiny_stage(tokens=2 * 2 * 64, seq_len=64, batch_size=2, lr=1.0e-3),
}


def kill_at(stage: str, step: int):
    def callback(info):
        if info.stage == stage and info.step == step:
            raise KeyboardInterrupt
    return callback


def state(path):
    return hydrahead.from_pretrained(path).state_dict()


def curve(out):
    return [(m["stage"], m["step"], m["loss"]) for m in read_metrics(out) if "loss" in m]


@pytest.mark.parametrize("streaming", [False, True], ids=["cached", "streaming"])
def test_kill_and_resume_matches_an_uninterrupted_run(workspace, tmp_path, streaming):
    data = {"streaming": streaming, "shuffle_buffer": 16}
    reference = run(tiny_recipe(workspace, tmp_path / "ref", STAGES, data=data))
    recipe = tiny_recipe(workspace, tmp_path / "run", STAGES, data=data, training={"checkpoint_every": 2})
    with pytest.raises(KeyboardInterrupt):  # killed after step 5 of distill: the checkpoint holds step 4
        run(recipe, callbacks=[kill_at("distill", 5)])
    assert not (tmp_path / "run" / "final").exists()
    resumed = run(recipe, resume=True)
    expected, actual = state(reference), state(resumed)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    # the metrics file reads as one run: the lost step 5 was dropped and recomputed, nothing is duplicated
    a, b = curve(tmp_path / "ref"), curve(tmp_path / "run")
    assert [x[:2] for x in a] == [x[:2] for x in b]
    torch.testing.assert_close([x[2] for x in b], [x[2] for x in a], rtol=1e-5, atol=1e-6)


def test_kill_during_lora_stage_resumes(workspace, tmp_path):
    stages = {"distill": tiny_stage(tokens=4 * 4 * 32, loss_chunk=8, lora={"r": 2})}
    reference = run(tiny_recipe(workspace, tmp_path / "ref", stages))
    recipe = tiny_recipe(workspace, tmp_path / "run", stages, training={"checkpoint_every": 1})
    with pytest.raises(KeyboardInterrupt):
        run(recipe, callbacks=[kill_at("distill", 3)])
    expected, actual = state(reference), state(run(recipe, resume=True))
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)


def test_resume_at_a_stage_boundary_restores_the_random_state(workspace, tmp_path):
    """Killed after align's last checkpoint, before distill's first: the LoRA stage draws its initialisation from
    the random state align left (with dropout, align draws from it), as the uninterrupted run did."""
    import json

    teacher = workspace / "teacher"
    config = json.loads((teacher / "config.json").read_text())
    dropout = tmp_path / "teacher"
    shutil.copytree(teacher, dropout)
    (dropout / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.2}))
    stages = {"align": tiny_stage(tokens=2 * 4 * 32),
              "distill": tiny_stage(tokens=2 * 4 * 32, loss_chunk=8, lora={"r": 2, "dropout": 0.1})}
    top = {"teacher": str(dropout), "training": {"checkpoint_every": 100}}
    reference = run(tiny_recipe(workspace, tmp_path / "ref", stages, **top))
    recipe = tiny_recipe(workspace, tmp_path / "run", stages, **top)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, callbacks=[kill_at("distill", 1)])
    expected, actual = state(reference), state(run(recipe, resume=True))
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)


def test_resume_refuses_a_different_recipe(workspace, tmp_path):
    recipe = tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage(tokens=4 * 4 * 32)},
                         training={"checkpoint_every": 1})
    with pytest.raises(KeyboardInterrupt):
        run(recipe, callbacks=[kill_at("align", 2)])
    with pytest.raises(ResumeError, match="already holds a checkpoint; continue it with --resume"):
        run(recipe)
    changed = tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage(tokens=4 * 4 * 32, lr=1.0e-2)},
                          seed=1, training={"checkpoint_every": 1, "log_every": 5})
    with pytest.raises(ResumeError, match=r"different recipe.*seed: 0 -> 1; stages.align.lr: 0.003 -> 0.01"):
        run(changed, resume=True)
    with pytest.raises(ResumeError, match="no checkpoint at"):
        run(tiny_recipe(workspace, tmp_path / "other", {"align": tiny_stage()}), resume=True)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(workspace, tmp_path, monkeypatch):
    recipe = tiny_recipe(workspace, tmp_path / "run", {"distill": tiny_stage(loss_chunk=8)},
                         training={"checkpoint_every": 2})
    original = DistillStage.loss
    calls = []

    def poisoned(self, student, batch, targets, counts=None):
        loss, metrics = original(self, student, batch, targets, counts)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), metrics

    monkeypatch.setattr(DistillStage, "loss", poisoned)
    checkpoint = tmp_path / "run" / FILENAME
    with pytest.raises(NonFiniteLossError, match=r"stage distill, step 3/6: the loss is nan.*intact: .*step 2\)"):
        run(recipe)
    saved = read_payload(checkpoint)
    assert saved["state"]["step"] == 2 and not saved["state"]["done"]
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    monkeypatch.setattr(DistillStage, "loss", original)
    run(recipe, resume=True)  # the intact checkpoint resumes
    assert [m["step"] for m in read_metrics(tmp_path / "run") if "loss" in m] == [1, 2, 3, 4, 5, 6]


def sigterm_at(stage: str, step: int):
    import os
    import signal

    def callback(info):
        if info.stage == stage and info.step == step:
            os.kill(os.getpid(), signal.SIGTERM)
    return callback


def test_sigterm_saves_at_the_step_boundary_and_resume_loses_nothing(workspace, tmp_path):
    from hydrahead.distill import TrainingInterrupted

    reference = run(tiny_recipe(workspace, tmp_path / "ref", STAGES))
    recipe = tiny_recipe(workspace, tmp_path / "run", STAGES)  # checkpoint_every 0: only the signal saves
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM at stage distill, step 3/6") as err:
        run(recipe, callbacks=[sigterm_at("distill", 3)])
    assert err.value.signum == 15
    saved = read_payload(tmp_path / "run" / FILENAME)
    assert (saved["state"]["stage"], saved["state"]["step"]) == ("distill", 3)
    expected, actual = state(reference), state(run(recipe, resume=True))
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    assert [x[:2] for x in curve(tmp_path / "ref")] == [x[:2] for x in curve(tmp_path / "run")]


def copied_inputs(workspace, tmp_path):
    import shutil

    shutil.copytree(workspace / "teacher", tmp_path / "teacher")
    shutil.copy(workspace / "train.jsonl", tmp_path / "train.jsonl")
    recipe = tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage(tokens=4 * 4 * 32)},
                         training={"checkpoint_every": 1, "progress": False, "log_every": 1})
    recipe["teacher"], recipe["data"]["train_files"] = str(tmp_path / "teacher"), [str(tmp_path / "train.jsonl")]
    with pytest.raises(KeyboardInterrupt):
        run(recipe, callbacks=[kill_at("align", 2)])
    return recipe


def test_resume_refuses_inputs_edited_in_place(workspace, tmp_path):
    recipe = copied_inputs(workspace, tmp_path)
    data = tmp_path / "train.jsonl"
    original = data.read_bytes()
    data.write_bytes(original.replace(b"a", b"e", 1))  # same size, one byte changed
    with pytest.raises(ResumeError, match=r"data file .*train.jsonl changed since checkpoint"):
        run(recipe, resume=True)
    data.write_bytes(original)
    weights = tmp_path / "teacher" / "model.safetensors"
    hydrahead.load_model(tmp_path / "teacher").half().float().save_pretrained(tmp_path / "teacher")  # re-saved
    assert weights.is_file()
    with pytest.raises(ResumeError, match=r"teacher .*model.safetensors changed since checkpoint"):
        run(recipe, resume=True)


def test_resume_refuses_a_damaged_or_incomplete_checkpoint(workspace, tmp_path):
    recipe = copied_inputs(workspace, tmp_path)
    path = tmp_path / "run" / FILENAME
    good = read_payload(path)

    def write(payload):
        write_payload(path, payload)

    name = next(k for k in good["model"] if "gdn" in k)
    flipped = {**good, "model": {**good["model"]}}
    flipped["model"][name] = good["model"][name].clone()
    flipped["model"][name].view(-1)[0] += 1e-3
    write(flipped)
    with pytest.raises(ResumeError, match=f"is damaged: tensor.*model/{name}.*checksums"):
        run(recipe, resume=True)
    write({**good, "model": {k: v for k, v in good["model"].items() if k != name}})
    with pytest.raises(ResumeError, match=f"is missing tensor.*model/{name}"):
        run(recipe, resume=True)
    crafted = {**good, "model": {k: v for k, v in good["model"].items() if k != name},
               "digests": {k: v for k, v in good["digests"].items() if k != f"model/{name}"}}
    write(crafted)  # consistent checksums, but the model lacks a tensor
    with pytest.raises(ResumeError, match=f"lacks .*{name}"):
        run(recipe, resume=True)
    write({k: v for k, v in good.items() if k != "fingerprint"})
    with pytest.raises(ResumeError, match="is incomplete: it has no fingerprint"):
        run(recipe, resume=True)
    for broken in ({**good, "state": {k: v for k, v in good["state"].items() if k != "tokens"}},
                   {**good, "state": [1, 2]}, {**good, "rng": {"rank0": 1}},
                   {**good, "state": {**good["state"], "step": "x"}}):  # the step read before the others: a traceback
        write(broken)  # parseable metadata, not a training state: no KeyError traceback
        with pytest.raises(ResumeError, match="is damaged: its (training state is incomplete|state, identity or RNG)"):
            run(recipe, resume=True)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ResumeError, match="is corrupt"):
        run(recipe, resume=True)
    torch.save(good, path)  # a pickle (an older checkpoint, or a crafted file) under the new name: never unpickled
    with pytest.raises(ResumeError, match="is corrupt or not a hydrahead checkpoint"):
        run(recipe, resume=True)
    write(good)
    run(recipe, resume=True)  # the intact checkpoint still resumes


def test_a_used_output_dir_is_never_appended_to(workspace, tmp_path):
    recipe = tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage(tokens=4 * 4 * 32)})
    with pytest.raises(KeyboardInterrupt):  # dies before its first checkpoint
        run(recipe, callbacks=[kill_at("align", 2)])
    out = tmp_path / "run"
    assert not (out / FILENAME).exists() and (out / "metrics.jsonl").is_file()
    (out / ".checkpoint.safetensors.abc123.tmp").write_bytes(b"left by a kill -9")
    for debris in (".final.x1.tmp", ".final.x2.old"):  # a kill during save_final's swap
        (out / debris).mkdir()
        (out / debris / "model.safetensors").write_bytes(b"a model-sized file")
    (out / "tensorboard" / "align").mkdir(parents=True)  # the dead run's events (TensorBoard on, then off)
    (out / "tensorboard" / "align" / "events.out.tfevents.1.host").write_bytes(b"steps 1 and 2")
    with pytest.raises(ResumeError, match="holds an earlier run .*metrics.jsonl.*--resume to start it over"):
        run(recipe)
    run(recipe, resume=True)  # starts over: one run's metrics, no duplicates
    assert [m["step"] for m in read_metrics(out) if "loss" in m] == [1, 2, 3, 4]
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*.old"))
    assert not (out / "tensorboard").exists()  # its steps showed beside the new run's


def test_a_checkpoint_whose_identity_has_gradient_checkpointing_resumes(workspace, tmp_path):
    """Written before the key joined RUNTIME_KEYS (its identity and fingerprint with it): checkpoint.load compares
    the identity without it."""
    from hydrahead.utils.io import json_sha256

    stages = {"align": tiny_stage(tokens=4 * 4 * 32)}
    recipe = tiny_recipe(workspace, tmp_path / "run", stages, training={"checkpoint_every": 1})
    with pytest.raises(KeyboardInterrupt):
        run(recipe, callbacks=[kill_at("align", 2)])
    path = tmp_path / "run" / FILENAME
    payload = read_payload(path)
    payload["identity"]["training"]["gradient_checkpointing"] = False  # as an older version stored it
    payload["fingerprint"] = json_sha256(payload["identity"])[:16]
    write_payload(path, payload)
    run(recipe, resume=True)
    assert [m["step"] for m in read_metrics(tmp_path / "run") if "loss" in m] == [1, 2, 3, 4]


def test_gradient_checkpointing_may_be_turned_on_to_resume(workspace, tmp_path):
    """It changes the memory a run takes, not what it computes (RUNTIME_KEYS): the fix after running out of memory
    is to turn it on and --resume."""
    stages = {"distill": tiny_stage(tokens=4 * 4 * 32, loss_chunk=8)}
    reference = run(tiny_recipe(workspace, tmp_path / "ref", stages))
    with pytest.raises(KeyboardInterrupt):
        run(tiny_recipe(workspace, tmp_path / "run", stages, training={"checkpoint_every": 1}),
            callbacks=[kill_at("distill", 2)])
    resumed = run(tiny_recipe(workspace, tmp_path / "run", stages,
                              training={"checkpoint_every": 1, "gradient_checkpointing": True}), resume=True)
    expected, actual = state(reference), state(resumed)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["SIGTERM", "SIGKILL"])
def test_a_signalled_cli_run_resumes_exactly(workspace, tmp_path, kill):
    """The real command in a subprocess: SIGTERM mid-stage exits 143 with a checkpoint at a step boundary;
    SIGKILL leaves the last periodic checkpoint. Either way `--resume` ends where an uninterrupted run ends."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    stages = {"align": tiny_stage(tokens=150 * 4 * 32)}
    reference = run(tiny_recipe(workspace, tmp_path / "ref", stages))
    recipe = tiny_recipe(workspace, tmp_path / "run", stages, training={"checkpoint_every": 7, "progress": False,
                                                                        "log_every": 1})
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "hydrahead", "distill", str(tmp_path / "recipe.yaml")]
    # one thread, as the reference run in this process (tests/conftest.py): the CPU GEMMs' summation order
    # depends on the thread count, and 150 steps carry a rounding difference past 1e-6
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 16:
            break
        time.sleep(0.02)
    proc.send_signal(getattr(signal, kill))
    _, err = proc.communicate(timeout=120)
    step = read_payload(tmp_path / "run" / FILENAME)["state"]["step"]
    if kill == "SIGTERM":
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "stopped by SIGTERM at stage align" in err and "Traceback" not in err
        assert 16 <= step < 150
    else:
        assert proc.returncode == -signal.SIGKILL and step % 7 == 0 and step >= 14
    resumed = subprocess.run([*command, "--resume"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    expected, actual = state(reference), state(tmp_path / "run" / "final")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    assert [m["step"] for m in read_metrics(tmp_path / "run") if "loss" in m] == list(range(1, 151))


def test_a_metrics_write_that_fails_stops_at_the_checkpoint_before_and_resumes_exactly(workspace, tmp_path):
    """A failed metrics.jsonl write (a full disk) is kept, not raised on the main process alone (other processes
    would wait for it in a collective); every process stops at the next step with OutputError, before another
    checkpoint, and --resume rewrites the records from that checkpoint on."""
    from hydrahead.errors import OutputError

    reference = run(tiny_recipe(workspace, tmp_path / "ref", STAGES))
    out = tmp_path / "run"
    recipe = tiny_recipe(workspace, out, STAGES, training={"checkpoint_every": 2})
    metrics = out / "metrics.jsonl"

    def fill_the_disk(info):
        if info.stage == "distill" and info.step == 3:
            metrics.rename(out / "kept.jsonl")
            metrics.mkdir()  # appending to it fails with an OSError, as a full disk's write does

    with pytest.raises(OutputError, match=r"cannot write .*metrics.jsonl.*--resume"):
        run(recipe, callbacks=[fill_the_disk])
    saved = read_payload(out / FILENAME)["state"]
    assert (saved["stage"], saved["step"]) == ("distill", 2)
    metrics.rmdir()
    (out / "kept.jsonl").rename(metrics)
    resumed = run(recipe, resume=True)
    expected, actual = state(reference), state(resumed)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    a, b = curve(tmp_path / "ref"), curve(out)
    assert [x[:2] for x in a] == [x[:2] for x in b]
    torch.testing.assert_close([x[2] for x in b], [x[2] for x in a], rtol=1e-5, atol=1e-6)


def test_the_checkpoint_file_is_safetensors_and_gives_back_what_went_in(tmp_path):
    """Tensors (tied ones stored once, a slice of another, an empty one, a 0-d step), tuples, non-string keys,
    non-finite floats and the RNG states come back equal and of the same types; the file opens with
    safetensors alone."""
    from safetensors import safe_open

    from hydrahead.distill.checkpoint import rng_state

    weight = torch.randn(4, 3)
    payload = {"model": {"embed.weight": weight, "lm_head.weight": weight, "part": weight[1:], "empty": torch.zeros(0),
                         "transposed": weight.t()},
               "optimizer": {"state": {"embed.weight": {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, 3)}},
                             "param_groups": [{"betas": (0.9, 0.95), "lr": 1e-3, "eps": float("inf"), "x": None}]},
               "rng": [rng_state()], "counts": {1: "a", 2: (1, 2)}, "$odd": {"$tensor": "not a tensor"}}
    path = tmp_path / FILENAME
    write_payload(path, payload)
    back = read_payload(path)

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        if isinstance(a, dict):
            return type(b) is dict and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
        return a == b

    assert same(payload, back)
    with safe_open(str(path), framework="pt") as f:
        assert len(list(f.keys())) == 7 + ("cuda" in payload["rng"][0])  # the tied weight once
    with pytest.raises(ValueError, match="two tensors of a checkpoint would be stored as '/a/b'"):
        write_payload(path, {"a/b": weight, "a": {"b": weight + 1}})


def test_an_older_pickled_checkpoint_is_refused_with_a_message_and_never_read(workspace, tmp_path):
    recipe = tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage(tokens=2 * 4 * 32)})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not even a pickle")
    for resume in (True, False):
        with pytest.raises(ResumeError, match="holds checkpoint.pt, a checkpoint of an older hydrahead: a pickle, "
                                              "which this version does not read"):
            run(recipe, resume=resume)


def test_a_failed_checkpoint_write_names_the_file_and_a_failed_allocation_stays_out_of_memory(tmp_path, monkeypatch):
    """The writer's OSError (a full disk) is OutputError naming the file; memory that cannot be allocated while the
    tensors are packed is not called a full disk: it reaches the CLI, which says out of memory."""
    from torch import nn

    from hydrahead.cli import out_of_memory
    from hydrahead.distill import checkpoint as ckpt
    from hydrahead.distill.distributed import DistEnv
    from hydrahead.errors import OutputError

    env = DistEnv(0, 1, 0, torch.device("cpu"), False)

    def save():
        ckpt.save(tmp_path / FILENAME, env, student=nn.Linear(4, 4), state=ckpt.TrainState("align", 0), identity={},
                  fingerprint="")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    with pytest.raises(OutputError, match=rf"cannot write .*{FILENAME}: No space left on device"):
        save()

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(ckpt, "pack", no_memory)
    with pytest.raises(RuntimeError) as caught:
        save()
    assert out_of_memory(caught.value) == "4.0 GiB asked of the CPU's memory"
    assert not (tmp_path / FILENAME).exists()
