"""Data-parallel training under ``torchrun``: process group, sharding and reductions.

One process per device; every rank runs the same loop on its slice of each global batch and of the
evaluation set, gradients are averaged by DistributedDataParallel, counts are summed across ranks,
and only rank 0 writes files or prints. Without torchrun (WORLD_SIZE unset or 1) everything here is
a no-op, so single-process runs take exactly the same code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from atlens.data import ImageTensors
from atlens.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """One CUDA device per process (LOCAL_RANK); CPU ranks share the CPU."""
        if self.enabled and requested.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return requested

    def shard(self, data: ImageTensors) -> ImageTensors:
        """Rank r evaluates examples r, r + world, …; counts summed over ranks cover the set exactly once."""
        return data if not self.enabled else data.subset(torch.arange(self.rank, len(data), self.world))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce in place (nccl only reduces CUDA tensors, so CPU counters travel through the GPU)."""
        if not self.enabled:
            return tensor
        if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
            on_device = tensor.cuda()
            dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
            return tensor.copy_(on_device.cpu())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def differentiable_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks, differentiable: its backward sums the upstream gradients over ranks too, so a
        loss computed from global-batch statistics gives, once DDP averages the gradients, exactly the
        gradient one process computes on the whole batch."""
        if not self.enabled:
            return tensor
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(tensor, op=dist.ReduceOp.SUM)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training loss runs through: DDP around the model, or the model itself."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if next(model.parameters()).device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def from_environment(device: torch.device) -> Distributed:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank)


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a process started without torchrun."""
    return int(os.environ.get("RANK", "0")) == 0


def shutdown(finished: bool = False) -> None:
    """Leave the process group, if this process joined one. After a run that ``finished`` on every rank, first
    a barrier, so that no rank tears gloo down while another still has collective work in flight (a SIGABRT at
    exit, seen under heavy load); never after a failure, where the other ranks may not come to it."""
    if dist.is_available() and dist.is_initialized():
        try:
            if finished:
                dist.barrier()
        finally:
            dist.destroy_process_group()
