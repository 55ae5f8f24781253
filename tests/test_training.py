import io

import pytest
import torch
import torch.nn.functional as F

from dlcourse.models import Reseau1, Reseau2, parameter_count
from dlcourse.training import LOSSES, accuracy, random_batches, seed_everything, train_iterations


def test_course_networks_shapes_and_sizes():
    x = torch.rand(5, 1, 28, 28)
    assert Reseau1()(x).shape == (5, 10) and parameter_count(Reseau1()) == 784 * 10 + 10
    assert Reseau2()(x).shape == (5, 10)
    assert parameter_count(Reseau2()) == (9 * 32 + 32) + (9 * 32 * 64 + 64) + (9216 * 128 + 128) + (128 * 10 + 10)


def test_losses_match_the_slides():
    scores, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    p = F.softmax(scores, 1)[torch.arange(6), y]
    torch.testing.assert_close(LOSSES["log_softmax_nll"](scores, y, "sum"), -p.log().sum())
    torch.testing.assert_close(LOSSES["softmax_nll"](scores, y, "sum"), -p.sum())


def test_random_batches_cover_each_epoch_once():
    batches = random_batches(10, 4, torch.Generator().manual_seed(0))
    epoch = torch.cat([next(batches) for _ in range(3)])
    assert sorted(epoch.tolist()) == list(range(10))


def _train(seed: int):
    generator = seed_everything(seed)
    y = torch.randint(0, 2, (300,))
    x = 0.3 * torch.rand(300, 1, 28, 28)
    x[y == 1, :, :14] += 0.7  # class 1: a bright top half
    model = Reseau1()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    curve, _ = train_iterations(
        model, optimizer, lambda s, t: LOSSES["log_softmax_nll"](s, t, "sum"), x, y,
        iterations=40, batch_size=60, generator=generator, evaluate=lambda: accuracy(model, x, y), eval_every=10,
    )
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return curve, buffer.getvalue()


def test_training_learns_and_is_deterministic():
    curve, weights = _train(0)
    assert curve.steps == [0, 10, 20, 30, 40]
    assert curve.test_accuracy[-1] > max(0.8, curve.test_accuracy[0])
    again, weights_again = _train(0)
    assert weights == weights_again and curve == again
    assert _train(1)[1] != weights
