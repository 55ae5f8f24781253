"""2016: coupled GANs (Liu and Tuzel 2016, "Coupled Generative Adversarial Networks"). Two GANs, one
per domain, learn the joint distribution of two domains from unpaired images of each, by sharing
weights: the generators their first layers (which decode the high-level content), the discriminators
their last (which judge it). One latent vector then gives a pair of corresponding images, one per
domain (the paper's MNIST pair: a digit and its negative image), though no pair was ever shown.

The two domains travel as one tensor, domain by domain along the channels (N x 2C x H x W: channels
[0:C] domain A, [C:2C] domain B), so that generative.train_gan trains a CoGAN as any other era: the
discriminator returns domain A's N scores then domain B's N, and the standard losses' mean over these
2N scores is the mean of the two GANs' losses (the paper's objective, their sum, halved).

The networks follow eras.py's DCGAN layout (images in [-1, 1], Tanh; H = W divisible by 4).
"""

from __future__ import annotations

import torch
from torch import nn

from .eras import MNIST_SHAPE, dcgan_init

DOMAINS = ("digits", "negatives")  # the paper's MNIST pair: what each domain's images are
# how a judge of the original images is shown each domain (`judged_domains`), as the scores say it
JUDGED_AS = {"digits": "as generated", "negatives": "negated back (1 - x in [0, 1]): the digits a classifier knows"}


class CoupledGenerator(nn.Module):
    """z -> 2w x H/4 x W/4 -> w x H/2 x W/2, shared (DCGAN's transposed convs, BatchNorm, ReLU), then each
    domain's own transposed conv to C x H x W and Tanh: N x 2C x H x W, domain by domain. The shared
    layers run once per latent vector, so both domains decode the very same features."""

    def __init__(self, latent_dim: int = 64, width: int = 32, image_shape=MNIST_SHAPE):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, 0
        channels, size = image_shape[0], image_shape[1] // 4
        self.shared = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 2 * width, size, 1, 0, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        )
        self.to_domain = nn.ModuleList(nn.Sequential(nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh())
                                       for _ in DOMAINS)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        features = self.shared(z[:, :, None, None])
        return torch.cat([layer(features) for layer in self.to_domain], dim=1)


class CoupledDiscriminator(nn.Module):
    """Each domain's own strided conv C -> w and LeakyReLU, then shared: conv w -> 2w, LeakyReLU, and the
    head to one score. No batch norm, as in the paper's discriminator: it would also mix the two domains'
    statistics in the shared layers. N images of 2C channels -> 2N scores (domain A's, then domain B's)."""

    def __init__(self, width: int = 32, image_shape=MNIST_SHAPE):
        super().__init__()
        self.channels, size = image_shape[0], image_shape[1] // 4
        self.from_domain = nn.ModuleList(nn.Sequential(nn.Conv2d(self.channels, width, 4, 2, 1),
                                                       nn.LeakyReLU(0.2, True)) for _ in DOMAINS)
        self.shared = nn.Sequential(nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2, True),
                                    nn.Conv2d(2 * width, 1, size, 1, 0))
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[1] != len(DOMAINS) * self.channels:
            raise ValueError(f"CoupledDiscriminator: images of {x.shape[1]} channels, not {len(DOMAINS)} domains "
                             f"of {self.channels}")
        domains = x.split(self.channels, dim=1)
        features = torch.cat([layer(images) for layer, images in zip(self.from_domain, domains)])
        return self.shared(features).flatten()


def two_domains(images: torch.Tensor, seed: int) -> torch.Tensor:
    """uint8 images (N x C x H x W) -> N // 2 unpaired pairs (N // 2 x 2C x H x W): domain A one random
    half of the images, domain B the negatives (255 - x) of the other half, in an order of its own. No
    pair is an image and its own negative: the coupling must be learned from the shared weights alone."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    half = len(images) // 2
    return torch.cat([images[order[:half]], 255 - images[order[half:2 * half]]], dim=1)


def side_by_side(images: torch.Tensor, domains: int = len(DOMAINS)) -> torch.Tensor:
    """N x dC x H x W -> dN x C x H x W: each latent vector's images one after the other (domain A's,
    then B's), for a grid of d times as many columns."""
    return images.unflatten(1, (domains, -1)).flatten(0, 1)


class OneDomain(nn.Module):
    """One domain of a coupled generator, as a generator of its own (what a judge of one domain's images
    scores): its channels, negated back (-x in [-1, 1], 1 - x in [0, 1]) when `negated`, so that a
    classifier of the original images reads the negatives' digits."""

    def __init__(self, coupled: nn.Module, domain: int, negated: bool = False):
        super().__init__()
        self.coupled, self.domain, self.sign = coupled, domain, -1.0 if negated else 1.0
        self.latent_dim, self.num_classes = coupled.latent_dim, 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        images = self.coupled(z, labels)
        channels = images.shape[1] // len(DOMAINS)
        return self.sign * images[:, self.domain * channels:(self.domain + 1) * channels]


def judged_domains(coupled: nn.Module) -> dict[str, OneDomain]:
    """The coupled generator's domains by name (DOMAINS), each as its judge reads it: the negatives negated back."""
    return {DOMAINS[0]: OneDomain(coupled, 0), DOMAINS[1]: OneDomain(coupled, 1, negated=True)}
