"""Natural corruptions in the style of CIFAR-10-C (Hendrycks & Dietterich 2019): `CORRUPTIONS`,
each at the five severities of `SEVERITIES`, and the accuracy under each."""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.functional import gaussian_blur as _gaussian_blur

from .attacks import accuracy_under, draw

# --- natural corruptions, CIFAR-10-C style ----------------------------------------------------
# Severity constants from make_cifar_c.py (github.com/hendrycks/robustness), severities 1..5.

def gaussian_noise(x: torch.Tensor, severity: int, rng: torch.Generator | None = None) -> torch.Tensor:
    sigma = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return (x + sigma * draw(torch.randn, x.shape, rng, x.device)).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, severity: int, rng: torch.Generator | None = None) -> torch.Tensor:
    """Kernel truncated at 4 sigma like skimage's; borders reflected (skimage: nearest)."""
    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1]
    size = 2 * int(4 * sigma + 0.5) + 1
    return _gaussian_blur(x, [size, size], [sigma, sigma]).clamp(0, 1)


def contrast(x: torch.Tensor, severity: int, rng: torch.Generator | None = None) -> torch.Tensor:
    """Pull every pixel towards its image's per-channel mean."""
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    means = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - means) * c + means).clamp(0, 1)


def brightness(x: torch.Tensor, severity: int, rng: torch.Generator | None = None) -> torch.Tensor:
    """Add c to the HSV value V = max over channels, hue and saturation kept: with H and S fixed the
    channels scale with V, so this equals the paper's rgb -> hsv -> rgb round trip (grey: x + c)."""
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    value = x.amax(dim=-3, keepdim=True)
    new_value = (value + c).clamp(max=1)
    return torch.where(value > 0, x * new_value / value.clamp(min=1e-12), new_value).clamp(0, 1)


def _jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer)).reshape(image.shape)


def jpeg(x: torch.Tensor, severity: int, rng: torch.Generator | None = None) -> torch.Tensor:
    """Each image saved as a JPEG by PIL, as the paper does, at a quality falling with severity."""
    quality = (80, 65, 58, 50, 40)[severity - 1]
    pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # N x H x W x C
    decoded = np.stack([_jpeg_round_trip(image, quality) for image in pixels])
    return torch.from_numpy(decoded).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255


Corruption = Callable[[torch.Tensor, int, torch.Generator | None], torch.Tensor]
CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "jpeg": jpeg,
}
SEVERITIES = (1, 2, 3, 4, 5)


def sweep_corruptions(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: torch.Generator | None = None,
    corruptions: dict[str, Corruption] = CORRUPTIONS, batch_size: int = 1000,
) -> pd.DataFrame:
    """One row per (corruption, severity): accuracy, confidence and the mean L-inf / L2 size."""
    rows = [
        {"corruption": name, "severity": severity,
         **accuracy_under(model, x, y, lambda xb, yb: corrupt(xb, severity, rng), batch_size)}
        for name, corrupt in corruptions.items() for severity in SEVERITIES
    ]
    return pd.DataFrame(rows)
