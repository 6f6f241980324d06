"""What a run reports: metrics as JSON lines (and TensorBoard, optionally), and a progress bar.

Only the main process writes. Each line of <output_dir>/metrics.jsonl is one record with "stage" and
"step" (optimiser steps done in that stage), numbers or lists of numbers (a per-layer metric such as the
align stage's `layer_loss`; TensorBoard gets one scalar per element, `<stage>/<key>/<index>`); a resumed run
first drops the lines written after its checkpoint, so the file always describes one uninterrupted run.
TensorBoard's events go to one directory per stage, <output_dir>/tensorboard/<stage> (a stage's steps count from
1, and TensorBoard hides a killed run's later events by step for a whole directory): a resumed run removes the
later stages' directories and opens its own stage's with `purge_step`, so TensorBoard shows one run too.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from hydrahead.distill.checkpoint import cannot_write
from hydrahead.errors import HydraHeadWarning, OutputError, RecipeError
from hydrahead.utils.io import atomic_write_text

FILENAME = "metrics.jsonl"


def summary_writer():
    """torch's SummaryWriter, or the RecipeError of a recipe that asks for TensorBoard without its package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise RecipeError(
            "training.tensorboard is true but the tensorboard package is not installed "
            "(pip install 'hydrahead[tensorboard]'), or set it to false"
        ) from err
    return SummaryWriter


class MetricsLog:
    def __init__(self, output_dir: Path, enabled: bool, tensorboard: bool = False) -> None:
        self.path = output_dir / FILENAME
        self.enabled = enabled
        self.tensorboard_dir = output_dir / "tensorboard"
        self._open = None  # SummaryWriter, when TensorBoard is on (this process writes)
        self._writers: dict[str, Any] = {}  # stage -> its writer, opened at the stage's first record
        self._purge: dict[str, int] = {}  # stage -> the first step a resumed run writes again (`truncate_after`)
        self.error: OutputError | None = None
        if tensorboard:  # checked on every process, so that none goes on to wait for one that stopped
            writer = summary_writer()
            if enabled:
                self._open = writer

    def truncate_after(self, stage_order: list[str], stage: str, step: int) -> None:
        """Keep only the records up to (stage, step): what the checkpoint being resumed had seen; in TensorBoard
        too (the later stages' directories removed, this stage's events after `step` purged when it writes)."""
        if not self.enabled:
            return
        for later in stage_order[stage_order.index(stage) + 1:]:  # TensorBoard on now or not, the killed run's
            shutil.rmtree(self.tensorboard_dir / later, ignore_errors=True)
        if self._open is not None:
            self._purge[stage] = step + 1
        if not self.path.is_file():
            return
        limit = (stage_order.index(stage), step)
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
                position = (stage_order.index(record["stage"]), int(record["step"]))
            except (json.JSONDecodeError, KeyError, ValueError):
                continue  # a line cut short by the kill
            if position <= limit:
                kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def log(self, record: dict[str, Any]) -> None:
        """Append one record. A write that fails (a full disk) does not raise here, on the main process alone,
        where the other processes would wait for it in their next collective: it is kept in `error`, no later
        record is written, and `check()` raises it where every process stops together (the trainer asks at
        every step and before every checkpoint)."""
        if not self.enabled or self.error is not None:
            return
        record = {k: _plain(v) for k, v in record.items()}
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            self.error = cannot_write(self.path, err)
            return
        if self._open is not None:
            try:  # opening its event file, or its writer thread's error, which comes back here a call later
                self._tensorboard(record)
            except Exception as err:  # noqa: BLE001 - TensorFlow's own file errors are not OSErrors
                self.error = cannot_write(self.tensorboard_dir, err)

    def _tensorboard(self, record: dict[str, Any]) -> None:
        stage, step = record["stage"], record["step"]
        writer = self._writers.get(stage)
        if writer is None:
            writer = self._writers[stage] = self._open(str(self.tensorboard_dir / stage),
                                                       purge_step=self._purge.get(stage))
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "step":
                writer.add_scalar(f"{stage}/{key}", value, step)
            elif isinstance(value, list):
                for i, element in enumerate(value):
                    if isinstance(element, (int, float)):
                        writer.add_scalar(f"{stage}/{key}/{i:02d}", element, step)

    def check(self) -> None:
        """Raise the OutputError of a record that could not be written, if any (`log`)."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Flush TensorBoard's events. Never raises (it runs on the main process alone, where the others may be
        waiting, and after an error it must not replace): a failure is a warning, metrics.jsonl is complete."""
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            try:
                writer.close()
            except Exception as err:  # noqa: BLE001
                warnings.warn(f"{cannot_write(self.tensorboard_dir, err)} (metrics.jsonl is complete)",
                              HydraHeadWarning, stacklevel=2)


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / inf
    return value


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl, in order."""
    path = Path(output_dir) / FILENAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


class Progress:
    """A tqdm bar over a stage's token budget: tokens/s and ETA from tqdm, loss in the postfix."""

    def __init__(self, stage: str, total_tokens: int, done_tokens: int, enabled: bool) -> None:
        self._bar = None
        self.start = time.perf_counter()
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_tokens, initial=done_tokens, desc=stage, unit="tok", unit_scale=True,
                             dynamic_ncols=True)

    def update(self, tokens: int, loss: float, lr: float, fields: dict[str, str] | None = None) -> None:
        """`fields`: a stage's extra postfix entries (`Stage.progress_fields`), shown between loss and lr."""
        if self._bar is not None:
            postfix = {"loss": f"{loss:.4f}", **(fields or {}), "lr": f"{lr:.2e}"}
            self._bar.set_postfix(postfix, refresh=False)  # a dict keeps this order (keywords get sorted)
            self._bar.update(tokens)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
