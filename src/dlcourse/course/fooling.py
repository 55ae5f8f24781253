"""Fooling images from noise (Nguyen, Yosinski & Clune 2015): images the network classifies as
a class with very high confidence, by gradient ascent (`fool_gradient_ascent`) and by evolution of
the pixels (`fool_evolution`), checked on a second network with `transfer_confidence`; the regular
ones, evolved as CPPNs, are in `cppn`. How regular an image is: `png_bytes`, `total_variation`."""

from __future__ import annotations

import io

import torch
from PIL import Image
import torch.nn.functional as F
from torch import nn

from .. import progress
from .attacks import draw, model_device

# --- fooling images ---------------------------------------------------------------------------

@torch.no_grad()
def transfer_confidence(
    model: nn.Module, images: torch.Tensor, target_classes, batch_size: int = 1000,
) -> torch.Tensor:
    """The softmax probability `model` gives each image's target class (e.g. a second network's)."""
    model.eval()
    device = model_device(model)
    targets = torch.as_tensor(target_classes, device=device)
    probabilities = [F.softmax(model(chunk.to(device)), dim=1) for chunk in images.split(batch_size)]
    return torch.cat(probabilities).gather(1, targets[:, None]).squeeze(1)


def fool_gradient_ascent(
    model: nn.Module, target_classes, shape, steps_max: int = 1000, lr: float = 0.01,
    confidence: float = 0.99, rng: torch.Generator | None = None, label: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fooling image per target class, from uniform noise, by gradient ascent on the log-softmax
    of the target: signed steps of `lr` per pixel, clamped to [0, 1] (Nguyen et al. follow Simonyan
    et al.'s plain gradient; the sign makes lr a step in pixel units). An image stops as soon as its
    confidence reaches `confidence`. Returns images, confidences, and steps taken (steps_max when
    the bar was not reached)."""
    model.eval()
    device = model_device(model)
    targets = torch.as_tensor(target_classes, device=device)
    x = draw(torch.rand, (len(targets), *shape), rng, device)
    reached_conf = torch.zeros(len(targets), device=device)
    steps = torch.full((len(targets),), steps_max, dtype=torch.long, device=device)
    active = torch.arange(len(targets), device=device)
    bar = progress.Bar(label or "", steps_max, "step", "tenth", enabled=label is not None)  # `label`: shown on stderr
    for step in range(steps_max + 1):
        bar.update(int(step > 0))
        with torch.enable_grad():
            xa = x[active].requires_grad_(True)
            log_p = F.log_softmax(model(xa), dim=1).gather(1, targets[active, None]).squeeze(1)
            grad = torch.autograd.grad(log_p.sum(), xa)[0]
        reached_conf[active] = log_p.detach().exp()
        done = reached_conf[active] >= confidence
        steps[active[done]] = step
        if step == steps_max or done.all():
            break
        x[active[~done]] = (xa.detach() + lr * grad.sign()).clamp(0, 1)[~done]
        active = active[~done]
    bar.close()
    return x, reached_conf, steps


def polynomial_mutation(
    x: torch.Tensor, rate: float, eta: float, rng: torch.Generator | None = None,
) -> torch.Tensor:
    """Deb's polynomial mutation on [0, 1]: each pixel is chosen with probability `rate` and moved
    by a delta in [-1, 1], the more concentrated near 0 the larger `eta`; then clamped to [0, 1]."""
    chosen = draw(torch.rand, x.shape, rng, x.device) < rate
    u = draw(torch.rand, x.shape, rng, x.device)
    delta = torch.where(u < 0.5, (2 * u) ** (1 / (eta + 1)) - 1, 1 - (2 * (1 - u)) ** (1 / (eta + 1)))
    return torch.where(chosen, x + delta, x).clamp(0, 1)


def fool_evolution(
    model: nn.Module, target_classes, shape, generations_max: int = 1000, population: int = 50,
    mutation_rate: float = 0.1, confidence: float = 0.99, rng: torch.Generator | None = None,
    eta: float = 15.0, batch_size: int = 4096, label: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fooling image per target class, evolved from uniform noise with the direct encoding of
    Nguyen et al. (one gene per pixel, polynomial mutation of strength eta = 15 at rate 0.1).

    The paper runs MAP-Elites, keeping the best image for every class at once; here each target has
    its own elitist (mu + lambda) population instead: every parent gets one mutated child, and the
    best `population` of parents and children survive. Fitness is the target's softmax probability;
    the children of all unfinished targets go through the model in one batch. A target stops when
    its best image reaches `confidence`. Returns the best images, their confidences, and the
    generations taken (generations_max when the bar was not reached)."""
    model.eval()
    device = model_device(model)
    targets = torch.as_tensor(target_classes, device=device)
    n, rows = len(targets), torch.arange(len(targets), device=device)[:, None]
    pop = draw(torch.rand, (n, population, *shape), rng, device)
    fitness = transfer_confidence(
        model, pop.flatten(0, 1), targets.repeat_interleave(population), batch_size).view(n, -1)
    generations = torch.zeros(n, dtype=torch.long, device=device)
    bar = progress.Bar(label or "", generations_max, "generation", "tenth", enabled=label is not None)
    for generation in range(1, generations_max + 1):
        bar.update()
        active = (fitness.amax(dim=1) < confidence).nonzero().squeeze(1)
        if len(active) == 0:
            break
        children = polynomial_mutation(pop[active], mutation_rate, eta, rng)
        child_fitness = transfer_confidence(
            model, children.flatten(0, 1), targets[active].repeat_interleave(population), batch_size,
        ).view(len(active), -1)
        both, both_fitness = torch.cat([pop[active], children], 1), torch.cat([fitness[active], child_fitness], 1)
        survivors = both_fitness.sort(dim=1, descending=True, stable=True).indices[:, :population]
        pop[active] = both[rows[: len(active)], survivors]
        fitness[active] = both_fitness.gather(1, survivors)
        generations[active] = generation
    bar.close()
    best = fitness.argmax(dim=1)
    return pop[rows.squeeze(1), best], fitness[rows.squeeze(1), best], generations


# --- how regular an image is: patterns, not noise ------------------------------------------------

def png_bytes(image: torch.Tensor) -> int:
    """Size of the image (C x H x W in [0, 1], as 8-bit grey or RGB) as a PNG at zlib level 9: a
    pattern compresses, noise does not."""
    pixels = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).squeeze(-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buffer, format="PNG", compress_level=9)
    return buffer.getbuffer().nbytes


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontally or vertically adjacent pixels, per image
    (N x C x H x W in [0, 1]): 0 for a constant image, 1/3 on average for uniform noise."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1)
    return torch.cat([dx, dy], dim=1).mean(dim=1)
