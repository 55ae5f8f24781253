"""ProGAN (Karras et al. 2018, "Progressive Growing of GANs for Improved Quality, Stability, and
Variation"), at the course's small size. The paper's four techniques:

- progressive growing: both networks start at H/4 x W/4 and grow to H/2, then H (MNIST: 7 -> 14 -> 28,
  CIFAR-10: 8 -> 16 -> 32), each new resolution faded in smoothly: its block's output blended with the
  previous path (upsampled in G, downsampled in D) by alpha rising from 0 to 1;
- pixel-wise feature normalisation in G after every convolution (and of the latent vector);
- the minibatch standard deviation as an extra feature map at D's last block;
- the equalised learning rate: weights stored N(0, 1), scaled by He's constant sqrt(2 / fan_in) at every call.

The schedule (`schedule`): five equal parts of training, stable at H/4, fade-in of H/2, stable at H/2,
fade-in of H, stable at H (the paper: as many images in each fade-in and stable phase). The training
loop tells both networks the fraction of training done (`set_progress`); it is kept in a buffer, so a
checkpoint loaded into a fresh network draws as the network did then; a fresh network is fully grown.

What differs from the paper, so that the rest of the pipeline stays unchanged:
- three resolutions from H/4 (the paper: 4x4 to 1024x1024), 2 x width channels at H/4 and width above
  (the paper: 512, halved above 32x32);
- G always returns full-size images (a lower resolution upsampled, nearest), in [-1, 1]: each path's
  toRGB output goes through Tanh before the blend (the paper's output is linear); D always takes
  full-size images and average-pools them to its resolution, real and fake alike. The paper also blends
  the real images between two resolutions during a fade-in; here D's two input paths are blended instead;
- the minibatch standard deviation over groups of 4 images (the authors' code; the paper: the whole
  minibatch), groups of images N/4 apart: two processes of DistributedDataParallel, each with every
  other image of a batch, form the groups of one process;
- every layer takes part in every pass, those not yet grown with weight 0 (their parameters' sum times
  0, at no cost): DistributedDataParallel needs a gradient for every parameter. Adam does not move such
  a layer (its moments stay 0) but counts its steps, so that its first steps once grown are larger (up to
  10x, with beta2 0.99's bias correction spent); the authors' code resets Adam at each new resolution;
- no moving average of G (params.yaml: ema_decay 0; torch's AveragedModel would average the progress).
The loss (WGAN-GP with the drift term, 0.001 E[D(x)^2]) is the training loop's Recipe (params.yaml).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .eras import MNIST_SHAPE
from .stylegan import EqualLinear

LEVELS = 3  # resolutions H/4, H/2, H
PHASES = 2 * LEVELS - 1  # stable, then a fade-in and a stable phase per new resolution
HE_GAIN = math.sqrt(2)  # He et al.'s constant for a layer followed by a (leaky) ReLU


def schedule(progress: float) -> tuple[int, float]:
    """(level, alpha) at `progress`, the fraction of training done: level 0 is H/4, LEVELS - 1 full size;
    alpha in [0, 1) while `level` fades in, 1 once it is stable."""
    # rounded to 1e-6, far below one step's share of a phase: the float32 buffer's rounding (1e-7) moves no
    # phase boundary, and a fade-in starts at alpha 0 exactly
    position = round(min(max(progress, 0.0), 1.0) * PHASES, 6)
    phase = min(int(position), PHASES - 1)
    if phase % 2 == 0:
        return phase // 2, 1.0
    return (phase + 1) // 2, position - phase


class EqualConv2d(nn.Module):
    """A convolution with the equalised learning rate: weights N(0, 1), scaled by gain / sqrt(fan_in) at
    every call, so that Adam's steps, the same size for every weight, move every layer alike."""

    def __init__(self, c_in: int, c_out: int, kernel: int, gain: float = HE_GAIN, padding: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.scale = gain / math.sqrt(c_in * kernel * kernel)
        self.padding = kernel // 2 if padding is None else padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class PixelNorm(nn.Module):
    """Each pixel's feature vector scaled to unit mean square: b = a / sqrt(mean_j a_j^2 + 1e-8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class MinibatchStdDev(nn.Module):
    """One more feature map: the standard deviation of each feature at each pixel over a group of images,
    averaged over features and pixels; the same value at every pixel of the group's images. Group g of a
    batch of N holds images g, g + N/G, g + 2N/G, ... (G = 4, or the largest divisor of N below it)."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        group = next(g for g in range(min(self.group_size, n), 0, -1) if n % g == 0)
        grouped = x.reshape(group, n // group, *x.shape[1:])
        std = (grouped.var(dim=0, correction=0) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # one per group
        return torch.cat([x, std.repeat(group).view(n, 1, 1, 1).expand(n, 1, height, width)], dim=1)


class Growing(nn.Module):
    """What both networks share: the progress buffer, its (level, alpha), and every parameter in the graph."""

    def __init__(self):
        super().__init__()
        self.register_buffer("progress", torch.tensor(1.0))
        self.stage = schedule(1.0)  # kept as numbers: no device read per call, and it works on the meta device
        self.register_load_state_dict_post_hook(Growing._read_stage)

    def set_progress(self, progress: float) -> None:
        self.progress.fill_(progress)
        # the value the buffer holds (float32 rounding included), as a loaded checkpoint gives it
        self.stage = schedule(torch.tensor(progress, dtype=self.progress.dtype).item())

    @staticmethod
    def _read_stage(module: Growing, _incompatible_keys) -> None:  # after load_state_dict: the loaded progress
        module.stage = schedule(module.progress.item())

    def with_unused(self, output: torch.Tensor, used: list[nn.Module]) -> torch.Tensor:
        """`output` plus 0 x the parameters of the layers not used at this stage: a zero gradient for them."""
        if not torch.is_grad_enabled():
            return output
        used_ids = {id(p) for module in used for p in module.parameters()}
        unused = [p.sum() for p in self.parameters() if id(p) not in used_ids]
        return output + 0 * torch.stack(unused).sum() if unused else output


def level_widths(width: int) -> list[int]:
    """Channels at H/4, H/2 and H."""
    return [2 * width, width, width]


class ProgressiveGenerator(Growing):
    """z -> pixel norm -> dense to 2w x H/4 x W/4 -> conv 3x3 (level 0); per new level: upsample,
    two convs 3x3; every conv with a leaky ReLU and pixel norm; toRGB (1x1 conv) at each level, Tanh."""

    def __init__(self, latent_dim: int = 64, width: int = 32, image_shape=MNIST_SHAPE):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, 0
        channels, size = image_shape[0], image_shape[1] // 4
        widths = level_widths(width)
        first = nn.Sequential(PixelNorm(), EqualLinear(latent_dim, widths[0] * size * size, gain=HE_GAIN),
                              nn.Unflatten(1, (widths[0], size, size)), nn.LeakyReLU(0.2), PixelNorm(),
                              EqualConv2d(widths[0], widths[0], 3), nn.LeakyReLU(0.2), PixelNorm())
        self.blocks = nn.ModuleList([first] + [
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                          EqualConv2d(c_in, c_out, 3), nn.LeakyReLU(0.2), PixelNorm(),
                          EqualConv2d(c_out, c_out, 3), nn.LeakyReLU(0.2), PixelNorm())
            for c_in, c_out in zip(widths, widths[1:])])
        self.to_rgb = nn.ModuleList([EqualConv2d(c, channels, 1, gain=1.0) for c in widths])  # linear: gain 1

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        level, alpha = self.stage
        features = previous = z
        for block in self.blocks[: level + 1]:
            previous, features = features, block(features)
        image = torch.tanh(self.to_rgb[level](features))
        used = [*self.blocks[: level + 1], self.to_rgb[level]]
        if alpha < 1:  # fading in: the previous level's image, upsampled, gives way to the new block's
            older = torch.tanh(self.to_rgb[level - 1](previous))
            image = torch.lerp(F.interpolate(older, scale_factor=2, mode="nearest"), image, alpha)
            used.append(self.to_rgb[level - 1])
        if level < LEVELS - 1:
            image = F.interpolate(image, scale_factor=2 ** (LEVELS - 1 - level), mode="nearest")
        return self.with_unused(image, used)


class ProgressiveDiscriminator(Growing):
    """Full-size images average-pooled to the current level -> fromRGB (1x1 conv) -> per level from the
    current one down: two convs 3x3, average pooling; at H/4: minibatch std, conv 3x3, conv H/4 x W/4
    (dense), linear -> one score. Leaky ReLUs after every conv."""

    def __init__(self, width: int = 32, image_shape=MNIST_SHAPE):
        super().__init__()
        channels, size = image_shape[0], image_shape[1] // 4
        widths = level_widths(width)
        last = nn.Sequential(MinibatchStdDev(), EqualConv2d(widths[0] + 1, widths[0], 3), nn.LeakyReLU(0.2),
                             EqualConv2d(widths[0], widths[0], size, padding=0), nn.LeakyReLU(0.2),
                             nn.Flatten(), EqualLinear(widths[0], 1))  # the score: linear, gain 1
        self.blocks = nn.ModuleList([last] + [
            nn.Sequential(EqualConv2d(c_in, c_in, 3), nn.LeakyReLU(0.2),
                          EqualConv2d(c_in, c_out, 3), nn.LeakyReLU(0.2), nn.AvgPool2d(2))
            for c_in, c_out in zip(widths[1:], widths)])  # block l: level l's width down to level l - 1's
        self.from_rgb = nn.ModuleList([nn.Sequential(EqualConv2d(channels, c, 1), nn.LeakyReLU(0.2)) for c in widths])

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        level, alpha = self.stage
        x = F.avg_pool2d(images, 2 ** (LEVELS - 1 - level)) if level < LEVELS - 1 else images
        features = self.blocks[level](self.from_rgb[level](x))
        used = [*self.blocks[: level + 1], self.from_rgb[level]]
        if alpha < 1:  # fading in: the new block's features blended with the half-size image's
            older = self.from_rgb[level - 1](F.avg_pool2d(x, 2))
            features = torch.lerp(older, features, alpha)
            used.append(self.from_rgb[level - 1])
        for block in reversed(self.blocks[:level]):
            features = block(features)
        return self.with_unused(features.flatten(), used)
