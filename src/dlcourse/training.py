"""Training on tensors held in memory: the course's loop without a DataLoader in the way."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def seed_everything(seed: int) -> torch.Generator:
    """Seed every generator, make CPU kernels deterministic, and return the generator for batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params.yaml: device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 pixels to floats in [0, 1], as torchvision's ToTensor does."""
    return images.to(device).float().div_(255)


def random_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices of random batches, epoch after epoch: each epoch is a fresh permutation."""
    while True:
        order = torch.randperm(n, generator=generator)
        yield from order.split(batch_size)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    # The slides' formula: minimise -log f(x)(y), i.e. NLL of the log-softmax (cross-entropy).
    "log_softmax_nll": lambda scores, y, reduction: F.cross_entropy(scores, y, reduction=reduction),
    # The slides' code: F.nll_loss applied to softmax probabilities, which minimises -f(x)(y).
    "softmax_nll": lambda scores, y, reduction: F.nll_loss(F.softmax(scores, dim=1), y, reduction=reduction),
}


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    return torch.cat([F.softmax(model(chunk), dim=1) for chunk in x.split(batch_size)])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = sum((model(xb).argmax(1) == yb).sum() for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return float(correct) / len(y)


@dataclass
class Curve:
    steps: list[int] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)


def train_iterations(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    *,
    iterations: int,
    batch_size: int,
    generator: torch.Generator,
    evaluate: Callable[[], float],
    eval_every: int,
) -> tuple[Curve, float]:
    """The course's loop: draw a random batch, step on its loss, repeat; evaluate every `eval_every`.

    Returns the test-accuracy curve (step 0 = before training) and the training wall time in
    seconds, evaluations excluded.
    """
    curve = Curve([0], [evaluate()])
    batches = random_batches(len(train_y), batch_size, generator)
    train_seconds = 0.0
    start = time.perf_counter()
    model.train()
    for step in range(1, iterations + 1):
        index = next(batches).to(train_x.device)
        loss = loss_fn(model(train_x[index]), train_y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % eval_every == 0 or step == iterations:
            train_seconds += time.perf_counter() - start
            curve.steps.append(step)
            curve.test_accuracy.append(evaluate())
            model.train()
            start = time.perf_counter()
    return curve, train_seconds
