"""The training checkpoint: one safetensors file, written atomically, holding everything a resumed run needs.

Contents: model (full state dict, whatever the sharding), optimizer and scheduler (mid-stage, and at the
end of a stage a finished run may extend: `Stage.extendable`), the
RNG states of every process, the data position, the stage, its step and tokens, and the recipe's
identity (the keys that decide what is computed, with the plan's contents) and its fingerprint, digests
of the run's inputs (teacher weights, tokenizer and data files: their contents, not only their paths) and
a checksum of every tensor in it. `--resume` refuses, saying what differs: another recipe, an input
edited in place since the checkpoint, a damaged or incomplete file, a tensor that is missing.

The file is safetensors, not a pickle: its tensors are safetensors' own, and everything else (the state, the
optimizer's hyper-parameters, RNG states, identity, digests) is one JSON document in its metadata, in which each
tensor is named by its key (`pack`). Reading it runs no code from the file, whoever made it. An older
hydrahead's `checkpoint.pt` (a pickle) is refused with a message, never read.

The state dicts go through `torch.distributed.checkpoint.state_dict`, so one code path serves a plain
module, DDP and FSDP2: every process takes part in gathering, the main process writes. The file is
written to a temporary name and renamed (hydrahead.utils.io.atomic_write): a run killed while saving
leaves the previous checkpoint intact. A write that fails (a full disk, a file-size limit) raises
OutputError on the main process and DistillError on the others (`distributed.on_main`): no process hangs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
from collections.abc import Callable, Iterator
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
from hydrahead.errors import HydraHeadError, OutputError, ResumeError, one_line
from hydrahead.distill.recipe import diff_identities, fingerprint_of, without_runtime_keys
from hydrahead.utils.io import atomic_write

FILENAME = "checkpoint.safetensors"
LEGACY_FILENAME = "checkpoint.pt"  # format 2 and older: a pickle, which is not read
FINAL = "final"  # the finished model's directory in output_dir (distillation's and pretraining's)
FORMAT = 3
_METADATA_KEY = "hydrahead"
_KEYS = ("format", "state", "model", "optimizer", "scheduler", "rng", "identity", "fingerprint", "inputs", "digests")
_SAMPLED_ABOVE = 256 * 2**20  # bytes; larger input files are digested from 256 evenly spread 1 MiB blocks
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


# ----------------------------------------------------------------------------------------------- digests
def file_digest(path: Path) -> str:
    """Size + BLAKE2b of a file: all of it up to 256 MiB, else 256 evenly spread 1 MiB blocks and the tail
    (a multi-GB teacher is read in well under a second; an edit that keeps the size and misses every
    block goes unseen, a retrained or re-exported file does not)."""
    size = path.stat().st_size
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as f:
        if size <= _SAMPLED_ABOVE:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
        else:
            for i in range(256):
                f.seek(i * (size - 2**20) // 255)
                h.update(f.read(2**20))
    return f"{size}:{h.hexdigest()}"


def input_digests(files: list[Path], model_dir: str | Path | None = None, label: str = "teacher",
                  weights: bool = True) -> dict[str, str]:
    """{what: digest} for every data file and the config, tokenizer and (`weights`) weight files of
    `model_dir` (the teacher; for `pretrain`, the tokenizer directory)."""
    out: dict[str, str] = {}
    if model_dir is not None:
        from hydrahead.models.files import weight_files

        model_dir = Path(model_dir)
        names = ["config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                 "merges.txt", "special_tokens_map.json"]
        found = [model_dir / n for n in names if (model_dir / n).is_file()]
        for file in found + (weight_files(model_dir) if weights else []):
            out[f"{label} {file}"] = file_digest(file)
    for file in sorted(set(files)):
        out[f"data file {file}"] = file_digest(file)
    return out


def _tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}/{i}")


def tensor_digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def tensor_digests(model: dict[str, Any], optimizer: dict[str, Any] | None) -> dict[str, str]:
    """A checksum per tensor of the model and optimizer state (what a damaged file would change), hashed
    on every core (BLAKE2b releases the GIL)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    items = [*_tensors(model, "model"), *_tensors(optimizer, "optimizer")]
    with ThreadPoolExecutor(max_workers=max(1, min(16, os.cpu_count() or 1))) as pool:
        digests = list(pool.map(lambda item: tensor_digest(item[1]), items))
    return {path: digest for (path, _), digest in zip(items, digests)}


# ----------------------------------------------------------------------------------------------- the file
def pack(obj: Any, tensors: dict[str, torch.Tensor], key: str = "", views: dict | None = None) -> Any:
    """`obj` as JSON, its tensors moved into `tensors` under their path and named there as {"$tensor": path}.
    Tuples and dicts whose keys are not plain strings are kept apart ({"$tuple": [...]}, {"$items": [[k, v]]}),
    so that `unpack` gives back what went in. Views of one storage are stored once (tied weights)."""
    views = {} if views is None else views
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu()
        view = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and view in views:
            return {"$tensor": views[view]}
        if key in tensors:
            raise ValueError(f"two tensors of a checkpoint would be stored as {key!r} (a key with '/' in it?)")
        shares = tensor.numel() and any(v[0] == view[0] for v in views)  # safetensors refuses shared memory
        tensors[key] = tensor.clone(memory_format=torch.contiguous_format) if shares else tensor.contiguous()
        if tensor.numel():
            views[view] = key
        return {"$tensor": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: pack(v, tensors, f"{key}/{k}", views) for k, v in obj.items()}
        return {"$items": [[pack(k, tensors, f"{key}/{i}k", views), pack(v, tensors, f"{key}/{i}", views)]
                           for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        items = [pack(v, tensors, f"{key}/{i}", views) for i, v in enumerate(obj)]
        return {"$tuple": items} if isinstance(obj, tuple) else items
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"a checkpoint cannot hold {type(obj).__name__} (at {key or 'the top'})")


def unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `pack`. KeyError for a tensor the file does not hold."""
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {"$tensor"}:
            return tensors[obj["$tensor"]]
        if set(obj) == {"$tuple"}:
            return tuple(unpack(v, tensors) for v in obj["$tuple"])
        if set(obj) == {"$items"}:
            return {unpack(k, tensors): unpack(v, tensors) for k, v in obj["$items"]}
        return {k: unpack(v, tensors) for k, v in obj.items()}
    return obj


def write_payload(path: Path, payload: dict[str, Any]) -> None:
    """`payload` (tensors in nested dicts, lists and tuples of JSON values) as one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = pack(payload, tensors)
    metadata = {_METADATA_KEY: json.dumps(tree, allow_nan=True, separators=(",", ":"))}

    def write(tmp: Path) -> None:
        from safetensors import SafetensorError

        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as err:  # its writer's I/O errors, e.g. a full disk: "IoError(Os { code: 28 ..."
            raise OSError(one_line(err)) from err

    atomic_write(path, write)


def read_payload(path: Path) -> dict[str, Any]:
    """What `write_payload` wrote. Reads tensors and JSON only (no pickle); ValueError for a file that is not
    one of ours (another safetensors file, a truncated one, anything else)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            text = (f.metadata() or {}).get(_METADATA_KEY)
            if text is None:
                raise ValueError("a safetensors file without hydrahead's metadata")
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except ValueError:
        raise
    except Exception as err:  # safetensors' own error type for a truncated or foreign file
        raise ValueError(one_line(err)) from err
    try:
        return unpack(json.loads(text), tensors)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"its contents do not fit together ({type(err).__name__}: {err})") from err


# ----------------------------------------------------------------------------------------------- save / load
@contextlib.contextmanager
def writing(path: Path):
    """Inside: a write of `path`. atomic_write types the OSErrors it knows (OutputError); a full disk or a
    file-size limit inside safetensors' writer comes as an OSError without an errno (`write_payload`), and an
    OSError may carry another errno: those become OutputError too, naming the file. Anything else passes
    through as it is: memory that could not be allocated while packing the tensors is not a full disk (the CLI
    says "out of memory"), and a RuntimeError from torch is not a file error."""
    try:
        yield
    except HydraHeadError:
        raise
    except OSError as err:
        raise cannot_write(path, err) from err


def cannot_write(path: Path, err: BaseException) -> OutputError:
    """The OutputError of a run's write that failed (a checkpoint, a metrics record), saying how to go on."""
    return OutputError(f"cannot write {path}: {one_line(err)} (a full disk or a file-size limit?); free space, "
                       "then continue with --resume from the last checkpoint")


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
    inputs: dict[str, str] | None = None,
) -> None:
    """Gather on every process, write on the main one, atomically. Collective: call on all processes."""
    model = get_model_state_dict(student, options=_GATHER)
    optim = get_optimizer_state_dict(student, optimizer, options=_GATHER) if optimizer is not None else None
    rngs = distributed.all_gather_object(rng_state(), env)

    def write() -> None:
        payload = {
            "format": FORMAT,
            "state": state.state_dict(),
            "model": model,
            "optimizer": optim,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rngs,
            "identity": identity,
            "fingerprint": fingerprint,
            "inputs": inputs or {},
            "digests": tensor_digests(model, optim),
        }
        with writing(path):
            write_payload(path, payload)

    distributed.on_main(env, write)


Accept = Callable[[dict[str, Any], int], bool]  # (the checkpoint's identity, its step) -> resume anyway?


def load(path: Path, identity: dict[str, Any], fingerprint: str, accept: Accept | None = None,
         inputs: dict[str, str] | None = None) -> Checkpoint:
    """Read a checkpoint and check it: the same recipe (ResumeError naming the differences), the same
    inputs (`inputs`, from `input_digests`: naming what changed), every tensor present and intact.

    accept: a rule for a checkpoint of a different recipe that may still be continued (e.g. `pretrain`'s
    larger token budget with a constant schedule)."""
    fresh = f"start a fresh run (without --resume) in another output_dir, or delete {path}"
    if not path.is_file():
        raise ResumeError(f"--resume: no checkpoint at {path}; start the run without --resume")
    try:
        payload = read_payload(path)
    except ValueError as err:
        raise ResumeError(f"checkpoint {path} is corrupt or not a hydrahead checkpoint ({err}); {fresh}") from err
    if not isinstance(payload, dict) or "format" not in payload:
        raise ResumeError(f"{path} is not a hydrahead distillation checkpoint; {fresh}")
    if payload["format"] != FORMAT:
        raise ResumeError(f"{path} was written by another hydrahead version (checkpoint format {payload['format']}, "
                          f"this one reads {FORMAT}); {fresh}")
    missing = [k for k in _KEYS if k not in payload]
    if missing:
        raise ResumeError(f"checkpoint {path} is incomplete: it has no {', '.join(missing)}; {fresh}")
    if not (isinstance(payload["state"], dict) and isinstance(payload["identity"], dict)
            and isinstance(payload["rng"], list)):
        raise ResumeError(f"checkpoint {path} is damaged: its state, identity or RNG record is malformed; {fresh}")
    try:
        state = TrainState.from_state_dict(payload["state"])
    except (KeyError, TypeError, ValueError) as err:
        raise ResumeError(f"checkpoint {path} is damaged: its training state is incomplete ({one_line(err)}); "
                          f"{fresh}") from err
    # a run written before a key joined RUNTIME_KEYS stored it in its identity: compared without it
    stored = without_runtime_keys(payload["identity"])
    same = payload["fingerprint"] == fingerprint or fingerprint_of(stored) == fingerprint
    if not same and not (accept is not None and accept(stored, state.step)):
        changes = diff_identities(stored, identity) or ["(identity unchanged, fingerprint differs)"]
        raise ResumeError(
            f"checkpoint {path} was written by a different recipe; --resume needs the same teacher, plan, "
            f"hybrid options, data, seed and stages. Differences (checkpoint -> now): {'; '.join(changes)}"
        )
    if inputs is not None:
        old = payload["inputs"]
        changed = [k for k in sorted(set(old) | set(inputs)) if old.get(k) != inputs.get(k)]
        if changed:
            raise ResumeError(
                f"--resume: {'; '.join(changed)} changed since checkpoint {path} was written, so the run would "
                f"continue on different inputs; restore {'it' if len(changed) == 1 else 'them'}, or {fresh}"
            )
    expected = payload["digests"]
    found = dict(tensor_digests(payload["model"], payload["optimizer"]))
    absent = sorted(set(expected) - set(found))
    if absent:
        raise ResumeError(f"checkpoint {path} is missing tensor(s) {', '.join(absent[:5])}"
                          f"{' ...' if len(absent) > 5 else ''}; {fresh}")
    damaged = sorted(k for k in found if expected.get(k) != found[k])
    if damaged:
        raise ResumeError(f"checkpoint {path} is damaged: tensor(s) {', '.join(damaged[:5])}"
                          f"{' ...' if len(damaged) > 5 else ''} do not match their checksums; {fresh}")
    return Checkpoint(
        state=state,
        model=payload["model"],
        optimizer=payload["optimizer"],
        scheduler=payload["scheduler"],
        rng=payload["rng"],
        identity=payload["identity"],
        fingerprint=payload["fingerprint"],
    )


def open_run(output_dir: Path, resume: bool, identity: dict[str, Any], fingerprint: str,
             accept: Accept | None = None, inputs: dict[str, str] | None = None, is_main: bool = True,
             barrier: Callable[[], None] = lambda: None) -> Checkpoint | None:
    """The checkpoint to resume (`resume`), or None for a fresh run.

    A fresh run refuses an output_dir that an earlier run used (a checkpoint, metrics or a final model),
    so that nothing is overwritten or appended to by accident. `--resume` over a run that stopped before
    its first checkpoint (metrics, no checkpoint, no final model) starts it again from the beginning (its
    metrics are dropped). Temporary files a killed run left in output_dir are removed first. Every
    process decides from what it saw before the main one deletes anything (`barrier`)."""
    path = output_dir / FILENAME
    if (output_dir / LEGACY_FILENAME).exists():
        raise ResumeError(f"{output_dir} holds {LEGACY_FILENAME}, a checkpoint of an older hydrahead: a pickle, "
                          "which this version does not read (it unpickles no file); finish that run with the "
                          "version that wrote it, or start a fresh run in another output_dir")
    has_checkpoint, has_metrics = path.exists(), (output_dir / "metrics.jsonl").exists()
    has_final = (output_dir / FINAL).exists()
    barrier()  # all processes have looked before anything is removed
    if is_main and output_dir.is_dir():
        for tmp in [*output_dir.glob(".*.tmp"), *output_dir.glob(f".{FINAL}.*.old")]:
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
            elif tmp.is_dir() and tmp.name.startswith(f".{FINAL}."):  # a kill during `save_final`'s swap
                shutil.rmtree(tmp, ignore_errors=True)  # (models/loading.py save_hybrid)
    if resume:
        if not has_checkpoint and has_final:
            raise ResumeError(f"--resume: {output_dir} holds a final model but no checkpoint, so nothing can be "
                              "continued; start a fresh run in another output_dir")
        if not has_checkpoint and has_metrics:
            if is_main:  # its records go, TensorBoard's too (they showed beside the new run's, steps repeated)
                (output_dir / "metrics.jsonl").unlink(missing_ok=True)
                shutil.rmtree(output_dir / "tensorboard", ignore_errors=True)
            barrier()
            return None  # stopped before its first checkpoint: nothing to continue, so start over
        return load(path, identity, fingerprint, accept, inputs)
    if has_checkpoint:
        raise ResumeError(f"{output_dir} already holds a checkpoint; continue it with --resume, "
                          "or choose another output_dir")
    used = [name for name, there in (("metrics.jsonl", has_metrics), (FINAL, has_final)) if there]
    if used:
        raise ResumeError(f"{output_dir} holds an earlier run ({' and '.join(used)}, no checkpoint); rerun with "
                          "--resume to start it over there, or choose another output_dir")
    return None


def restore_model(student: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """The checkpoint's weights into `student`; ResumeError unless it holds exactly the student's tensors
    (none silently left at its converted value)."""
    expected, found = set(student.state_dict()), set(checkpoint.model)
    if expected != found:
        lacking, extra = sorted(expected - found), sorted(found - expected)
        raise ResumeError("the checkpoint does not fit the model: it "
                          + "; ".join(filter(None, [f"lacks {', '.join(lacking[:5])}" if lacking else "",
                                                     f"has unknown {', '.join(extra[:5])}" if extra else ""]))
                          + "; start a fresh run (without --resume) in another output_dir")
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
