"""The CNN recipes' optimizers and learning-rate schedules: SGD (Nesterov or not), Adam, AdamW,
Adadelta with BatchNorm parameters apart; constant, step, one-cycle and cosine schedules; airbench's
look-ahead."""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_factor(schedule: str, step: int, total: int, warmup: float, steps_per_epoch: int, gamma: float) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of `total`."""
    if schedule == "constant":
        return 1.0
    if schedule == "step":  # pytorch/examples' MNIST: times gamma after each epoch
        return gamma ** (step // steps_per_epoch)
    warmup_steps = max(1, int(warmup * total))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    if schedule == "onecycle":  # linear warm-up, then linear decay to zero
        return 1 - progress
    return 0.5 * (1 + math.cos(math.pi * progress))  # cosine


def make_optimizer(model: nn.Module, p) -> torch.optim.Optimizer:
    """No weight decay on BatchNorm weights and biases (1-D parameters), whose learning rate is
    `p.bias_lr_scale` times the others' (airbench trains BatchNorm biases 64 times faster)."""
    trainable = [q for q in model.parameters() if q.requires_grad]
    groups = [{"params": [q for q in trainable if q.ndim > 1], "weight_decay": p.weight_decay},
              {"params": [q for q in trainable if q.ndim <= 1], "weight_decay": 0.0, "lr": p.lr * p.bias_lr_scale}]
    if p.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=p.lr, momentum=p.momentum, nesterov=p.nesterov and p.momentum > 0)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adadelta": torch.optim.Adadelta}[p.optimizer](
        groups, lr=p.lr)


class Lookahead:
    """airbench's look-ahead: every `every` steps the weights (and batch-norm statistics) move to an
    exponential moving average of themselves, whose decay rises as (step / total)^3 to `decay`; after
    the last step the network takes the average's weights."""

    def __init__(self, model: nn.Module, total_steps: int, every: int = 5, decay: float = 0.95**5):
        self.total, self.every, self.decay = total_steps, every, decay
        # the model's own tensors (state_dict shares their storage), each with its average
        self.pairs = [(v, v.clone()) for v in model.state_dict().values() if v.is_floating_point()]

    @torch.no_grad()
    def step(self, step: int) -> None:
        """After optimizer step number `step` (1-based)."""
        if step == self.total:
            decay = 1.0
        elif step % self.every == 0:
            decay = self.decay * (step / self.total) ** 3
        else:
            return
        for current, average in self.pairs:
            average.lerp_(current, 1 - decay)
            current.copy_(average)
