"""GANs on MNIST: a DCGAN (Radford et al. 2016) for 28x28 grey images, its training loop with
resumable checkpoints, sampling, latent interpolation, and scores computed with a classifier.

Conventions: the generator maps latent vectors (N x latent_dim) to images in [-1, 1] (Tanh);
`sample` and `interpolate` return images in [0, 1], the range the classifiers and
`torchvision.utils.save_image` expect. The discriminator returns one logit per image.
"""

from __future__ import annotations

import hashlib

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .files import load_torch, save_torch


# --- the networks ---------------------------------------------------------------------------

class Generator(nn.Module):
    """z -> 2w x 7 x 7 -> w x 14 x 14 -> 1 x 28 x 28: transposed convs, BatchNorm, ReLU, Tanh.

    With `num_classes`, a conditional GAN (Mirza and Osindero 2014): the one-hot class is
    appended to z, so the caller chooses the digit."""

    def __init__(self, latent_dim: int = 64, width: int = 32, num_classes: int = 0):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim + num_classes, 2 * width, 7, 1, 0, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.ConvTranspose2d(width, 1, 4, 2, 1),
            nn.Tanh(),
        )
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        return self.net(z.view(len(z), -1, 1, 1))


class Discriminator(nn.Module):
    """1 x 28 x 28 -> w x 14 x 14 -> 2w x 7 x 7 -> one logit: strided convs, LeakyReLU, no pooling.

    With `num_classes`, a projection discriminator (Miyato and Koyama 2018): the logit gains the
    inner product of the image's features with a learned embedding of its class."""

    def __init__(self, width: int = 32, num_classes: int = 0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1),  # no BatchNorm on the input layer, as in the paper
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, True),
        )
        self.head = nn.Conv2d(2 * width, 1, 7, 1, 0)
        self.class_embedding = nn.Embedding(num_classes, 2 * width * 7 * 7) if num_classes else None
        self.apply(dcgan_init)
        if self.class_embedding is not None:
            nn.init.normal_(self.class_embedding.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        features = self.features(x)
        logit = self.head(features).flatten()
        if self.class_embedding is not None:
            logit = logit + (self.class_embedding(labels) * features.flatten(1)).sum(1)
        return logit


def sample_labels(n: int, num_classes: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """0, 1, ..., K-1, 0, 1, ...: every class equally often (None for an unconditional GAN)."""
    return torch.arange(n, device=device) % num_classes if num_classes else None


def exponential_moving_average(generator: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """A copy of the generator whose weights (and BatchNorm statistics) follow an exponential
    moving average of the trained ones (Karras et al. 2018): smoother, better samples."""
    return torch.optim.swa_utils.AveragedModel(
        generator, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


def dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation: conv weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def to_tanh_range(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 pixels to floats in [-1, 1], the generator's output range."""
    return images.to(device).float().div_(127.5).sub_(1)


# --- training -------------------------------------------------------------------------------

@dataclass
class GanHistory:
    g_loss: list[float] = field(default_factory=list)  # one per step
    d_loss: list[float] = field(default_factory=list)  # one per step: real + fake terms
    epoch_seconds: list[float] = field(default_factory=list)  # this process's epochs, callbacks excluded


def make_optimizers(generator: nn.Module, discriminator: nn.Module, lr: float, betas: tuple[float, float]):
    """One Adam per network, the paper's settings being lr 2e-4 and betas (0.5, 0.999)."""
    return (torch.optim.Adam(generator.parameters(), lr=lr, betas=betas),
            torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas))


def train_gan(
    generator: Generator,
    discriminator: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    epochs: int,
    batch_size: int,
    rng: torch.Generator,
    device: torch.device | str,
    start_epoch: int = 0,
    history: GanHistory | None = None,
    on_epoch_end: Callable[[int, GanHistory], None] | None = None,
) -> GanHistory:
    """Train from epoch `start_epoch` to `epochs` with the non-saturating BCE losses.

    `images` are uint8 (N x 1 x 28 x 28); `labels` (N) are needed when the GAN is conditional,
    fake images then being asked for with uniformly drawn classes. `ema`, when given, is
    updated after every generator step. Each epoch is a fresh permutation drawn from `rng`
    (a CPU torch.Generator), cut into full batches; the latent noise comes from `rng` too, so
    `rng`'s state at an epoch's end is all the randomness a resumed run needs.
    `on_epoch_end(epoch, history)` is called with the number of epochs done (1-based).
    """
    history = history if history is not None else GanHistory()
    real_all = to_tanh_range(images, device)
    latent_dim, num_classes = generator.latent_dim, generator.num_classes
    if num_classes and labels is None:
        raise ValueError("train_gan: a conditional GAN (num_classes > 0) needs the images' labels")
    labels_all = labels.to(device) if num_classes else None
    for epoch in range(start_epoch, epochs):
        start = time.perf_counter()
        generator.train()
        discriminator.train()
        g_losses, d_losses = [], []
        order = torch.randperm(len(real_all), generator=rng)
        for index in order[: len(order) // batch_size * batch_size].view(-1, batch_size):
            index = index.to(device)
            real = real_all[index]
            real_labels = labels_all[index] if num_classes else None
            z = torch.randn(batch_size, latent_dim, generator=rng).to(device)
            fake_labels = torch.randint(0, num_classes, (batch_size,), generator=rng).to(device) if num_classes else None
            fake = generator(z, fake_labels)
            ones = torch.ones(batch_size, device=device)
            zeros = torch.zeros(batch_size, device=device)

            # D: maximise log D(x) + log(1 - D(G(z))).
            d_loss = (F.binary_cross_entropy_with_logits(discriminator(real, real_labels), ones)
                      + F.binary_cross_entropy_with_logits(discriminator(fake.detach(), fake_labels), zeros))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

            # G, non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z))).
            g_loss = F.binary_cross_entropy_with_logits(discriminator(fake, fake_labels), ones)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            if ema is not None:
                ema.update_parameters(generator)

            g_losses.append(g_loss.detach())
            d_losses.append(d_loss.detach())
        history.g_loss += torch.stack(g_losses).tolist()  # one device sync per epoch
        history.d_loss += torch.stack(d_losses).tolist()
        history.epoch_seconds.append(time.perf_counter() - start)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, history)
    return history


class ResumeError(ValueError):
    pass


def run_fingerprint(settings: dict, seed: int, images: torch.Tensor, labels: torch.Tensor) -> dict[str, str]:
    """What determines a GAN run but its number of epochs: its params, the seed, the training data
    and the code of this module. A checkpoint carries it; a run resumes only from its own."""
    data = hashlib.sha256(images.cpu().numpy().tobytes() + labels.cpu().numpy().tobytes()).hexdigest()
    return {**{f"train_gan.{key}": repr(value) for key, value in sorted(settings.items()) if key != "epochs"},
            "seed": repr(seed), "data (sha256)": data, "code (sha256 of generative.py)":
            hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}


def check_resumable(path: str | Path, fingerprint: dict[str, str], epochs: int) -> None:
    """Refuse to resume from a checkpoint of another run (other params, seed, data or code) or of
    more epochs than asked, naming what differs."""
    state = load_torch(path)
    found = state.get("fingerprint") or {}
    differing = [f"{key}: checkpoint {found.get(key, 'none')}, now {value}" for key, value in fingerprint.items()
                 if found.get(key) != value]
    if state["epoch"] > epochs:
        differing.append(f"epochs: the checkpoint has {state['epoch']} done, now {epochs} asked")
    if differing:
        raise ResumeError(f"{path}: cannot resume from a checkpoint of another run:\n  " + "\n  ".join(differing)
                          + "\na plain `dvc repro` (without GAN_RESUME=1) starts afresh")


def save_checkpoint(path: str | Path, *, epoch: int, generator: nn.Module, discriminator: nn.Module,
                    opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, rng: torch.Generator,
                    history: GanHistory, ema: torch.optim.swa_utils.AveragedModel | None = None,
                    fingerprint: dict[str, str] | None = None) -> None:
    """Everything a killed run needs to go on from the end of `epoch`, written atomically."""
    state = {
        "epoch": epoch,
        "fingerprint": fingerprint or {},
        "generator": generator.state_dict(),
        "discriminator": discriminator.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "rng": rng.get_state(),
        "history": {"g_loss": history.g_loss, "d_loss": history.d_loss},  # no wall times: the bytes are reproducible
    }
    if ema is not None:
        state["ema"] = ema.state_dict()
    save_torch(state, path)


def load_checkpoint(path: str | Path, *, generator: nn.Module, discriminator: nn.Module,
                    opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, rng: torch.Generator,
                    device: torch.device | str = "cpu", ema: torch.optim.swa_utils.AveragedModel | None = None
                    ) -> tuple[int, GanHistory]:
    """Restore a checkpoint in place; return (epochs done, history) for `train_gan`'s
    `start_epoch` and `history`. The networks must already be on `device`."""
    state = load_torch(path, map_location=device)
    generator.load_state_dict(state["generator"])
    discriminator.load_state_dict(state["discriminator"])
    opt_g.load_state_dict(state["opt_g"])
    opt_d.load_state_dict(state["opt_d"])
    rng.set_state(state["rng"].cpu())
    if ema is not None:
        if "ema" not in state:
            raise ValueError(f"{path}: no moving-average generator to resume (saved with ema_decay 0?)")
        ema.load_state_dict(state["ema"])
    return state["epoch"], GanHistory(**state["history"])


def sampler_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The generator weights to sample with from a checkpoint: the moving average when it has one."""
    if "ema" not in checkpoint:
        return checkpoint["generator"]
    return {k.removeprefix("module."): v for k, v in checkpoint["ema"].items() if k.startswith("module.")}


# --- sampling -------------------------------------------------------------------------------

def fixed_noise(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """The same n latent vectors for a given seed, whatever else has drawn random numbers."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def sample(generator: nn.Module, noise: torch.Tensor, labels: torch.Tensor | None = None,
           batch_size: int = 1000) -> torch.Tensor:
    """Images in [0, 1] (N x 1 x 28 x 28, on noise's device), BatchNorm in eval mode; the
    generator's train/eval mode is restored afterwards. `labels`: the classes asked of a
    conditional generator."""
    was_training = generator.training
    generator.eval()
    label_chunks = labels.split(batch_size) if labels is not None else [None] * math.ceil(len(noise) / batch_size)
    images = torch.cat([generator(chunk, chunk_labels).add_(1).div_(2).clamp_(0, 1)
                        for chunk, chunk_labels in zip(noise.split(batch_size), label_chunks)])
    generator.train(was_training)
    return images


class ImagesFromNoise(nn.Module):
    """A generator as one function of one tensor (what an MLflow model of it serves): the vector its
    first layer takes, latent noise with the one-hot digit asked for appended for a conditional
    generator (N x (latent_dim + classes)), to images in [0, 1] (N x 1 x 28 x 28), as `sample`
    gives them. (No `len(z)`: `torch.export` would fix the batch size to the example's.)"""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.generator.net(latent[:, :, None, None]).add(1).div(2).clamp(0, 1)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (White 2016): rows z(t) for each t, z(0) = z0, z(1) = z1."""
    omega = torch.arccos((F.normalize(z0, dim=0) @ F.normalize(z1, dim=0)).clamp(-1, 1))
    if omega.abs() < 1e-6:  # (nearly) parallel: slerp tends to lerp
        return torch.lerp(z0, z1, t[:, None])
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def interpolate(generator: nn.Module, z0: torch.Tensor, z1: torch.Tensor, steps: int,
                method: str = "slerp", label: int | None = None) -> torch.Tensor:
    """`steps` images along the path from z0 to z1 (1-D latent vectors), endpoints included;
    `label`: the class asked of a conditional generator all along the path."""
    t = torch.linspace(0, 1, steps, device=z0.device, dtype=z0.dtype)
    path = slerp(z0, z1, t) if method == "slerp" else torch.lerp(z0, z1, t[:, None])
    labels = torch.full((steps,), label, device=z0.device) if label is not None else None
    return sample(generator, path, labels)


# --- scores with a classifier ---------------------------------------------------------------

def hooked_features(model: nn.Module, module_name: str, batch_size: int = 1000
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable images -> the flattened *input* of `model.<module_name>` (in eval mode).

    Naming the classifier's last layer (e.g. Reseau2's `fc2`) gives its penultimate features.
    """
    module = model.get_submodule(module_name)

    @torch.no_grad()
    def features(images: torch.Tensor) -> torch.Tensor:
        captured = []
        handle = module.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].flatten(1)))
        try:
            model.eval()
            for chunk in images.split(batch_size):
                model(chunk)
        finally:
            handle.remove()
        return torch.cat(captured)

    return features


def classifier_confidence(probs: torch.Tensor, threshold: float = 0.9) -> dict[str, float]:
    """From class probabilities (N x K): the fraction of samples whose top probability is at
    least `threshold`, and the mean top probability."""
    top = probs.max(dim=1).values
    return {"confident_fraction": float((top >= threshold).float().mean()), "mean_confidence": float(top.mean())}


def class_distribution(probs: torch.Tensor) -> list[float]:
    """The fraction of samples predicted as each class (argmax of the probabilities)."""
    counts = torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1])
    return (counts.double() / len(probs)).tolist()


def inception_score(probs: torch.Tensor, splits: int = 1) -> tuple[float, float]:
    """exp(E_x[KL(p(y|x) || p(y))]) (Salimans et al. 2016) with the given classifier's
    probabilities, p(y) being the mean over each split; returns the mean and std over splits.

    1 when every sample gets the same prediction; K when the predictions are one-hot and
    spread evenly over K classes.
    """
    scores = []
    for part in probs.double().chunk(splits):
        marginal = part.mean(dim=0, keepdim=True)
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(dim=1)  # 0 log 0 = 0
        scores.append(math.exp(float(kl.mean())))
    scores_t = torch.tensor(scores, dtype=torch.float64)
    return float(scores_t.mean()), float(scores_t.std()) if splits > 1 else 0.0


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix, by eigendecomposition."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N x F), as in the FID
    (Heusel et al. 2017), in float64:
        |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)),
    with tr((S_a S_b)^(1/2)) = tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), a symmetric product whose
    eigenvalues `eigh` computes stably."""
    a, b = features_a.double().cpu(), features_b.double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrt_psd(cov_a)
    product = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((product + product.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root
    return float(distance.clamp(min=0))


def score_generator(generator: nn.Module, noise: torch.Tensor, asked: torch.Tensor | None, classifier: nn.Module,
                    features: Callable[[torch.Tensor], torch.Tensor], real_features: torch.Tensor,
                    confident: float) -> dict:
    """The generator's samples from `noise` (and the classes `asked` of a conditional one) judged
    by a classifier: its confidence, how often it reads the asked class, the Inception-Score
    analogue, the Fréchet distance of its features to the real ones, and the class fractions."""
    from .training import predict_proba

    images = sample(generator, noise, asked)
    probs = predict_proba(classifier, images).cpu()
    agreement = {"label_agreement": float((probs.argmax(1) == asked.cpu()).float().mean())} if asked is not None else {}
    return {
        **classifier_confidence(probs, confident),
        **agreement,
        "inception_score": inception_score(probs)[0],
        "frechet_distance": frechet_distance(features(images), real_features),
        "class_fractions": class_distribution(probs),
    }

