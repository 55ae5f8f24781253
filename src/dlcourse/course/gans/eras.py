"""The GAN timeline of the course's last slide, one short implementation per milestone, and the
losses and penalties their papers train with.

    gan-2014            Goodfellow et al.: fully connected G, a maxout D with dropout, the non-saturating loss
                        (gan2014.py)
    dcgan-2015          Radford et al.: transposed / strided convolutions with batch norm
    cogan-2016          Liu and Tuzel: two GANs sharing layers, a digit and its negative from one latent
                        vector, learned from unpaired images (cogan.py)
    wgan-gp-2017        Gulrajani et al.: a critic without batch norm, Wasserstein loss, gradient penalty
    progan-2017         Karras et al.: progressive growing with fade-in, pixel norm, minibatch standard
                        deviation, equalised learning rate (progan.py)
    sngan-2018          Miyato et al.: spectral normalisation of every critic layer, the hinge loss
    stylegan-2019       Karras et al.: mapping network, modulated / demodulated convolutions, per-pixel
                        noise, equalised learning rate (StyleGAN2's convolution, at a small size)
    dcgan-conditional   the DCGAN asked for a digit (Mirza and Osindero 2014; projection D, Miyato
                        and Koyama 2018)

Conventions: a generator maps latent vectors (N x latent_dim, and class labels when conditional)
to images in [-1, 1] (Tanh) of `image_shape` (C x H x W, H = W divisible by 4); a discriminator
(critic) returns one score per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..data import IMAGE_SHAPES
from .gan2014 import MlpDiscriminator, MlpGenerator
from .stylegan import StyleGenerator

MNIST_SHAPE = IMAGE_SHAPES["mnist"]


# --- 2015: DCGAN (and its conditional variant); the 2017 and 2018 critics reuse its layout ---

class Generator(nn.Module):
    """z -> 2w x H/4 x W/4 -> w x H/2 x W/2 -> C x H x W: transposed convs, BatchNorm, ReLU, Tanh.

    With `num_classes`, a conditional GAN (Mirza and Osindero 2014): the one-hot class is
    appended to z, so the caller chooses the digit."""

    def __init__(self, latent_dim: int = 64, width: int = 32, num_classes: int = 0, image_shape=MNIST_SHAPE):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        channels, size = image_shape[0], image_shape[1] // 4
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim + num_classes, 2 * width, size, 1, 0, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
            nn.Tanh(),
        )
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """C x H x W -> w x H/2 x W/2 -> 2w x H/4 x W/4 -> one score: strided convs, LeakyReLU.

    `normalization`: "batch" (DCGAN: BatchNorm after the second conv), "none" (WGAN-GP's critic:
    batch norm would make each sample's gradient depend on the others), "spectral" (SNGAN: every
    layer's weight divided by its largest singular value). With `num_classes`, a projection
    discriminator (Miyato and Koyama 2018): the score gains the inner product of the image's
    features with a learned embedding of its class."""

    def __init__(self, width: int = 32, num_classes: int = 0, image_shape=MNIST_SHAPE, normalization: str = "batch"):
        super().__init__()
        if normalization not in ("batch", "none", "spectral"):
            raise ValueError(f"Discriminator: unknown normalization {normalization!r} (batch, none or spectral)")
        wrap = spectral_norm if normalization == "spectral" else (lambda layer: layer)
        channels, size = image_shape[0], image_shape[1] // 4
        self.features = nn.Sequential(
            wrap(nn.Conv2d(channels, width, 4, 2, 1)),  # no BatchNorm on the input layer, as in the paper
            nn.LeakyReLU(0.2, True),
            wrap(nn.Conv2d(width, 2 * width, 4, 2, 1, bias=normalization != "batch")),
            *([nn.BatchNorm2d(2 * width)] if normalization == "batch" else []),
            nn.LeakyReLU(0.2, True),
        )
        self.head = wrap(nn.Conv2d(2 * width, 1, size, 1, 0))
        self.class_embedding = nn.Embedding(num_classes, 2 * width * size * size) if num_classes else None
        if normalization != "spectral":  # spectral_norm's parametrization keeps PyTorch's own initialisation
            self.apply(dcgan_init)
        if self.class_embedding is not None:
            nn.init.normal_(self.class_embedding.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        features = self.features(x)
        logit = self.head(features).flatten()
        if self.class_embedding is not None:
            logit = logit + (self.class_embedding(labels) * features.flatten(1)).sum(1)
        return logit


def dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation: conv weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


# --- losses and penalties ---------------------------------------------------------------------

LOSSES = ("non_saturating", "wasserstein", "hinge")


def discriminator_loss(loss: str, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """non_saturating: -log D(x) - log(1 - D(G(z))) with D = sigmoid (Goodfellow et al. 2014);
    wasserstein: E[D(G(z))] - E[D(x)] (Arjovsky et al. 2017); hinge: E[max(0, 1 - D(x))] +
    E[max(0, 1 + D(G(z)))] (Miyato et al. 2018)."""
    if loss == "non_saturating":
        return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
    if loss == "wasserstein":
        return fake_scores.mean() - real_scores.mean()
    if loss == "hinge":
        return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()
    raise ValueError(f"unknown GAN loss {loss!r} (one of {', '.join(LOSSES)})")


def generator_loss(loss: str, fake_scores: torch.Tensor) -> torch.Tensor:
    """non_saturating: -log D(G(z)) rather than log(1 - D(G(z))), whose gradient vanishes while D
    wins; wasserstein and hinge: -E[D(G(z))]."""
    if loss == "non_saturating":
        return F.softplus(-fake_scores).mean()
    if loss in ("wasserstein", "hinge"):
        return -fake_scores.mean()
    raise ValueError(f"unknown GAN loss {loss!r} (one of {', '.join(LOSSES)})")


def _input_gradients(discriminator: nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    images = images.detach().requires_grad_(True)
    scores = discriminator(images, labels)
    (gradients,) = torch.autograd.grad(scores.sum(), images, create_graph=True)
    return gradients.flatten(1)


def gradient_penalty(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, epsilon: torch.Tensor,
                     labels: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP's penalty E[(|grad D(x_hat)|_2 - 1)^2] at x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1]
    per sample (N values): the critic is pushed towards 1-Lipschitz where it matters."""
    mixed = epsilon.view(-1, *[1] * (real.dim() - 1)) * real + (1 - epsilon.view(-1, *[1] * (real.dim() - 1))) * fake
    return (_input_gradients(discriminator, mixed, labels).norm(dim=1) - 1).square().mean()


def r1_penalty(discriminator: nn.Module, real: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """StyleGAN's R1 regulariser (Mescheder et al. 2018): E[|grad D(x)|^2] on real images (times
    gamma / 2 in the loss)."""
    return _input_gradients(discriminator, real, labels).square().sum(dim=1).mean()


# --- the timeline ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Era:
    year: int
    method: str
    paper: str
    conditional: bool = False
    domains: int = 1  # images per latent vector: 2 for a coupled GAN (its generator's channels, domain by domain)


ERAS = {
    "gan-2014": Era(2014, "GAN", "Goodfellow et al. 2014"),
    "dcgan-2015": Era(2015, "DCGAN", "Radford et al. 2016"),
    "cogan-2016": Era(2016, "CoGAN", "Liu and Tuzel 2016", domains=2),
    "wgan-gp-2017": Era(2017, "WGAN-GP", "Gulrajani et al. 2017"),
    "progan-2017": Era(2017, "ProGAN", "Karras et al. 2018"),
    "sngan-2018": Era(2018, "SNGAN", "Miyato et al. 2018"),
    "stylegan-2019": Era(2019, "StyleGAN-like", "Karras et al. 2019, 2020"),
    "dcgan-conditional": Era(2015, "conditional DCGAN", "Radford et al. 2016; Mirza and Osindero 2014", True),
}


def build(era: str, latent_dim: int, width: int, image_shape=MNIST_SHAPE, num_classes: int = 10
          ) -> tuple[nn.Module, nn.Module]:
    """The era's generator and discriminator (critic); `num_classes` is used by the conditional entry only."""
    if era == "gan-2014":
        return MlpGenerator(latent_dim, width, image_shape), MlpDiscriminator(width, image_shape)
    if era == "dcgan-2015":
        return Generator(latent_dim, width, 0, image_shape), Discriminator(width, 0, image_shape, "batch")
    if era == "wgan-gp-2017":
        return Generator(latent_dim, width, 0, image_shape), Discriminator(width, 0, image_shape, "none")
    if era == "sngan-2018":
        return Generator(latent_dim, width, 0, image_shape), Discriminator(width, 0, image_shape, "spectral")
    if era == "stylegan-2019":
        return StyleGenerator(latent_dim, width, image_shape), Discriminator(width, 0, image_shape, "none")
    if era == "dcgan-conditional":
        return (Generator(latent_dim, width, num_classes, image_shape),
                Discriminator(width, num_classes, image_shape, "batch"))
    if era == "cogan-2016":
        from .cogan import CoupledDiscriminator, CoupledGenerator
        return CoupledGenerator(latent_dim, width, image_shape), CoupledDiscriminator(width, image_shape)
    if era == "progan-2017":
        from .progan import ProgressiveDiscriminator, ProgressiveGenerator
        return ProgressiveGenerator(latent_dim, width, image_shape), ProgressiveDiscriminator(width, image_shape)
    raise ValueError(f"unknown GAN era {era!r} (one of {', '.join(ERAS)})")



def check_gan_buildable(name: str, era: str, latent_dim: int, width: int, dataset: str) -> None:
    """A train_gan entry's generator and discriminator built and run on two latent vectors, so that
    an era whose networks do not fit the dataset's images is refused, naming the entry, before any training."""
    domains = ERAS[era].domains
    shape = (domains * IMAGE_SHAPES[dataset][0], *IMAGE_SHAPES[dataset][1:])  # a coupled GAN's: domain by domain
    try:
        generator, discriminator = build(era, latent_dim, width, IMAGE_SHAPES[dataset])  # built for one domain's images
        labels = torch.zeros(2, dtype=torch.long)
        with torch.no_grad():
            images = generator.eval()(torch.zeros(2, latent_dim), labels)
            scores = discriminator.eval()(images, labels)
    except Exception as exc:  # noqa: BLE001 - any failure means the params do not describe a GAN
        raise ValueError(f"{name}: the {era} networks (latent_dim {latent_dim}, width {width}) do not build or run "
                         f"on {dataset} images {shape}: {exc}") from None
    if images.shape != (2, *shape) or scores.shape != (2 * domains,):
        raise ValueError(f"{name}: the {era} generator gives images of shape {tuple(images.shape[1:])}, not {shape}, "
                         f"or its discriminator {tuple(scores.shape)} scores for 2 images of {domains} domain(s)")
