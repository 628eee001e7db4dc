"""Process-group helpers for ``torchrun`` (DDP) and the single-process case.

Under ``torchrun`` the environment holds RANK / WORLD_SIZE / LOCAL_RANK; without it every
helper here degrades to the single-process identity, so the same trainer code runs both ways.
Backend: NCCL when training on CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from hifi_tse.devices import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(requested_device: str | None) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        join_process_group("nccl" if device.type == "cuda" else "gloo", rank, world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def join_process_group(backend: str, rank: int, world_size: int) -> None:
    """``init_process_group`` for a process started by torchrun (its env holds the rest)."""
    dist.init_process_group(
        backend=backend, store=_restart_scoped_store(world_size), rank=rank, world_size=world_size
    )


def _restart_scoped_store(world_size: int) -> dist.Store:
    """The process group's store, with its keys scoped to this start of the worker group.

    torchrun's agents share their rendezvous store with the workers and keep it across
    ``--max-restarts`` restarts, and torch adds no per-restart prefix on that path: a
    restarted group could then read a dead worker's address and fail to connect (measured
    here: 1 restart in 3 failed so; torch issue 135712). ``TORCHELASTIC_RESTART_COUNT`` is
    the same on every rank of one start and differs between starts.
    """
    base = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
        and os.environ.get("RANK", "0") == "0",
        timeout=dist.constants.default_pg_timeout,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"hifi-tse/start_{attempt}", base)


def shutdown_distributed() -> None:
    """Leave the process group once every rank has reached this point.

    Without the barrier, a rank that finished first could tear its gloo connections down
    while another still had work after its last collective, and that rank then died with
    SIGABRT at exit ("terminate called without an active exception"): 1 run of
    tests/test_multinode.py in 11 here. With it, 60 runs of that test in a row passed (20
    alone, 40 beside two training jobs), but one full-suite CI run failed so once: the
    barrier narrows the race, and the cause is not known to be gone.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (identity when single-process); returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on at least one rank (so all ranks take the same branch)."""
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(value).item() > 0)


def rank0_value(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (clocks differ a little between processes)."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(tensor, src=0)
    return float(tensor.item())


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (a one-element list when single-process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """Wrap in DDP when the job has several ranks (gradients all-reduced in backward)."""
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


@contextlib.contextmanager
def maybe_no_sync(model: nn.Module, skip_sync: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce for accumulation micro-batches before the last."""
    if skip_sync and isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield
