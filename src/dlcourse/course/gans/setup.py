"""A GAN entry's networks, optimizers, moving average and recipe, built from its params: one place for the
train-gan stage, the GAN benchmarks and the tests."""

from __future__ import annotations

import torch
from torch import nn

from . import eras as gan_eras, generative


def build_networks(p, image_shape: tuple[int, ...], num_classes: int, device: torch.device,
                   images: torch.Tensor | None = None
                   ) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.optim.Optimizer,
                              torch.optim.swa_utils.AveragedModel | None]:
    """`p`: a train_gan entry's params. The generator and discriminator on `device` (channels-last when
    asked), their optimizers, and the generator's moving average when the entry keeps one. `images`: the
    training images, for a generator whose paper initialises it from them (the 2014 GAN's output biases)."""
    generator, discriminator = gan_eras.build(p.era, p.latent_dim, p.width, image_shape, num_classes)
    if images is not None and hasattr(generator, "init_from_data"):
        generator.init_from_data(images)
    layout = torch.channels_last if p.channels_last else torch.contiguous_format
    generator, discriminator = generator.to(device, memory_format=layout), discriminator.to(device, memory_format=layout)
    opt_g, opt_d = generative.make_optimizers(generator, discriminator, (p.lr_g, p.lr_d), (p.beta1, p.beta2),
                                              p.optimizer)
    ema = generative.exponential_moving_average(generator, p.ema_decay) if p.ema_decay else None
    return generator, discriminator, opt_g, opt_d, ema


def recipe(p) -> generative.Recipe:
    """How a train_gan entry (`p`, its params) trains beyond its networks: loss, critic steps, penalty,
    ProGAN's drift, the 2014 GAN's SGD schedule."""
    return generative.Recipe(p.loss, p.critic_steps, p.penalty, p.penalty_weight, p.penalty_every, p.drift_weight,
                             p.sgd_schedule)
