"""Robustness: slight corruptions that wreck predictions, and strange images classified with high
confidence.

- Adversarial examples, L-infinity, untargeted: `fgsm` (Goodfellow et al. 2015) and `pgd`
  (Madry et al. 2018), with random controls of the same size, `sign_noise` and `l2_noise`.
- Natural corruptions in the style of CIFAR-10-C (Hendrycks & Dietterich 2019): `CORRUPTIONS`.
- Fooling images from noise (Nguyen, Yosinski & Clune 2015): `fool_gradient_ascent` and
  `fool_evolution`, checked on a second network with `transfer_confidence`.

A model is any module mapping float images in [0, 1], N x C x H x W, to logits. Every random draw
is made on the generator's device (the CPU for a CPU generator, the default) and then moved, so one
seed gives the same numbers on every device.
"""

from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms.functional import gaussian_blur as _gaussian_blur

Perturb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y) -> perturbed x
Method = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]  # (x, y, eps) -> perturbed x


def _draw(sample, shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """`torch.rand` or `torch.randn` on the generator's device, then moved to `device`."""
    where = generator.device if generator is not None else torch.device("cpu")
    return sample(tuple(shape), generator=generator, device=where).to(device)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the cross-entropy with respect to the images only: no .grad left on the model."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)[0]


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Back into the L-infinity ball of radius eps around x, then into [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0, 1)


# --- adversarial examples and their random controls ------------------------------------------

def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method: one step of size eps along the sign of the loss gradient."""
    model.eval()
    return (x + eps * _input_gradient(model, x, y).sign()).clamp(0, 1).detach()


def pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
    step_size: float | None = None, random_start: bool = True, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent (on the loss, i.e. ascent): `steps` FGSM steps of `step_size`
    (default 2.5 eps / steps, Madry et al.), each projected back into the eps-ball and [0, 1],
    from a uniform random start in the ball. Returns the last iterate."""
    model.eval()
    step_size = 2.5 * eps / steps if step_size is None else step_size
    x_adv = x.detach()
    if random_start:
        x_adv = _project(x_adv + eps * (2 * _draw(torch.rand, x.shape, generator, x.device) - 1), x, eps)
    for _ in range(steps):
        x_adv = _project(x_adv + step_size * _input_gradient(model, x_adv, y).sign(), x, eps)
    return x_adv.detach()


def sign_noise(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Control for FGSM: every pixel moves by +eps or -eps at random (the FGSM size, random signs)."""
    signs = 2 * (_draw(torch.rand, x.shape, generator, x.device) < 0.5).to(x.dtype) - 1
    return (x + eps * signs).clamp(0, 1)


def l2_noise(x: torch.Tensor, radius: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Control of a given L2 size: a random Gaussian direction scaled to L2 norm `radius` per image.
    The FGSM / sign-noise perturbation at eps has L2 norm eps * sqrt(C*H*W) before clamping."""
    direction = _draw(torch.randn, x.shape, generator, x.device)
    norms = direction.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
    return (x + radius * direction / norms).clamp(0, 1)


def fgsm_l2_radius(x: torch.Tensor, eps: float) -> float:
    """The L2 norm of a sign perturbation of size eps on images shaped like x: eps * sqrt(C*H*W)."""
    return eps * math.sqrt(x[0].numel())


# --- the course's claim: a very slight corruption can wreck the predictions --------------------
# Fixed before any attack was run: at the eps chosen, PGD costs at least WRECKED of the accuracy,
# while random noise of the same L-inf or L2 size costs at most HARMLESS (it stays recognisable).

WRECKED = 0.5
HARMLESS = 0.02
CONTROLS = ("sign_noise", "l2_noise")


def slight_and_wrecking(accuracy: dict[float, dict[str, float]]) -> dict[float, bool]:
    """For each eps > 0 of a sweep ({eps: {method: accuracy}}, with eps 0 the clean accuracy):
    does PGD wreck the predictions while random noise of the same size stays harmless?"""
    clean = accuracy[0.0]["pgd"]
    return {eps: clean - row["pgd"] >= WRECKED and max(clean - row[c] for c in CONTROLS) <= HARMLESS
            for eps, row in sorted(accuracy.items()) if eps > 0}


def choose_slight_eps(accuracy: dict[float, dict[str, float]]) -> float:
    """The eps a claim is judged at, chosen on one half of the images (the selection half): the
    smallest eps where PGD wrecks and noise is harmless; failing that, the eps where PGD costs the
    most among those where noise stays harmless (or the smallest eps, if noise hurts at every eps)."""
    verdicts = slight_and_wrecking(accuracy)
    passing = [eps for eps, holds in verdicts.items() if holds]
    if passing:
        return min(passing)
    clean = accuracy[0.0]["pgd"]
    harmless = [eps for eps in verdicts if max(clean - accuracy[eps][c] for c in CONTROLS) <= HARMLESS]
    return max(harmless, key=lambda eps: clean - accuracy[eps]["pgd"]) if harmless else min(verdicts)


# --- natural corruptions, CIFAR-10-C style ----------------------------------------------------
# Severity constants from make_cifar_c.py (github.com/hendrycks/robustness), severities 1..5.

def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    sigma = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return (x + sigma * _draw(torch.randn, x.shape, generator, x.device)).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Kernel truncated at 4 sigma like skimage's; borders reflected (skimage: nearest)."""
    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1]
    size = 2 * int(4 * sigma + 0.5) + 1
    return _gaussian_blur(x, [size, size], [sigma, sigma]).clamp(0, 1)


def contrast(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pull every pixel towards its image's per-channel mean."""
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    means = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - means) * c + means).clamp(0, 1)


def brightness(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
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


def jpeg(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
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


# --- measuring --------------------------------------------------------------------------------

def accuracy_under(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, perturb: Perturb, batch_size: int = 1000,
) -> dict[str, float]:
    """Accuracy and mean confidence (softmax probability of the predicted class) on perturb(x, y),
    batch by batch, with the mean L-infinity and L2 size and the mean squared error per pixel of
    the perturbation actually applied."""
    model.eval()
    totals = dict.fromkeys(("accuracy", "confidence", "linf", "l2", "mse"), 0.0)
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        perturbed = perturb(xb, yb)
        with torch.no_grad():
            confidence, predicted = F.softmax(model(perturbed), dim=1).max(dim=1)
        delta = (perturbed - xb).flatten(1)
        totals["accuracy"] += (predicted == yb).sum().item()
        totals["confidence"] += confidence.sum().item()
        totals["linf"] += delta.abs().amax(dim=1).sum().item()
        totals["l2"] += delta.norm(dim=1).sum().item()
        totals["mse"] += delta.pow(2).mean(dim=1).sum().item()
    return {key: value / len(y) for key, value in totals.items()}


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio, in dB, of images in [0, 1] at this mean squared error (the
    higher, the less visible the perturbation); infinite for none."""
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def standard_methods(
    model: nn.Module, generator: torch.Generator | None = None, pgd_steps: int = 10,
    pgd_step_factor: float = 2.5, pgd_random_start: bool = True,
) -> dict[str, Method]:
    """FGSM, PGD (step size pgd_step_factor * eps / pgd_steps) and their two random controls of
    the same size, as (x, y, eps) -> x'."""
    return {
        "fgsm": lambda x, y, eps: fgsm(model, x, y, eps),
        "pgd": lambda x, y, eps: pgd(model, x, y, eps, steps=pgd_steps, step_size=pgd_step_factor * eps / pgd_steps,
                                     random_start=pgd_random_start, generator=generator),
        "sign_noise": lambda x, y, eps: sign_noise(x, eps, generator),
        "l2_noise": lambda x, y, eps: l2_noise(x, fgsm_l2_radius(x, eps), generator),
    }


def sweep(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list, methods: dict[str, Method],
    batch_size: int = 1000,
) -> pd.DataFrame:
    """One row per (method, eps): accuracy, confidence, and the mean L-inf / L2 size applied."""
    rows = [
        {"method": name, "eps": eps, **accuracy_under(model, x, y, lambda xb, yb: method(xb, yb, eps), batch_size)}
        for name, method in methods.items() for eps in eps_list
    ]
    return pd.DataFrame(rows)


def sweep_corruptions(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
    corruptions: dict[str, Corruption] = CORRUPTIONS, batch_size: int = 1000,
) -> pd.DataFrame:
    """One row per (corruption, severity): accuracy, confidence and the mean L-inf / L2 size."""
    rows = [
        {"corruption": name, "severity": severity,
         **accuracy_under(model, x, y, lambda xb, yb: corrupt(xb, severity, generator), batch_size)}
        for name, corrupt in corruptions.items() for severity in SEVERITIES
    ]
    return pd.DataFrame(rows)


# --- fooling images ---------------------------------------------------------------------------

@torch.no_grad()
def transfer_confidence(
    model: nn.Module, images: torch.Tensor, target_classes, batch_size: int = 1000,
) -> torch.Tensor:
    """The softmax probability `model` gives each image's target class (e.g. a second network's)."""
    model.eval()
    device = _device(model)
    targets = torch.as_tensor(target_classes, device=device)
    probabilities = [F.softmax(model(chunk.to(device)), dim=1) for chunk in images.split(batch_size)]
    return torch.cat(probabilities).gather(1, targets[:, None]).squeeze(1)


def fool_gradient_ascent(
    model: nn.Module, target_classes, shape, steps_max: int = 1000, lr: float = 0.01,
    confidence: float = 0.99, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fooling image per target class, from uniform noise, by gradient ascent on the log-softmax
    of the target: signed steps of `lr` per pixel, clamped to [0, 1] (Nguyen et al. follow Simonyan
    et al.'s plain gradient; the sign makes lr a step in pixel units). An image stops as soon as its
    confidence reaches `confidence`. Returns images, confidences, and steps taken (steps_max when
    the bar was not reached)."""
    model.eval()
    device = _device(model)
    targets = torch.as_tensor(target_classes, device=device)
    x = _draw(torch.rand, (len(targets), *shape), generator, device)
    reached_conf = torch.zeros(len(targets), device=device)
    steps = torch.full((len(targets),), steps_max, dtype=torch.long, device=device)
    active = torch.arange(len(targets), device=device)
    for step in range(steps_max + 1):
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
    return x, reached_conf, steps


def polynomial_mutation(
    x: torch.Tensor, rate: float, eta: float, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Deb's polynomial mutation on [0, 1]: each pixel is chosen with probability `rate` and moved
    by a delta in [-1, 1], the more concentrated near 0 the larger `eta`; then clamped to [0, 1]."""
    chosen = _draw(torch.rand, x.shape, generator, x.device) < rate
    u = _draw(torch.rand, x.shape, generator, x.device)
    delta = torch.where(u < 0.5, (2 * u) ** (1 / (eta + 1)) - 1, 1 - (2 * (1 - u)) ** (1 / (eta + 1)))
    return torch.where(chosen, x + delta, x).clamp(0, 1)


def fool_evolution(
    model: nn.Module, target_classes, shape, generations_max: int = 1000, population: int = 50,
    mutation_rate: float = 0.1, confidence: float = 0.99, generator: torch.Generator | None = None,
    eta: float = 15.0, batch_size: int = 4096,
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
    device = _device(model)
    targets = torch.as_tensor(target_classes, device=device)
    n, rows = len(targets), torch.arange(len(targets), device=device)[:, None]
    pop = _draw(torch.rand, (n, population, *shape), generator, device)
    fitness = transfer_confidence(
        model, pop.flatten(0, 1), targets.repeat_interleave(population), batch_size).view(n, -1)
    generations = torch.zeros(n, dtype=torch.long, device=device)
    for generation in range(1, generations_max + 1):
        active = (fitness.amax(dim=1) < confidence).nonzero().squeeze(1)
        if len(active) == 0:
            break
        children = polynomial_mutation(pop[active], mutation_rate, eta, generator)
        child_fitness = transfer_confidence(
            model, children.flatten(0, 1), targets[active].repeat_interleave(population), batch_size,
        ).view(len(active), -1)
        both, both_fitness = torch.cat([pop[active], children], 1), torch.cat([fitness[active], child_fitness], 1)
        survivors = both_fitness.sort(dim=1, descending=True, stable=True).indices[:, :population]
        pop[active] = both[rows[: len(active)], survivors]
        fitness[active] = both_fitness.gather(1, survivors)
        generations[active] = generation
    best = fitness.argmax(dim=1)
    return pop[rows.squeeze(1), best], fitness[rows.squeeze(1), best], generations
