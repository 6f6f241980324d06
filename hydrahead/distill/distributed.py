"""Single-process and distributed runs through one code path, on PyTorch's own engine.

`init()` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); without it the
run is one process and every collective below is a no-op. Gradients are synchronised by DDP, or by
FSDP2 (`torch.distributed.fsdp.fully_shard`: parameters, gradients and optimiser state sharded over processes)
for training that does not fit one GPU. Each process still builds the whole student (fp32) and the teacher (its
training dtype) on its device before sharding them, so those two must fit one GPU (6 bytes per parameter with a
bf16 teacher, against about 18 unsharded with AdamW). Backends: NCCL on CUDA, gloo on CPU (what the tests use).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from hydrahead.errors import DistillError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # True when init() created the process group (and shutdown() should destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device: str = "auto") -> DistEnv:
    """Join the torchrun process group when there is one; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise DistillError("training.device is 'cuda' but no CUDA device is available")
    torch_device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(torch_device)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistEnv(rank, world_size, local_rank, torch_device, owns)


def shutdown(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum of a tensor over processes (a copy; the input is unchanged)."""
    value = value.detach().clone()
    if env.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_reduce_mean(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean of a tensor over processes (a copy; the input is unchanged)."""
    value = all_reduce_sum(value, env)
    if env.distributed:
        value /= env.world_size
    return value


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every process when `flag` is true on any (so that all stop at the same step)."""
    if not env.distributed:
        return flag
    value = torch.tensor([float(flag)], device=env.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def on_main(env: DistEnv, work) -> None:
    """`work()` on the main process, then every process learns whether it failed: the main one re-raises
    its error, the others raise DistillError, so that no process waits in a collective for one that is gone.
    Any failure counts, not only ours (an error from the file writer, a KeyboardInterrupt): every process
    stops together. Typing a write failure (OutputError) is the caller's part (`checkpoint.writing`)."""
    error: BaseException | None = None
    if env.is_main:
        try:
            work()
        except BaseException as err:  # noqa: BLE001 - re-raised below, after the other processes know
            error = err
    if any_rank(error is not None, env):
        if error is not None:
            raise error
        raise DistillError("the main process could not save (its error says why); stopping this process too")


def all_gather_object(obj: Any, env: DistEnv) -> list[Any]:
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def resolve_strategy(requested: str, env: DistEnv) -> str:
    """"none" for one process; "ddp" or "fsdp" otherwise ("auto" means DDP)."""
    if not env.distributed:
        return "none"
    return "ddp" if requested == "auto" else requested


def shard_teacher(teacher: nn.Module, env: DistEnv, strategy: str) -> None:
    """Under FSDP, shard the teacher's decoder layers (embeddings, final norm and lm_head stay whole,
    so the chunked KL can call the teacher's lm_head outside its forward)."""
    if strategy != "fsdp":
        return
    from torch.distributed.fsdp import fully_shard

    for layer in teacher.model.layers:
        fully_shard(layer)


def wrap(module: nn.Module, layers: nn.ModuleList, env: DistEnv, strategy: str) -> nn.Module:
    """The module the training step calls: as is (one process), DDP, or FSDP2 per decoder layer + root."""
    if strategy == "none":
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [env.device.index] if env.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in layers:
            fully_shard(layer)
        fully_shard(module)
        return module
    raise DistillError(f"unknown distributed strategy {strategy!r}")


@contextlib.contextmanager
def no_sync(module: nn.Module, skip_sync: bool):
    """Inside: backward accumulates gradients locally without synchronising (all but the last micro-step)."""
    if not skip_sync:
        yield
    elif isinstance(module, nn.parallel.DistributedDataParallel):
        with module.no_sync():
            yield
    elif hasattr(module, "set_requires_gradient_sync"):  # an FSDP2 module
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    else:
        yield
