"""The 2014 GAN of Goodfellow et al., with the recipe of the paper's MNIST code (pylearn2): a fully
connected generator with a sigmoid output, a maxout discriminator with dropout (whose masks, under
several processes, are the global batch's), uniform initialisation, the output biases from the data."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data import IMAGE_SHAPES

MNIST_SHAPE = IMAGE_SHAPES["mnist"]


class MlpGenerator(nn.Module):
    """z -> 16w -> 16w -> C*H*W: fully connected, ReLU, a sigmoid output (Goodfellow et al.'s MNIST
    generator at width 75: two layers of 1200 rectified units), given in [-1, 1] as 2 sigmoid - 1 (=
    tanh(a / 2)): the paper's images exactly, in the project's range. Weights uniform in +-0.05, biases 0,
    as in the paper's code."""

    def __init__(self, latent_dim: int = 64, width: int = 32, image_shape=MNIST_SHAPE):
        super().__init__()
        self.latent_dim, self.num_classes, self.image_shape = latent_dim, 0, tuple(image_shape)
        self.net = nn.Sequential(nn.Linear(latent_dim, 16 * width), nn.ReLU(True),
                                 nn.Linear(16 * width, 16 * width), nn.ReLU(True),
                                 nn.Linear(16 * width, math.prod(image_shape)))
        uniform_init(self, 0.05)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z).sigmoid().mul(2).sub(1).view(z.shape[0], *self.image_shape)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """The paper's output biases (pylearn2's init_sigmoid_bias_from_marginals): each pixel's log-odds
        of its mean over the training images (uint8, clipped to [0.001, 0.999]), so that training starts
        from the mean image rather than from grey."""
        mean = images.flatten(1).double().mean(0).div(255).clamp(1e-3, 1 - 1e-3)
        self.net[-1].bias.copy_(torch.logit(mean).to(self.net[-1].bias))


class Maxout(nn.Module):
    """A maxout layer (Goodfellow et al. 2013): `units` outputs, each the largest of `pieces` linear units."""

    def __init__(self, inputs: int, units: int, pieces: int = 5):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(inputs, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(x.shape[0], self.units, self.pieces).amax(2)


class ShardedDropout(nn.Module):
    """Dropout (inverted: kept units scaled by 1 / (1 - p)) whose mask, while trained on several processes,
    is this process's rows of the mask drawn for the global batch (its rows rank, rank + W, ..., as
    `World.shard` deals the batch), drawn by every process from torch's global generator: the processes
    drop what one process would (`noise_shard`, set by generative.train_gan)."""

    def __init__(self, p: float):
        super().__init__()
        self.p, self.noise_shard = p, (0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        rank, processes = self.noise_shard  # this process's rows of the global batch: rank, rank + W, ...
        uniform = torch.rand((processes * x.shape[0], *x.shape[1:]), device=x.device, dtype=x.dtype)[rank::processes]
        return x * (uniform >= self.p) / (1 - self.p)


class MlpDiscriminator(nn.Module):
    """C*H*W in [0, 1] -> maxout -> maxout -> one logit, with dropout: Goodfellow et al.'s MNIST discriminator at
    width 75 (two maxout layers of 240 units of 5 pieces; inputs kept with probability 0.8, hidden units
    with 0.5, as in the paper's code). Weights uniform in +-0.005, biases 0."""

    def __init__(self, width: int = 32, image_shape=MNIST_SHAPE, pieces: int = 5):
        super().__init__()
        units = max(1, 16 * width // pieces)
        self.net = nn.Sequential(nn.Flatten(), ShardedDropout(0.2), Maxout(math.prod(image_shape), units, pieces),
                                 ShardedDropout(0.5), Maxout(units, units, pieces), ShardedDropout(0.5),
                                 nn.Linear(units, 1))
        uniform_init(self, 0.005)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # the paper's pixels are in [0, 1]: the same inputs, so that its learning rate means the same steps
        return self.net((x + 1) / 2).flatten()


def uniform_init(module: nn.Module, bound: float) -> None:
    """pylearn2's `irange`: every weight uniform in [-bound, bound], every bias 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.zeros_(layer.bias)
