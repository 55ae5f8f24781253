"""One GAN's training steps (`GanSteps`), as `generative.train_gan` runs them: the critic's steps with
its era's loss and penalty, the generator's step, its moving average, and the order in which every step
draws its random numbers, on one process or as a shard of every global batch on several."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .eras import discriminator_loss, generator_loss, gradient_penalty, r1_penalty

if TYPE_CHECKING:
    from .generative import Recipe


class GanSteps:
    """One GAN's training steps: its networks (in DistributedDataParallel when `world` has several
    processes), optimizers, recipe, moving average and random numbers. Every step draws from `rng` in
    the same order: per critic step the latent noise, the fake labels (conditional) and the penalty's
    mixing weights (gradient penalty); an epoch first draws its permutations of the images."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, recipe: Recipe, ema, batch_size: int, rng: torch.Generator,
                 device: torch.device | str, world=None):
        self.generator, self.discriminator, self.opt_g, self.opt_d = generator, discriminator, opt_g, opt_d
        self.recipe, self.ema, self.batch_size, self.rng, self.device = recipe, ema, batch_size, rng, device
        self.world = world if world is not None and world.distributed else None
        self.g, self.d, self.shard = generator, discriminator, lambda batch: batch  # what trains; this process's part
        if self.world is not None:
            for module in [*generator.modules(), *discriminator.modules()]:  # StyleGAN's noise, the 2014 D's dropout
                if hasattr(module, "noise_shard"):
                    module.noise_shard = (world.rank, world.size)
            self.g, self.d = (world.wrap(net, torch.device(device), own_random_numbers=False)
                              for net in (generator, discriminator))
            self.shard = world.shard

    def epoch_batches(self, images: int, steps: int) -> torch.Tensor:
        """Indices of the real images (steps x critic_steps x batch_size): one permutation per critic step."""
        passes = [torch.randperm(images, generator=self.rng)[: steps * self.batch_size]
                  for _ in range(self.recipe.critic_steps)]
        return torch.stack(passes, dim=1).view(steps, self.batch_size, self.recipe.critic_steps).permute(0, 2, 1)

    def critic_step(self, real: torch.Tensor, real_labels: torch.Tensor | None, critic_updates: int):
        """One update of the discriminator on a real batch and a fresh fake one: (its loss, the fake
        batch and the labels it was asked for)."""
        recipe, num_classes, n = self.recipe, self.generator.num_classes, self.batch_size
        z = self.shard(torch.randn(n, self.generator.latent_dim, generator=self.rng)).to(self.device)
        fake_labels = (self.shard(torch.randint(0, num_classes, (n,), generator=self.rng)).to(self.device)
                       if num_classes else None)
        fake = self.g(z, fake_labels)
        real_scores = self.d(real, real_labels)
        d_loss = discriminator_loss(recipe.loss, real_scores, self.d(fake.detach(), fake_labels))
        if recipe.drift_weight:
            d_loss = d_loss + recipe.drift_weight * real_scores.square().mean()
        if recipe.penalty == "gradient":
            epsilon = self.shard(torch.rand(n, generator=self.rng)).to(self.device)
            d_loss = d_loss + recipe.penalty_weight * gradient_penalty(self.d, real, fake.detach(), epsilon,
                                                                       real_labels if num_classes else None)
        elif recipe.penalty == "r1" and critic_updates % recipe.penalty_every == 0:
            d_loss = d_loss + recipe.penalty_weight / 2 * recipe.penalty_every * r1_penalty(self.d, real, real_labels)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        return d_loss, fake, fake_labels

    def generator_step(self, fake: torch.Tensor, fake_labels: torch.Tensor | None) -> torch.Tensor:
        """One update of the generator on the last critic step's fake batch (and of its moving average)."""
        g_loss = generator_loss(self.recipe.loss, self.d(fake, fake_labels))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update_parameters(self.generator)
        return g_loss

    def epoch_losses(self, g_losses: list[torch.Tensor], d_losses: list[torch.Tensor]) -> tuple[list, list]:
        """The epoch's losses, one per step, as floats (one device sync per epoch); with several
        processes, the shards' means averaged: the global batch's."""
        g_losses, d_losses = torch.stack(g_losses), torch.stack(d_losses)
        if self.world is not None:
            g_losses, d_losses = (self.world.sum(losses) / self.world.size for losses in (g_losses, d_losses))
        return g_losses.tolist(), d_losses.tolist()
