"""metrics.jsonl and TensorBoard take per-layer lists as well as numbers."""

import torch

from hydrahead import HydraHeadWarning
from hydrahead.distill.metrics import MetricsLog, read_metrics


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: dict[str, float] = {}

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars[tag] = value


def test_a_vector_metric_is_a_list_in_jsonl_and_one_scalar_per_element_in_tensorboard(tmp_path):
    log = MetricsLog(tmp_path, enabled=True)
    log._writer = FakeWriter()  # stands in for torch's SummaryWriter (tensorboard is optional)
    log.log({"stage": "align", "step": 3, "loss": torch.tensor(0.5),
             "layer_loss": torch.tensor([0.25, 0.75, float("nan")])})
    assert read_metrics(tmp_path) == [{"stage": "align", "step": 3, "loss": 0.5, "layer_loss": [0.25, 0.75, "nan"]}]
    assert log._writer.scalars == {"align/loss": 0.5, "align/layer_loss/00": 0.25, "align/layer_loss/01": 0.75}


def test_a_missing_tensorboard_stops_every_process_not_only_the_main_one(tmp_path, monkeypatch):
    """Checked where the log is made, on the main process and the others alike: a process that went on would
    wait in its first collective for the main one."""
    import sys

    import pytest

    from hydrahead.errors import RecipeError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails: not installed
    for main in (True, False):
        with pytest.raises(RecipeError, match="pip install tensorboard"):
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
    log._writer = FullDisk()
    log.log({"stage": "align", "step": 1, "loss": 0.5})
    log.log({"stage": "align", "step": 2, "loss": 0.4})  # not written: the run stops at its next check
    assert read_metrics(tmp_path) == [{"stage": "align", "step": 1, "loss": 0.5}]
    with pytest.raises(OutputError, match=r"cannot write .*tensorboard: .*no space left.*--resume"):
        log.check()
    with pytest.warns(HydraHeadWarning, match="No space left on device.*metrics.jsonl is complete"):
        log.close()
