"""2019: a small StyleGAN-like generator (Karras et al. 2019, with StyleGAN2's modulated / demodulated
convolution, Karras et al. 2020): a mapping network, per-pixel noise, equalised learning rate. Its
discriminator is eras.py's DCGAN-style critic without batch norm."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data import IMAGE_SHAPES

MNIST_SHAPE = IMAGE_SHAPES["mnist"]


class EqualLinear(nn.Module):
    """A linear layer with the equalised learning rate (Karras et al. 2018): weights drawn from
    N(0, 1) and scaled by gain/sqrt(fan_in) at every call, so Adam moves every layer alike;
    `lr_mul` slows a layer down (the mapping network's 0.01). `gain`: He's sqrt(2) before a leaky
    ReLU in ProGAN; 1 in StyleGAN2, whose activations carry the sqrt(2) themselves."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0, bias_init: float = 0.0,
                 gain: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul))
        self.scale, self.lr_mul = gain * lr_mul / math.sqrt(in_features), lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, demodulate: bool = True,
                     eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2's modulated convolution (Karras et al. 2020), one weight per sample:
        w'_ijk = s_i w_ijk  (s: the sample's style, one scale per input channel i, output j)
        w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps)  (demodulation: unit norm per output channel)
    computed as one grouped convolution over the batch. x: N x Cin x H x W, weight: Cout x Cin x
    k x k, style: N x Cin; "same" padding."""
    n, c_in, height, width = x.shape
    c_out, _, k, _ = weight.shape
    w = weight[None] * style[:, None, :, None, None]  # N x Cout x Cin x k x k
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4), keepdim=True) + eps)
    out = F.conv2d(x.reshape(1, n * c_in, height, width), w.reshape(n * c_out, c_in, k, k), padding=k // 2, groups=n)
    return out.reshape(n, c_out, height, width)


class StyledConv(nn.Module):
    """(Upsample,) modulated 3x3 conv, per-pixel noise scaled by a learned strength, bias, LeakyReLU."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3))
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)  # w -> the style, near 1 at the start
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.upsample, self.scale = upsample, 1 / math.sqrt(c_in * 9)  # equalised learning rate

    def forward(self, x: torch.Tensor, w: torch.Tensor, shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """`shard`: (rank, processes) of a run on several processes, x being the rank's shard of a global
        batch: the noise is drawn for the global batch and the shard's part kept (as `World.shard`)."""
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.scale)
        rank, processes = shard
        # fresh each call: fine detail
        noise = torch.randn(x.shape[0] * processes, 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        if processes > 1:
            noise = noise[rank::processes]
        x = x + self.noise_strength * noise + self.bias.view(1, -1, 1, 1)
        return F.leaky_relu(x, 0.2) * math.sqrt(2)


class StyleGenerator(nn.Module):
    """z -> mapping MLP -> w; a learned 2w x H/4 x W/4 constant, styled convs at H/4, H/2 and H
    (each modulated by w), then a modulated 1x1 conv to C channels (no demodulation) and Tanh."""

    def __init__(self, latent_dim: int = 64, width: int = 32, image_shape=MNIST_SHAPE, mapping_layers: int = 4):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, 0
        channels, size = image_shape[0], image_shape[1] // 4
        mapping = []
        for _ in range(mapping_layers):
            mapping += [EqualLinear(latent_dim, latent_dim, lr_mul=0.01), nn.LeakyReLU(0.2)]
        self.mapping = nn.Sequential(*mapping)
        self.constant = nn.Parameter(torch.randn(1, 2 * width, size, size))
        self.convs = nn.ModuleList([StyledConv(2 * width, 2 * width, latent_dim),
                                    StyledConv(2 * width, width, latent_dim, upsample=True),
                                    StyledConv(width, width, latent_dim),
                                    StyledConv(width, width, latent_dim, upsample=True),
                                    StyledConv(width, width, latent_dim)])
        self.to_image = nn.Parameter(torch.randn(channels, width, 1, 1))
        self.to_image_affine = EqualLinear(latent_dim, width, bias_init=1.0)
        self.to_image_bias = nn.Parameter(torch.zeros(channels))
        # (rank, processes) while trained on several processes (set by generative.train_gan): in training
        # mode, each process's per-pixel noise is its shard of the global batch's, drawn by every process
        self.noise_shard = (0, 1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        w = self.mapping(z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8))  # z normalised first
        x = self.constant.expand(z.shape[0], -1, -1, -1)
        for conv in self.convs:
            x = conv(x, w, self.noise_shard if self.training else (0, 1))
        style = self.to_image_affine(w) / math.sqrt(self.to_image.shape[1])
        x = modulated_conv2d(x, self.to_image, style, demodulate=False)
        return torch.tanh(x + self.to_image_bias.view(1, -1, 1, 1))
