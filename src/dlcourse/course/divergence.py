"""Training that blew up, caught before anything is written: a loss or a weight that is NaN or
infinite stops the stage with an error naming where it diverged and the params to suspect."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class DivergedError(FloatingPointError):
    """Training diverged: a loss or a weight is NaN or infinite. Raised before anything is written."""


def check_finite_weights(model: nn.Module, when: str) -> None:
    """Raise DivergedError naming the first parameter or buffer of `model` that holds NaN or infinity."""
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
                raise DivergedError(f"the weight {name} holds NaN or infinity {when}")


@contextmanager
def divergence_explained(stage: str, suspects: dict[str, object]) -> Iterator[None]:
    """Turn a DivergedError of the training inside into the stage's error: which stage, where it
    diverged, and the params that usually cause it (`suspects`, by their params.yaml key). The
    SystemExit ends the stage's MLflow run as FAILED, before any model, metric or version exists."""
    try:
        yield
    except DivergedError as exc:
        shown = ", ".join(f"{key}={value!r}" for key, value in suspects.items())
        raise SystemExit(f"{stage}: training diverged: {exc}; nothing was written, logged as a model or registered. "
                         f"Suspicious params (params.yaml): {shown}; lower the learning rate(s) first") from None


def check_gan_epoch(g_loss: list[float], d_loss: list[float], epoch: int, epochs: int,
                    networks: dict[str, nn.Module]) -> None:
    """After GAN epoch `epoch` (1-based) of `epochs`, before anything of it is written: every step's
    generator and discriminator losses so far finite (the first that is not named by its generator
    step), and after the last epoch every weight of `networks` ({role: network}). Called from the
    stage's end-of-epoch callback: generative.py and eras.py, whose code the checkpoints
    fingerprint, stay as they are."""
    for step, (g_value, d_value) in enumerate(zip(g_loss, d_loss), start=1):
        if not (math.isfinite(g_value) and math.isfinite(d_value)):
            raise DivergedError(f"loss is {g_value} (generator), {d_value} (discriminator) at generator step {step} "
                                f"(epoch {epoch} of {epochs})")
    if epoch == epochs:
        for role, network in networks.items():
            check_finite_weights(network, f"in the {role} after the last epoch ({epochs})")


def check_finite_loss(loss: float, where: str) -> None:
    if not math.isfinite(loss):
        raise DivergedError(f"loss is {loss} {where}")
