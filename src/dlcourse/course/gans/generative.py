"""Training GANs: the loop every era of eras.py shares (its loss, critic steps and penalty
given by a `Recipe`), resumable checkpoints, sampling and latent interpolation. Their scores are in
gan_metrics.py.

Conventions: the generator maps latent vectors (N x latent_dim) to images in [-1, 1] (Tanh);
`sample` and `interpolate` return images in [0, 1], the range the classifiers and
`torchvision.utils.save_image` expect. The discriminator returns one score per image.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ... import progress as progress_bar
from .steps import GanSteps


def sample_labels(n: int, num_classes: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """0, 1, ..., K-1, 0, 1, ...: every class equally often (None for an unconditional GAN)."""
    return torch.arange(n, device=device) % num_classes if num_classes else None


def exponential_moving_average(generator: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """A copy of the generator whose weights (and BatchNorm statistics) follow an exponential
    moving average of the trained ones (Karras et al. 2018): smoother, better samples."""
    return torch.optim.swa_utils.AveragedModel(
        generator, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


def to_tanh_range(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 pixels to floats (torch's default dtype, float32 unless set) in [-1, 1], the generator's
    output range."""
    return images.to(device, torch.get_default_dtype()).div_(127.5).sub_(1)


# --- training -------------------------------------------------------------------------------

@dataclass
class GanHistory:
    g_loss: list[float] = field(default_factory=list)  # one per step
    d_loss: list[float] = field(default_factory=list)  # one per step: real + fake terms
    epoch_seconds: list[float] = field(default_factory=list)  # this process's epochs, callbacks excluded


@dataclass(frozen=True)
class Recipe:
    """How an era trains, beyond its networks: its loss (gan_eras.LOSSES), the critic steps per
    generator step, and a penalty on the critic's input gradients: "gradient" (WGAN-GP, at
    interpolates), "r1" (StyleGAN, on real images, every `penalty_every` critic steps, lazily:
    its weight multiplied by that interval, as in StyleGAN2) or "none"."""

    loss: str = "non_saturating"
    critic_steps: int = 1
    penalty: str = "none"
    penalty_weight: float = 0.0
    penalty_every: int = 1
    drift_weight: float = 0.0  # ProGAN: + drift_weight * E[D(real)^2], keeping the critic's scores near 0
    sgd_schedule: object | None = None  # params.SgdSchedule: the 2014 GAN's (see `schedule_step`)


def schedule_step(generator: nn.Module, discriminator: nn.Module, optimizers: tuple[torch.optim.Optimizer, ...],
                  recipe: Recipe, step: int, total_steps: int, batch_size: int) -> None:
    """What changes as training goes, set before generator step `step` (0-based) of `total_steps`, from the
    step alone (a resumed run sets the same values): a network with `set_progress` (ProGAN's growing
    resolution and fade-in) is told the fraction of training done; with an SGD schedule (Goodfellow et al.'s
    code), each optimizer's learning rate is its initial one divided by lr_decay per update before this one
    (down to lr_min) and its momentum rises linearly from its initial one to momentum_final over
    momentum_ramp_images images seen by the generator."""
    for network in (generator, discriminator):
        if hasattr(network, "set_progress"):
            network.set_progress(step / total_steps)
    s = recipe.sgd_schedule
    if s is None:
        return
    ramp = min(1.0, step * batch_size / s.momentum_ramp_images)
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group.setdefault("initial_momentum", group["momentum"])
            group["lr"] = max(s.lr_min, group["initial_lr"] / s.lr_decay ** step)
            group["momentum"] = group["initial_momentum"] + (s.momentum_final - group["initial_momentum"]) * ramp


def make_optimizers(generator: nn.Module, discriminator: nn.Module, lr: float | tuple[float, float],
                    betas: tuple[float, float], optimizer: str = "adam"):
    """One optimizer per network. `lr`: one value, or (generator's, discriminator's). Adam with
    `betas` (DCGAN's 2e-4, (0.5, 0.999); WGAN-GP's 1e-4, (0, 0.9)), or "sgd" with momentum betas[0]
    (the 2014 paper's)."""
    lr_g, lr_d = (lr, lr) if isinstance(lr, (int, float)) else lr
    if optimizer == "sgd":
        return (torch.optim.SGD(generator.parameters(), lr=lr_g, momentum=betas[0]),
                torch.optim.SGD(discriminator.parameters(), lr=lr_d, momentum=betas[0]))
    if optimizer != "adam":
        raise ValueError(f"unknown optimizer {optimizer!r} (adam or sgd)")
    return (torch.optim.Adam(generator.parameters(), lr=lr_g, betas=betas),
            torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=betas))


def train_gan(generator: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
              images: torch.Tensor, labels: torch.Tensor | None = None, *, recipe: Recipe = Recipe(),
              ema: torch.optim.swa_utils.AveragedModel | None = None, epochs: int, batch_size: int,
              rng: torch.Generator, device: torch.device | str, start_epoch: int = 0, history: GanHistory | None = None,
              on_epoch_end: Callable[[int, GanHistory], None] | None = None, epoch_images: int | None = None,
              progress: bool | str = False, world=None) -> GanHistory:
    """Train from epoch `start_epoch` to `epochs`: an epoch is epoch_images // batch_size generator
    steps (all the images when None), so that the generator sees as many images per epoch whatever the
    era; before each, `recipe.critic_steps` critic steps, each on its own real batch (`GanSteps`).
    `images` are uint8 (N x C x H x W); `labels` (N) are needed by a conditional GAN. `ema` is updated
    after every generator step. Per-pixel noise (StyleGAN) and dropout (2014) come from torch's global
    generator, which checkpoints keep too. `on_epoch_end(epoch, history)` gets the epochs done (1-based).
    `world` (a `distributed.World`): each process trains on its shard of every global batch of
    `batch_size`, its noise drawn for the global batch, so that the processes train the networks of one
    process; only the main process calls `on_epoch_end`. `progress`: the steps shown on stderr."""
    history = history if history is not None else GanHistory()
    real_all = to_tanh_range(images, device)
    if generator.num_classes and labels is None:
        raise ValueError("train_gan: a conditional GAN (num_classes > 0) needs the images' labels")
    labels_all = labels.to(device) if generator.num_classes else None
    epoch_images = len(real_all) if epoch_images is None else epoch_images
    if not batch_size <= epoch_images <= len(real_all):
        raise ValueError(f"train_gan: {epoch_images} images per epoch asked, of {len(real_all)} training images, "
                         f"in batches of {batch_size}: needs batch_size <= epoch_images <= the training images")
    steps = epoch_images // batch_size
    if world is not None and world.distributed:
        world.check_batch_size(batch_size, steps * batch_size, "train_gan")
    trainer = GanSteps(generator, discriminator, opt_g, opt_d, recipe, ema, batch_size, rng, device, world)
    critic_updates = start_epoch * steps * recipe.critic_steps
    main = trainer.world is None or world.is_main
    bar = progress_bar.Bar(progress if isinstance(progress, str) else "gan", (epochs - start_epoch) * steps,
                           "step", "epoch", enabled=bool(progress) and main)
    for epoch in range(start_epoch, epochs):
        start = time.perf_counter()
        generator.train()
        discriminator.train()
        g_losses, d_losses = [], []
        for step, step_batches in enumerate(trainer.epoch_batches(len(real_all), steps), start=epoch * steps):
            bar.update()
            schedule_step(generator, discriminator, (opt_g, opt_d), recipe, step, epochs * steps, batch_size)
            for index in step_batches:
                index = trainer.shard(index).to(device)
                real_labels = labels_all[index] if generator.num_classes else None
                d_loss, fake, fake_labels = trainer.critic_step(real_all[index], real_labels, critic_updates)
                critic_updates += 1
            g_losses.append(trainer.generator_step(fake, fake_labels).detach())
            d_losses.append(d_loss.detach())
        g_epoch, d_epoch = trainer.epoch_losses(g_losses, d_losses)
        history.g_loss += g_epoch
        history.d_loss += d_epoch
        history.epoch_seconds.append(time.perf_counter() - start)
        bar.epoch_done(epoch + 1, epochs, generator_loss=history.g_loss[-1], discriminator_loss=history.d_loss[-1])
        if on_epoch_end is not None and main:
            on_epoch_end(epoch + 1, history)
    bar.close()
    return history


def sampler_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The generator weights to sample with from a checkpoint: the moving average when it has one."""
    if "ema" not in checkpoint:
        return checkpoint["generator"]
    return {k.removeprefix("module."): v for k, v in checkpoint["ema"].items() if k.startswith("module.")}


# --- sampling -------------------------------------------------------------------------------

def fixed_noise(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """The same n latent vectors for a given seed, whatever else has drawn random numbers."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def sample(generator: nn.Module, noise: torch.Tensor, labels: torch.Tensor | None = None,
           batch_size: int = 1000, seed: int = 0) -> torch.Tensor:
    """Images in [0, 1] (N x C x H x W, on noise's device), BatchNorm in eval mode; the
    generator's train/eval mode is restored afterwards. `labels`: the classes asked of a
    conditional generator. A generator that draws noise of its own (StyleGAN's per-pixel noise)
    draws it from `seed`, without disturbing torch's global random state: the same noise, the same images."""
    was_training = generator.training
    generator.eval()
    label_chunks = labels.split(batch_size) if labels is not None else [None] * math.ceil(len(noise) / batch_size)
    with torch.random.fork_rng(devices=[noise.device] if noise.device.type == "cuda" else []):
        torch.manual_seed(seed)
        images = torch.cat([generator(chunk, chunk_labels).add_(1).div_(2).clamp_(0, 1)
                            for chunk, chunk_labels in zip(noise.split(batch_size), label_chunks)])
    generator.train(was_training)
    return images


class ImagesFromNoise(nn.Module):
    """A generator as one function of one tensor (what an MLflow model of it serves): latent noise,
    with the one-hot digit asked for appended for a conditional generator (N x (latent_dim + classes)),
    to images in [0, 1] (N x C x H x W), as `sample` gives them. (No `len(z)`: `torch.export` would fix
    the batch size to the example's.)"""

    def __init__(self, generator: nn.Module, latent_dim: int, num_classes: int = 0):
        super().__init__()
        self.generator, self.latent_dim, self.num_classes = generator.eval(), latent_dim, num_classes

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        z = latent[:, : self.latent_dim]
        labels = latent[:, self.latent_dim :].argmax(1) if self.num_classes else None
        return self.generator(z, labels).add(1).div(2).clamp(0, 1)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (White 2016): rows z(t) for each t, z(0) = z0, z(1) = z1."""
    omega = torch.arccos((F.normalize(z0, dim=0) @ F.normalize(z1, dim=0)).clamp(-1, 1))
    if omega.abs() < 1e-6:  # (nearly) parallel: slerp tends to lerp
        return torch.lerp(z0, z1, t[:, None])
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def interpolate(generator: nn.Module, z0: torch.Tensor, z1: torch.Tensor, steps: int,
                method: str = "slerp", label: int | None = None) -> torch.Tensor:
    """`steps` images along the path from z0 to z1 (1-D latent vectors), endpoints included;
    `label`: the class asked of a conditional generator all along the path."""
    t = torch.linspace(0, 1, steps, device=z0.device, dtype=z0.dtype)
    path = slerp(z0, z1, t) if method == "slerp" else torch.lerp(z0, z1, t[:, None])
    labels = torch.full((steps,), label, device=z0.device) if label is not None else None
    return sample(generator, path, labels)
