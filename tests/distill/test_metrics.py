"""metrics.jsonl and TensorBoard take per-layer lists as well as numbers."""

import torch

from hydrahead import HydraHeadWarning
from hydrahead.distill.metrics import MetricsLog, read_metrics


class FakeWriter:
    """Stands in for torch's SummaryWriter (tensorboard is optional): what each stage's writer was given."""

    opened: dict[str, "FakeWriter"] = {}

    def __init__(self, log_dir: str, purge_step: int | None = None) -> None:
        self.log_dir, self.purge_step = log_dir, purge_step
        self.scalars: dict[str, float] = {}
        FakeWriter.opened[log_dir] = self

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars[tag] = value

    def close(self) -> None:
        pass


def test_a_vector_metric_is_a_list_in_jsonl_and_one_scalar_per_element_in_tensorboard(tmp_path):
    log = MetricsLog(tmp_path, enabled=True)
    log._open = FakeWriter
    log.log({"stage": "align", "step": 3, "loss": torch.tensor(0.5),
             "layer_loss": torch.tensor([0.25, 0.75, float("nan")])})
    assert read_metrics(tmp_path) == [{"stage": "align", "step": 3, "loss": 0.5, "layer_loss": [0.25, 0.75, "nan"]}]
    writer = FakeWriter.opened[str(tmp_path / "tensorboard" / "align")]
    assert writer.scalars == {"align/loss": 0.5, "align/layer_loss/00": 0.25, "align/layer_loss/01": 0.75}


def test_a_missing_tensorboard_stops_every_process_not_only_the_main_one(tmp_path, monkeypatch):
    """Checked where the log is made, on the main process and the others alike: a process that went on would
    wait in its first collective for the main one."""
    import sys

    import pytest

    from hydrahead.errors import RecipeError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails: not installed
    for main in (True, False):
        with pytest.raises(RecipeError, match=r"pip install .hydrahead\[tensorboard\]."):
            MetricsLog(tmp_path, enabled=main, tensorboard=True)


def test_tensorboard_failures_are_kept_or_warned_never_raised_on_the_main_process_alone(tmp_path):
    """With TensorFlow installed a full disk raises its own error type (not an OSError) from add_scalar; closing
    flushes events and can fail too. The first is kept for the trainer's next check (every process stops
    together); the second, at the end, is a warning: metrics.jsonl is complete."""
    import pytest

    from hydrahead.errors import OutputError

    class FullDisk(FakeWriter):
        def add_scalar(self, tag, value, step):
            raise RuntimeError("tf.errors.ResourceExhaustedError: no space left")

        def close(self):
            raise OSError(28, "No space left on device")

    log = MetricsLog(tmp_path, enabled=True)
    log._open = FullDisk
    log.log({"stage": "align", "step": 1, "loss": 0.5})
    log.log({"stage": "align", "step": 2, "loss": 0.4})  # not written: the run stops at its next check
    assert read_metrics(tmp_path) == [{"stage": "align", "step": 1, "loss": 0.5}]
    with pytest.raises(OutputError, match=r"cannot write .*tensorboard: .*no space left.*--resume"):
        log.check()
    with pytest.warns(HydraHeadWarning, match="No space left on device.*metrics.jsonl is complete"):
        log.close()


def test_a_resumed_run_purges_its_stage_in_tensorboard_and_removes_the_later_stages(tmp_path):
    """TensorBoard shows every event file of a directory: without a purge, a run killed at distill step 50 and
    resumed from step 30 would show steps 31-50 twice, and a later stage's events from the killed run."""
    for stage in ("distill", "long_context"):
        (tmp_path / "tensorboard" / stage).mkdir(parents=True)
    (tmp_path / "tensorboard" / "align").mkdir()
    log = MetricsLog(tmp_path, enabled=True)
    log._open = FakeWriter
    log.truncate_after(["align", "distill", "long_context"], "distill", 30)
    assert sorted(p.name for p in (tmp_path / "tensorboard").iterdir()) == ["align", "distill"]
    log.log({"stage": "distill", "step": 31, "loss": 0.5})
    log.log({"stage": "long_context", "step": 1, "loss": 0.5})
    opened = FakeWriter.opened
    assert opened[str(tmp_path / "tensorboard" / "distill")].purge_step == 31  # events from step 31 on hidden
    assert opened[str(tmp_path / "tensorboard" / "long_context")].purge_step is None
    (tmp_path / "tensorboard" / "long_context").mkdir(exist_ok=True)
    MetricsLog(tmp_path, enabled=True).truncate_after(["align", "distill", "long_context"], "distill", 40)
    assert not (tmp_path / "tensorboard" / "long_context").exists()  # removed by a resume with TensorBoard off too


def test_tensorboard_shows_a_resumed_run_once(tmp_path):
    """With the real writer and TensorBoard's own reader (when tensorboard is installed)."""
    import pytest

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    order = ["align", "distill"]
    killed = MetricsLog(tmp_path, enabled=True, tensorboard=True)
    for step in range(1, 11):
        killed.log({"stage": "align", "step": step, "loss": float(step)})
    for step in range(1, 6):
        killed.log({"stage": "distill", "step": step, "loss": float(step)})
    killed.close()
    resumed = MetricsLog(tmp_path, enabled=True, tensorboard=True)
    resumed.truncate_after(order, "align", 7)
    for step in range(8, 11):
        resumed.log({"stage": "align", "step": step, "loss": -float(step)})
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard" / "align"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("align/loss")] == (
        [(s, float(s)) for s in range(1, 8)] + [(s, -float(s)) for s in range(8, 11)])
    assert not (tmp_path / "tensorboard" / "distill").exists()
