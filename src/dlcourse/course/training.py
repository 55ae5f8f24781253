"""Training on tensors held in memory: the course's loop without a DataLoader in the way."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import progress
from .data import to_float
from .divergence import check_finite_loss, check_finite_weights
from .optimizers import Lookahead, lr_factor, make_optimizer


def seed_everything(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Seed every random-number generator and return the one for batches. On the CPU, kernels are made
    deterministic (byte-identical results on one machine); on a GPU, speed comes first: cuDNN
    picks its fastest kernels, and results agree across runs within a tolerance only."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    on_gpu = torch.device(device).type == "cuda"
    # The eager flag that torch.use_deterministic_algorithms sets: that function also configures
    # torch.compile's inductor, whose import costs every stage 1.5 s of start-up, and no stage compiles.
    torch._C._set_deterministic_algorithms(not on_gpu, warn_only=True)
    torch.backends.cudnn.benchmark = on_gpu
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


def random_batches(n: int, batch_size: int, rng: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices of random batches, epoch after epoch: each epoch is a fresh permutation."""
    while True:
        order = torch.randperm(n, generator=rng)
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
    rng: torch.Generator,
    evaluate: Callable[[], float],
    eval_every: int,
    label: str | None = None,
) -> tuple[Curve, float]:
    """The course's loop: draw a random batch, step on its loss, repeat; evaluate every `eval_every`.

    Returns the test-accuracy curve (step 0 = before training) and the training wall time in
    seconds, evaluations excluded. With a `label` (the stage's), its progress on stderr.
    """
    curve = Curve([0], [evaluate()])
    batches = random_batches(len(train_y), batch_size, rng)
    train_seconds = 0.0
    start = time.perf_counter()
    model.train()
    with progress.bar(label or "", iterations, "step", enabled=label is not None) as bar:
        for step in range(1, iterations + 1):
            index = next(batches).to(train_x.device)
            loss = loss_fn(model(train_x[index]), train_y[index])
            check_finite_loss(loss.item(), f"at step {step} of {iterations}")  # before it is stepped on
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % eval_every == 0 or step == iterations:
                train_seconds += time.perf_counter() - start
                curve.steps.append(step)
                curve.test_accuracy.append(evaluate())
                model.train()
                start = time.perf_counter()
                bar.update(1, test_accuracy=curve.test_accuracy[-1])
            else:
                bar.update(1)
    check_finite_weights(model, f"after the last step ({iterations})")
    return curve, train_seconds


# --- epochs of a convolutional network, airbench-style ------------------------------------------

def augment(images: torch.Tensor, flip: bool, crop_padding: int, rng: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and random translations (crops of the reflect-padded image) of a
    whole uint8 N x C x H x W tensor at once, on its device."""
    n, _, h, w = images.shape
    if crop_padding:
        pad = crop_padding
        padded = F.pad(images.float(), (pad,) * 4, mode="reflect").to(torch.uint8)
        shift_y, shift_x = (torch.randint(0, 2 * pad + 1, (n,), generator=rng).to(images.device) for _ in "yx")
        shifted = torch.empty_like(images)
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                chosen = (shift_y == dy) & (shift_x == dx)
                shifted[chosen] = padded[chosen, :, dy : dy + h, dx : dx + w]
        images = shifted
    if flip:
        flipped = (torch.rand(n, generator=rng) < 0.5).to(images.device)
        images = torch.where(flipped[:, None, None, None], images.flip(3), images)
    return images


@torch.no_grad()
def tta_scores(model: nn.Module, x: torch.Tensor, tta: str) -> torch.Tensor:
    """Summed softmax outputs over airbench's test-time views: "none", the image alone; "flip", the image
    and its mirror image; "flip_translate", those plus, at half the weight, the image translated by one
    pixel up-left and down-right (reflect-padded), each with its mirror image."""
    def with_mirror(images):
        scores = model(images).softmax(1)
        return scores if tta == "none" else scores + model(images.flip(3)).softmax(1)

    scores = with_mirror(x)
    if tta == "flip_translate":
        h, w = x.shape[2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        scores = scores + (with_mirror(padded[:, :, :h, :w]) + with_mirror(padded[:, :, 2:, 2:])) / 2
    return scores


@torch.no_grad()
def accuracy_tta(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, tta: str, batch_size: int = 1000) -> float:
    """Test accuracy with the test-time augmentation `tta` (see `tta_scores`)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    for xb, yb in zip(x_uint8.split(batch_size), y.split(batch_size)):
        correct += (tta_scores(model, to_float(xb), tta).argmax(1) == yb).sum()
    return correct.item() / len(y)


def _epoch_steps(trained: nn.Module, model: nn.Module, stepping: tuple, images: torch.Tensor, labels: torch.Tensor,
                 order: torch.Tensor, p, perturb, world, bar: progress.Bar) -> torch.Tensor:
    """One epoch's optimisation steps over the uint8 `images` in `order` (`trained`: the model, or its
    DistributedDataParallel wrapper; `stepping`: the optimizer, its schedule and Lookahead or None):
    the sum of the batches' losses, left on the device."""
    optimizer, schedule, lookahead = stepping
    memory_format = torch.channels_last if p.channels_last else torch.contiguous_format
    loss_sum = torch.zeros((), device=labels.device)
    for batch in order.split(p.batch_size):
        bar.update()
        index = world.shard(batch) if world is not None else batch
        x = to_float(images[index]).contiguous(memory_format=memory_format)
        if perturb is not None:
            x = perturb(model, x, labels[index])
        with torch.autocast(labels.device.type, dtype=torch.bfloat16, enabled=p.bf16):
            scores = trained(x).float()
        loss = F.cross_entropy(scores, labels[index], label_smoothing=p.label_smoothing)
        if world is not None:  # DDP averages over processes: weighted, that is the global batch's mean
            loss = loss * world.loss_weight(len(index), len(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if lookahead:
            lookahead.step(schedule.last_epoch)
        loss_sum += loss.detach()
    return loss_sum


def _epoch_accuracy(model: nn.Module, test_x: torch.Tensor, test_y: torch.Tensor, p, last: bool,
                    device: torch.device) -> float:
    """The learning curve's point, under the training's autocast (bf16 halves the airnet's evaluation on
    CIFAR-10's test set); after the last epoch, the accuracy the stage reports, in float32 and with `p.tta`."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=p.bf16 and not last):
        return accuracy_tta(model, test_x, test_y, p.tta if last else "none")


def epoch_images(p, train_size: int) -> int:
    """The training images one epoch steps through: `p.epoch_images` of them drawn afresh each epoch (a
    quick look), or the whole training set (None)."""
    if p.epoch_images is None:
        return train_size
    if not p.batch_size <= p.epoch_images <= train_size:
        raise ValueError(f"epoch_images: {p.epoch_images} asked, of {train_size} training images in batches of "
                         f"{p.batch_size}: needs batch_size <= epoch_images <= the training images")
    return p.epoch_images


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    test_accuracy: float
    seconds: float  # training time of this epoch, evaluation excluded
    robust_accuracy: float | None = None  # adversarial training: the held-out check (robust.OverfittingWatch)


def train_epochs(model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, p, rng: torch.Generator,
                 on_epoch: Callable[[EpochRecord], None] = lambda record: None, world=None,
                 label: str | None = None, perturb=None) -> list[EpochRecord]:
    """Train on uint8 images held on the model's device; one test evaluation per epoch; with a
    `label` (the stage's), the main process's progress on stderr.

    The loop never waits for the device inside an epoch: the loss is summed on the device and
    read once per epoch.

    `world` (a `distributed.World`, duck-typed here so that the stages that never train on several
    processes do not depend on that module): each process trains on its shard of every global batch
    of `p.batch_size`; the same global batch, learning rate and gradient as one process. Only the main
    process evaluates, calls `on_epoch` and gets the records; the others get none.

    `perturb` (adversarial training, `robust.perturbation`): each batch is replaced by perturb(model, x, y).
    """
    device = train_y.device
    model.to(memory_format=torch.channels_last if p.channels_last else torch.contiguous_format)
    distributed = world is not None and world.distributed
    images = epoch_images(p, len(train_y))
    if distributed:
        world.check_batch_size(p.batch_size, images, "train_cnn")
    trained = world.wrap(model, device) if distributed else model
    steps_per_epoch = math.ceil(images / p.batch_size)
    total = p.epochs * steps_per_epoch
    optimizer = make_optimizer(model, p)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(p.schedule, step, total, p.warmup, steps_per_epoch, p.gamma))
    lookahead = Lookahead(model, total) if p.lookahead else None
    records = []
    shown = label is not None and (not distributed or world.is_main)
    bar = progress.Bar(label or "", total, "batch", "epoch", enabled=shown)
    for epoch in range(1, p.epochs + 1):
        start = time.perf_counter()
        trained.train()
        augmented = augment(train_x, p.flip, p.crop_padding, rng)
        order = torch.randperm(len(train_y), generator=rng)[:images].to(device)
        loss_sum = _epoch_steps(trained, model, (optimizer, schedule, lookahead), augmented, train_y, order, p,
                                perturb, world if distributed else None, bar)
        if distributed:
            loss_sum = world.sum(loss_sum) / world.size
        train_loss = loss_sum.item() / steps_per_epoch  # the epoch's one host sync
        # checked here, not per step, so that the loop never waits for the device inside an epoch
        check_finite_loss(train_loss, f"(the mean of epoch {epoch} of {p.epochs})")
        if epoch == p.epochs:
            check_finite_weights(model, f"after the last epoch ({p.epochs})")
        seconds = time.perf_counter() - start
        if distributed and not world.is_main:
            continue
        test_accuracy = _epoch_accuracy(model, test_x, test_y, p, epoch == p.epochs, device)
        record = EpochRecord(epoch, train_loss, test_accuracy, seconds)
        records.append(record)
        bar.epoch_done(epoch, p.epochs, train_loss=train_loss, test_accuracy=test_accuracy)
        on_epoch(record)
    bar.close()
    return records
