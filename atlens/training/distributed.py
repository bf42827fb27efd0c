"""Data-parallel training under ``torchrun``: process group, sharding and reductions.

One process per device; every rank runs the same loop on its slice of each global batch and of the
evaluation set, gradients are averaged by DistributedDataParallel, counts are summed across ranks,
and only rank 0 writes files or prints. Without torchrun (WORLD_SIZE unset or 1) everything here is
a no-op, so single-process runs take exactly the same code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from atlens.data import ImageTensors
from atlens.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    host_group: Any = None  # a gloo group for host-side flags and objects (None: the default group is gloo)

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

    def share(self, examples: int, global_batch: int | None) -> float:
        """The weight of this rank's mean loss over its ``examples`` such that DDP's mean over ranks of the gradients
        is the gradient of the global batch's mean loss: 1 when the batch splits evenly, examples · world / global
        batch otherwise (a last batch of 65 over two ranks: 33 · 2 / 65 and 32 · 2 / 65)."""
        if not self.enabled or global_batch is None:
            return 1.0
        return examples * self.world / global_batch

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

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's values, in place, on every rank."""
        if not self.enabled:
            return tensor
        if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
            on_device = tensor.cuda()
            dist.broadcast(on_device, 0)
            return tensor.copy_(on_device.cpu())
        dist.broadcast(tensor, 0)
        return tensor

    def largest(self, value: int) -> int:
        """The largest of the ranks' ``value``: one host-side all-reduce over gloo, which never waits for a device
        (what a signal caught on one rank tells every rank)."""
        if not self.enabled:
            return value
        found = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(found, op=dist.ReduceOp.MAX, group=self.host_group)
        return int(found.item())

    def gather_objects(self, item: Any) -> list[Any] | None:
        """Every rank's ``item`` (picklable, with CPU tensors) as a list on rank 0; None on the other ranks."""
        if not self.enabled:
            return [item]
        found: list[Any] | None = [None] * self.world if self.is_main else None
        dist.gather_object(item, found, dst=0, group=self.host_group)
        return found

    def broadcast_module(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers in ``module`` on every rank (the ranks' modules of one architecture)."""
        with torch.no_grad():
            for tensor in module.state_dict().values():
                self.broadcast(tensor)

    def differentiable_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks, differentiable: its backward sums the upstream gradients over ranks too, so a
        loss computed from global-batch statistics gives, once DDP averages the gradients, exactly the
        gradient one process computes on the whole batch."""
        if not self.enabled:
            return tensor
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(tensor, op=dist.ReduceOp.SUM)

    def average_buffers(self, module: nn.Module) -> None:
        """Make ``module``'s floating-point buffers (BatchNorm's running statistics) the mean over ranks, the same
        on every rank. Each rank updates them with its own shard's statistics; the update is linear, so the mean
        over ranks of the running mean equals what one process keeps from the global batches (with shards of
        equal size; the running variance is the mean of the shards' variances, which leaves out how far the
        shards' means lie apart)."""
        if not self.enabled:
            return
        buffers = [b for b in module.buffers() if b.is_floating_point()]
        if not buffers:
            return
        flat = self.sum(torch.cat([b.detach().reshape(-1) for b in buffers])) / self.world
        with torch.no_grad():
            for buffer, mean in zip(buffers, flat.split([b.numel() for b in buffers])):
                buffer.copy_(mean.view_as(buffer))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training loss runs through: DDP around the model, or the model itself."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if next(model.parameters()).device.type == "cuda" else None
        # buffers stay rank-local during the epoch (no broadcast before every forward) and are averaged over
        # the ranks at its end (``average_buffers``), which keeps the global batch's running mean
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the global batch of all data-parallel ranks on any device: what ``nn.SyncBatchNorm`` does on
    CUDA, for devices it does not run on (the CPU under gloo). The statistics travel through a differentiable
    all-reduce (the batch's sums, then its squared deviations from the global mean), so the forward pass, its
    gradient and the running statistics are those of one process holding the whole batch. Outside training, or
    in one process, it is ``nn.BatchNorm``."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(x)
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        first = all_reduce(torch.cat([x.sum(dims), x.new_full((1,), float(x.numel() // x.shape[1]))]))
        count = first[-1]
        mean = first[:-1] / count
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked
                self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
                self.running_var.mul_(1 - factor).add_(factor * var.detach() * count / (count - 1).clamp_min(1))
        return out


def global_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm layer normalising over the global batch: ``nn.SyncBatchNorm`` on CUDA,
    ``GlobalBatchNorm`` elsewhere (weights and running statistics carried over)."""
    if any(p.device.type == "cuda" for p in module.parameters()):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        state = module.state_dict()
        converted.load_state_dict(state)
        device = next(iter(state.values()), torch.empty(0)).device
        return converted.to(device).train(module.training)
    for name, child in module.named_children():
        setattr(module, name, global_batchnorm(child))
    return module


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
    host_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return Distributed(rank, world, local_rank, host_group)


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
