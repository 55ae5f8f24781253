"""One training run on several processes, GPUs or machines: PyTorch's DistributedDataParallel
under `torchrun`, on the in-memory tensors of `training` (train-cnn) and `generative` (train-gan).

A stage calls `launch_if_asked(processes)` first: with `processes` > 1 and no `torchrun` around it,
the stage's own command is run again under `torchrun --standalone --nproc-per-node <processes>`
(one machine); under a `torchrun` started by hand (several machines, `--nnodes`), the stage just
runs. Then `initialized(device)` joins the process group that `torchrun` describes in the
environment (gloo on the CPU, NCCL on CUDA) and gives the `World`: this process's rank and the
number of processes. With one process, nothing of this changes anything.

What stays the same whatever the number of processes, so that the params mean the same run:
- the global batch of `batch_size` images and the learning rate: each of W processes takes
  `batch_size / W` images of each global batch (`World.shard`, as `DistributedSampler` shards
  its indices), and DDP averages the gradients of the processes: the gradient of the global batch;
- batch-norm statistics: those of the global batch (`sync_batch_norm`), not of each shard;
- the random order of the batches, the augmentations and a GAN's latent vectors, labels and noise:
  every process draws them for the global batch from the same seeded generator, and keeps its shard.
  Dropout masks, drawn from the global generator, are made independent across processes (`World.wrap`).
Only rank 0 evaluates, writes outputs and logs to MLflow (`World.is_main`).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def under_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def torchrun_command(processes: int, argv: list[str]) -> list[str]:
    """`torchrun` on one machine: `--standalone` picks a free rendezvous port on loopback, so that
    several runs (a `dvc queue` of experiments) do not meet each other."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *argv]


def launch_if_asked(processes: int, argv: list[str] | None = None) -> None:
    """With `processes` > 1 outside `torchrun`: replace this process by `torchrun` running the same
    script with the same arguments (signals then reach `torchrun`, which passes them on to every
    rank). Otherwise return, and the caller runs as it is."""
    if processes > 1 and not under_torchrun():
        command = torchrun_command(processes, list(argv if argv is not None else sys.argv))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(command[0], command)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def check_batch_size(self, batch_size: int, samples: int, where: str) -> None:
        """Refuse a global batch that does not split evenly, or a last batch with an empty shard."""
        if batch_size % self.size:
            raise ValueError(f"{where}: batch_size {batch_size} does not split evenly over {self.size} processes; "
                             f"use a multiple of {self.size}")
        if 0 < samples % batch_size < self.size:
            raise ValueError(f"{where}: the last batch of each epoch has {samples % batch_size} images, fewer than "
                             f"the {self.size} processes; change batch_size")

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's part of a global batch of indices: its positions rank, rank + W, ...
        `DistributedSampler` (no shuffle of its own, over the shuffled order) followed by a
        DataLoader of `batch_size / W` gives each process exactly these batches."""
        return batch[self.rank :: self.size]

    def loss_weight(self, shard_size: int, batch_size: int) -> float:
        """Factor of the mean loss of a shard such that DDP's average over processes is the mean loss of
        the global batch: exactly 1.0 when the shards are equal, else shard_size * W / batch_size."""
        return shard_size * self.size / batch_size

    def wrap(self, model: nn.Module, device: torch.device, own_random_numbers: bool = True) -> nn.Module:
        """The module to train: the model itself with one process; else its batch norms synchronised and
        the whole in DistributedDataParallel (which starts every rank from rank 0's weights).
        `own_random_numbers`: torch's global generator reseeded in each process, so that what the model
        draws from it for its shard (dropout masks) is independent across processes. False keeps the same
        generator in every process, for a model that draws for the global batch and keeps its shard
        (StyleGAN's per-pixel noise): the numbers one process would draw."""
        if not self.distributed:
            return model
        sync_batch_norm(model, device)
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        if own_random_numbers:
            torch.manual_seed(torch.initial_seed() + self.rank)  # dropout: independent masks in each process
        return wrapped

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over processes of a tensor (a collective: every rank calls it)."""
        if self.distributed:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
        return tensor

    def broadcast(self, value):
        """Rank 0's `value` (any picklable object; tensors on the CPU), in every process (a collective)."""
        if self.distributed:
            values = [value]
            dist.broadcast_object_list(values, src=0)
            value = values[0]
        return value

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


SINGLE = World()


def world_from_environment() -> World:
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def initialized(device: torch.device) -> Iterator[tuple[World, torch.device]]:
    """Join the process group `torchrun` describes (nothing to join with one process); the World and
    this process's device (its own GPU: cuda:<local rank>)."""
    world = world_from_environment()
    if not world.distributed:
        yield world, device
        return
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise RuntimeError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not on {device.type}; "
                           "set device: cpu or cuda in params.yaml, or processes: 1")
    dist.init_process_group(backend(device), device_id=device if device.type == "cuda" else None)
    try:
        yield world, device
    finally:
        dist.destroy_process_group()


# --- batch norm over the global batch -------------------------------------------------------------

class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, on the CPU: PyTorch's
    SyncBatchNorm runs on GPUs only. The per-channel count, sum and sum of squares of every process
    are summed by one differentiable all-reduce (in float64, so that E[x^2] - E[x]^2 keeps its
    digits); the gradient then flows to every process's inputs as through one batch norm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions, got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        from torch.distributed._functional_collectives import all_reduce

        dims = [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() / x.shape[1], dtype=torch.float64, device=x.device)
        x64 = x.double()
        stats = all_reduce(torch.cat([x64.sum(dims), (x64 * x64).sum(dims), count]), "sum", dist.group.WORLD)
        channels = x.shape[1]
        n = stats[-1]
        mean = stats[:channels] / n
        var = stats[channels : 2 * channels] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.to(x.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_((var * n / (n - 1)).to(x.dtype), alpha=factor)
        shape = [1, channels] + [1] * (x.dim() - 2)
        normalised = (x - mean.to(x.dtype).view(shape)) * torch.rsqrt(var.to(x.dtype).view(shape) + self.eps)
        if self.affine:
            normalised = normalised * self.weight.view(shape) + self.bias.view(shape)
        return normalised


def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every batch norm of `model` made to use the global batch's statistics, in place: PyTorch's
    SyncBatchNorm on GPUs, GlooSyncBatchNorm on the CPU. Parameters and buffers are kept (the same
    tensors), so are the names of the state dict."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the children replaced in place
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            synced = GlooSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats)
            synced.train(child.training)
            if child.affine:
                synced.weight, synced.bias = child.weight, child.bias
            if child.track_running_stats:
                synced.running_mean, synced.running_var = child.running_mean, child.running_var
                synced.num_batches_tracked = child.num_batches_tracked
            setattr(model, name, synced)
        else:
            sync_batch_norm(child, device)
    return model

