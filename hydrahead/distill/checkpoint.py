"""The training checkpoint: one file, written atomically, holding everything a resumed run needs.

Contents: model (full state dict, whatever the sharding), optimizer and scheduler (mid-stage only), the
RNG states of every process, the data position, the stage, its step and tokens, and the recipe's
identity (the keys that decide what is computed, with the plan's contents) and its fingerprint. A
resumed run with a different identity is refused with the list of keys that differ.

The state dicts go through `torch.distributed.checkpoint.state_dict`, so one code path serves a plain
module, DDP and FSDP2: every process takes part in gathering, the main process writes. The file is
written to a temporary name and renamed (hydrahead.utils.io.atomic_write): a run killed while saving
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from hydrahead.distill import distributed
from hydrahead.distill.data import DataPosition
from hydrahead.distill.distributed import DistEnv
from hydrahead.errors import ResumeError
from hydrahead.distill.recipe import diff_identities
from hydrahead.utils.io import atomic_write

FILENAME = "checkpoint.pt"
FORMAT = 1
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
_SCATTER = StateDictOptions(full_state_dict=True)


@dataclass
class TrainState:
    """Where a run is: stage (name and position in the recipe's order), optimiser steps and tokens done in
    it, whether it has finished, and how far its data stream has been read."""

    stage: str
    stage_index: int
    step: int = 0
    tokens: int = 0
    done: bool = False
    data: DataPosition = field(default_factory=DataPosition)

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "stage_index": self.stage_index, "step": self.step, "tokens": self.tokens,
                "done": self.done, "data": self.data.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TrainState:
        return cls(state["stage"], int(state["stage_index"]), int(state["step"]), int(state["tokens"]),
                   bool(state["done"]), DataPosition.from_state_dict(state["data"]))


@dataclass
class Checkpoint:
    state: TrainState
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    scheduler: dict[str, Any] | None
    rng: list[dict[str, Any]]
    identity: dict[str, Any]
    fingerprint: str


# ----------------------------------------------------------------------------------------------- rng
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------------------------- save / load
def save(
    path: Path,
    env: DistEnv,
    *,
    student: torch.nn.Module,
    state: TrainState,
    identity: dict[str, Any],
    fingerprint: str,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> None:
    """Gather on every process, write on the main one, atomically. Collective: call on all processes."""
    model = get_model_state_dict(student, options=_GATHER)
    optim = get_optimizer_state_dict(student, optimizer, options=_GATHER) if optimizer is not None else None
    rngs = distributed.all_gather_object(rng_state(), env)
    if env.is_main:
        payload = {
            "format": FORMAT,
            "state": state.state_dict(),
            "model": model,
            "optimizer": optim,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rngs,
            "identity": identity,
            "fingerprint": fingerprint,
        }
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
    distributed.barrier(env)


Accept = Callable[[dict[str, Any], int], bool]  # (the checkpoint's identity, its step) -> resume anyway?


def load(path: Path, identity: dict[str, Any], fingerprint: str, accept: Accept | None = None) -> Checkpoint:
    """Read a checkpoint and check that it belongs to this recipe (ResumeError naming the differences).

    accept: a rule for a checkpoint of a different recipe that may still be continued (e.g. `pretrain`'s
    larger token budget with a constant schedule)."""
    if not path.is_file():
        raise ResumeError(f"--resume: no checkpoint at {path}; start the run without --resume")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise ResumeError(f"checkpoint {path} is corrupt or not a hydrahead checkpoint: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ResumeError(f"{path} is not a hydrahead distillation checkpoint (format {FORMAT})")
    step = int(payload["state"]["step"]) if isinstance(payload.get("state"), dict) else 0
    if payload["fingerprint"] != fingerprint and not (accept is not None and accept(payload["identity"], step)):
        changes = diff_identities(payload["identity"], identity) or ["(identity unchanged, fingerprint differs)"]
        raise ResumeError(
            f"checkpoint {path} was written by a different recipe; --resume needs the same teacher, plan, "
            f"hybrid options, data, seed and stages. Differences (checkpoint -> now): {'; '.join(changes)}"
        )
    return Checkpoint(
        state=TrainState.from_state_dict(payload["state"]),
        model=payload["model"],
        optimizer=payload["optimizer"],
        scheduler=payload["scheduler"],
        rng=payload["rng"],
        identity=payload["identity"],
        fingerprint=payload["fingerprint"],
    )


def open_run(output_dir: Path, resume: bool, identity: dict[str, Any], fingerprint: str,
             accept: Accept | None = None) -> Checkpoint | None:
    """The checkpoint to resume (`resume`), or None for a fresh run; ResumeError when a fresh run would
    overwrite an existing checkpoint."""
    path = output_dir / FILENAME
    if resume:
        return load(path, identity, fingerprint, accept)
    if path.exists():
        raise ResumeError(f"{output_dir} already holds a checkpoint; continue it with --resume, "
                          "or choose another output_dir")
    return None


def restore_model(student: torch.nn.Module, checkpoint: Checkpoint) -> None:
    set_model_state_dict(student, checkpoint.model, options=_SCATTER)


def restore_training(student: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                     checkpoint: Checkpoint, env: DistEnv) -> None:
    """Optimizer, scheduler and (when the process count is unchanged) each process's RNG states."""
    if checkpoint.optimizer is not None:
        set_optimizer_state_dict(student, optimizer, checkpoint.optimizer, options=_SCATTER)
    if checkpoint.scheduler is not None:
        scheduler.load_state_dict(checkpoint.scheduler)
    if len(checkpoint.rng) == env.world_size:
        set_rng_state(checkpoint.rng[env.rank])
