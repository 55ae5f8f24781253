"""Adversarial training (course/robust.py): the training examples stay in the eps-ball, a step on them
trains, catastrophic overfitting is caught on a constructed history and the last good weights come back,
and the robust accuracy counts an image only if no restart fools the network."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.course import attacks, robust
from dlcourse.course.models import Classifier, StridedNet

EPS = 0.3


def tiny_batch(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Classifier("stridednet", {"widths": [4, 8], "hidden": 16}, channels=1)


@pytest.mark.parametrize("method", ["fgsm_rs", "pgd"])
def test_training_examples_stay_in_the_ball_and_in_the_pixel_range_and_raise_the_loss(method):
    x, y = tiny_batch()
    model = network()
    perturb = robust.perturbation(method, EPS, 1.25 * EPS if method == "fgsm_rs" else 2.5 * EPS / 5, 5,
                                  torch.Generator().manual_seed(1))
    x_adv = perturb(model, x, y)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert model.training  # the model's mode is left as it was
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


@pytest.mark.parametrize("method", ["fgsm_rs", "pgd"])
def test_the_radius_rises_linearly_over_the_ramp_then_stays(method):
    x, y = tiny_batch()
    model = network()
    perturb = robust.perturbation(method, EPS, 1.25 * EPS, 3, torch.Generator().manual_seed(1), ramp_batches=4)
    reach = [float((perturb(model, x, y) - x).abs().max()) for _ in range(6)]
    for k, r in enumerate(reach, start=1):
        assert r <= EPS * min(1.0, k / 4) + 1e-6  # batch k within k / 4 of eps, then eps
    assert reach[0] > EPS / 4 - 0.02 and reach[4] > EPS - 0.02  # and the ball reached at each size
    # no ramp: the method's own examples at eps, from the same draws
    unramped = robust.perturbation(method, EPS, 0.1, 3, torch.Generator().manual_seed(2))(model, x, y)
    direct = (robust.fgsm_random_start(model, x, y, EPS, 0.1, torch.Generator().manual_seed(2)) if method == "fgsm_rs"
              else robust.pgd_training_example(model, x, y, EPS, 0.1, 3, torch.Generator().manual_seed(2)))
    assert torch.equal(unramped, direct)


def test_fgsm_random_start_is_the_papers_step_from_an_unclipped_random_start():
    """Against Wong et al. 2020's code written out by hand, the same random start drawn: the gradient
    is taken at x + delta before any clipping to [0, 1]; only the final image is clipped."""
    x, y = tiny_batch(8)
    x[:, :, :10] = 0.0  # a black background, as MNIST's: there a clipped start would differ
    model = network()
    got = robust.fgsm_random_start(model, x, y, EPS, 0.375, torch.Generator().manual_seed(3))
    delta = EPS * (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) - 1)
    delta.requires_grad_(True)
    F.cross_entropy(model(x + delta), y, reduction="sum").backward()
    delta = (delta + 0.375 * delta.grad.sign()).clamp(-EPS, EPS)
    torch.testing.assert_close(got, (x + delta).clamp(0, 1).detach())
    # the start clipped first, as PGD's is, gives other examples
    start = robust.project(x + EPS * (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) - 1), x, EPS)
    clipped_first = robust.project(start + 0.375 * robust.input_gradient(model, start, y).sign(), x, EPS)
    assert not torch.equal(clipped_first, got)


def test_a_step_on_adversarial_examples_lowers_their_loss():
    x, y = tiny_batch(64)
    model = network()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    rng = torch.Generator().manual_seed(0)
    x_adv = robust.fgsm_random_start(model, x, y, EPS, 1.25 * EPS, rng)
    before = F.cross_entropy(model(x_adv), y).item()
    for _ in range(20):
        optimizer.zero_grad()
        F.cross_entropy(model(x_adv), y).backward()
        optimizer.step()
    assert F.cross_entropy(model(x_adv), y).item() < before


@pytest.mark.parametrize("history, drop, expected", [
    ([0.5, 0.7, 0.8, 0.85], 0.2, None),  # rising: nothing to catch
    ([0.5, 0.7, 0.8, 0.61], 0.2, None),  # 19 points below the best: within the allowance
    ([0.5, 0.7, 0.8, 0.59], 0.2, 4),  # 21 points below: caught at epoch 4
    ([0.5, 0.8, 0.0, 0.9], 0.2, 3),  # the first fall counts, whatever comes after
    ([0.9], 0.2, None),
])
def test_catastrophic_overfitting_is_a_fall_below_the_best_so_far(history, drop, expected):
    assert robust.overfitting_epoch(history, drop) == expected


def test_the_watch_keeps_the_best_weights_before_overfitting_and_puts_them_back(monkeypatch):
    model = network()
    checks = iter([0.5, 0.8, 0.1, 0.95])  # overfitting at epoch 3; epoch 4's recovery is not trusted
    monkeypatch.setattr(robust, "robust_accuracy", lambda *args, **kwargs: next(checks))
    watch = robust.OverfittingWatch(model, *tiny_batch(4), EPS, 2, 0.1, 0.2, torch.Generator())
    weights = {}
    for epoch in range(1, 5):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(epoch)
        weights[epoch] = watch(epoch)
    assert watch.overfitting_epoch == 3 and watch.keep() == 2
    assert all(bool((parameter == 2).all()) for parameter in model.parameters())


def test_without_overfitting_the_last_epoch_is_kept(monkeypatch):
    model = network()
    checks = iter([0.5, 0.8, 0.7])
    monkeypatch.setattr(robust, "robust_accuracy", lambda *args, **kwargs: next(checks))
    watch = robust.OverfittingWatch(model, *tiny_batch(4), EPS, 2, 0.1, 0.2, torch.Generator())
    for epoch in range(1, 4):
        watch(epoch)
    last = [parameter.clone() for parameter in model.parameters()]
    assert watch.keep() == 3 and all(torch.equal(a, b) for a, b in zip(last, model.parameters()))


def test_an_image_is_robust_only_if_no_restart_fools_the_network():
    x, y = tiny_batch(32)
    model = network()
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)  # every image classified right when clean
    one = robust.robust_correct(model, x, y, EPS, 3, 0.1, 1, torch.Generator().manual_seed(0))
    many = robust.robust_correct(model, x, y, EPS, 3, 0.1, 4, torch.Generator().manual_seed(0))
    assert bool((many <= one).all())  # the first restart is the single run's: more restarts only fool more
    assert robust.robust_accuracy(model, x, y, 0.0, 3, 0.0, 2) == 1.0  # eps 0: nothing moves


def test_restarts_that_attack_only_the_standing_images_give_every_image_its_own_verdict():
    """The reference: every restart attacks every image from its random start; an image is robust only if
    none fools it. Attacking only the images still standing must give the same verdicts, image by image."""
    x, y = tiny_batch(64)
    model = network()
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    eps, steps, step, restarts = 0.15, 3, 0.06, 4
    rng = torch.Generator().manual_seed(1)
    reference = torch.ones(len(y), dtype=torch.bool)
    for _ in range(restarts):
        attacked = attacks.pgd(model, x, y, eps, steps, step, random_start=True, rng=rng)
        with torch.no_grad():
            reference &= model(attacked).argmax(1) == y
    assert 0 < int(reference.sum()) < len(y)  # a case where restarts matter, both ways
    assert torch.equal(robust.robust_correct(model, x, y, eps, steps, step, restarts, torch.Generator().manual_seed(1)),
                       reference)


def test_apgd_fools_a_standard_network_and_counts_the_clean_errors():
    x, y = tiny_batch(32)
    model = network()
    with torch.no_grad():
        right = model(x).argmax(1)
    wrong = (right + 1) % 10
    assert not robust.apgd_correct(model, x, wrong, EPS, 5, seed=0).any()  # wrong when clean: never robust
    assert robust.apgd_correct(model, x, right, EPS, 20, seed=0).float().mean() < 0.5


def test_the_strided_network_is_the_papers():
    net = StridedNet()
    assert [m.__class__.__name__ for m in [*net.features, *net.head]] == [
        "Conv2d", "ReLU", "Conv2d", "ReLU", "Flatten", "Linear", "ReLU", "Linear"]
    assert sum(p.numel() for p in net.parameters()) == 166_406  # Wong et al.'s mnist_net
