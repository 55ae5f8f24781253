"""Tests that fail when a training loop does not learn, or when the GAN's loss is not the paper's: the
epoch loop on tiny separable data (accuracy far above chance, a falling loss), and each GAN recipe's
critic step checked by value against a linear critic, whose input gradient is its weight vector
everywhere, so that the loss, the penalties, their weights and schedule have a closed form."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fakedata import digits
from torch import nn

from dlcourse.course.gans.generative import Recipe, make_optimizers, train_gan
from dlcourse.course.models import Classifier
from dlcourse.course.training import seed_everything, train_epochs


def test_the_epoch_loop_learns_separable_digits():
    rng = seed_everything(0)
    images, labels = digits(600, np.random.default_rng(0))
    x, y = torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.astype(np.int64))
    p = SimpleNamespace(epochs=4, epoch_images=None, batch_size=50, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=False,
                        weight_decay=0.0, schedule="constant", warmup=0.0, gamma=1.0, label_smoothing=0.0, flip=False,
                        crop_padding=0, tta="none", channels_last=False, bf16=False, lookahead=False, bias_lr_scale=1.0)
    model = Classifier("mlp", {"in_shape": [1, 28, 28], "hidden": [32]}, channels=1)
    model.fit_input_statistics(x, True)
    records = train_epochs(model, x[:500], y[:500], x[500:], y[500:], p, rng)
    losses = [r.train_loss for r in records]
    assert records[-1].test_accuracy >= 0.9  # chance: 0.1
    assert losses[-1] < 0.5 * losses[0] and losses == sorted(losses, reverse=True)


# --- the GAN's critic step, by value ----------------------------------------------------------

SHAPE = (1, 2, 2)  # four pixels


class LinearCritic(nn.Module):
    """D(x) = w . x + b: its gradient with respect to any input is w."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float32))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, x, labels=None):
        return x.flatten(1) @ self.w + self.b


class ConstantGenerator(nn.Module):
    """Every sample is tanh(c): 0 at c = 0, whatever the latent vector."""

    latent_dim, num_classes = 2, 0

    def __init__(self):
        super().__init__()
        self.c = nn.Parameter(torch.zeros(SHAPE))

    def forward(self, z, labels=None):
        return torch.tanh(self.c).expand(len(z), *SHAPE)


W0 = [0.3, -0.2, 0.5, 0.1]
LR = 0.1


def critic_after(recipe: Recipe) -> list[float]:
    """The critic's weights and bias after one generator step of `recipe` (its critic steps before
    it), SGD without momentum, on real images of +1 everywhere (uint8 255) and fake images of 0."""
    generator, critic = ConstantGenerator(), LinearCritic(W0)
    opt_g, opt_d = make_optimizers(generator, critic, LR, (0.0, 0.0), "sgd")
    images = torch.full((4, *SHAPE), 255, dtype=torch.uint8)
    train_gan(generator, critic, opt_g, opt_d, images, recipe=recipe, epochs=1, batch_size=4,
              rng=torch.Generator().manual_seed(0), device="cpu")
    return [*critic.w.tolist(), critic.b.item()]


def norm(w: list[float]) -> float:
    return math.sqrt(sum(wi * wi for wi in w))


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def expected(recipe: Recipe) -> list[float]:
    """The same steps in closed form, weights then bias. Real x = 1 and fake = 0, so D(x) = sum(w) + b
    and D(fake) = b, and the fake terms' gradients in w vanish. In (w, b): wasserstein
    E[D(fake)] - E[D(x)] gives (-1, -1 + 1); hinge E[relu(1 - D(x))] + E[relu(1 + D(fake))] gives
    (-1, -1) while 1 - D(x) > 0, plus (0, +1) while 1 + D(fake) > 0; non-saturating softplus(-D(x)) +
    softplus(D(fake)) gives (-s, -s + sigmoid(D(fake))), s = sigmoid(-D(x)); the gradient penalty
    (|w| - 1)^2 gives 2 (|w| - 1) w / |w|; R1 times gamma / 2 * every gives gamma * every * w, on
    every `every`-th critic step."""
    w, b = list(W0), 0.0
    for update in range(recipe.critic_steps):
        real, fake = sum(w) + b, b
        if recipe.loss == "wasserstein":
            gw, gb = -1.0, 0.0
        elif recipe.loss == "hinge":
            gw = -1.0 if 1 - real > 0 else 0.0
            gb = gw + (1.0 if 1 + fake > 0 else 0.0)
        else:
            gw = -sigmoid(-real)
            gb = gw + sigmoid(fake)
        gradient = [gw] * 4
        if recipe.penalty == "gradient":
            gradient = [g + recipe.penalty_weight * 2 * (norm(w) - 1) * wi / norm(w) for g, wi in zip(gradient, w)]
        if recipe.penalty == "r1" and update % recipe.penalty_every == 0:
            gradient = [g + recipe.penalty_weight * recipe.penalty_every * wi for g, wi in zip(gradient, w)]
        w, b = [wi - LR * g for wi, g in zip(w, gradient)], b - LR * gb
    return [*w, b]


@pytest.mark.parametrize("recipe", [
    Recipe("wasserstein"),
    Recipe("hinge"),
    Recipe("non_saturating"),
    Recipe("wasserstein", critic_steps=5, penalty="gradient", penalty_weight=10.0),  # WGAN-GP's
    Recipe("wasserstein", critic_steps=1, penalty="gradient", penalty_weight=0.5),
    Recipe("non_saturating", critic_steps=1, penalty="r1", penalty_weight=10.0, penalty_every=1),
    Recipe("non_saturating", critic_steps=4, penalty="r1", penalty_weight=1.0, penalty_every=2),  # lazy R1
    Recipe("non_saturating", critic_steps=3, penalty="r1", penalty_weight=0.3, penalty_every=4),
    Recipe("hinge", critic_steps=2),
], ids=lambda r: f"{r.loss}-{r.critic_steps}-{r.penalty}-{r.penalty_weight:g}-{r.penalty_every}")
def test_the_critic_step_is_the_papers_by_value(recipe):
    assert critic_after(recipe) == pytest.approx(expected(recipe), rel=1e-5, abs=1e-6)


def test_the_closed_form_tells_the_recipes_apart():
    """The check above would catch a dropped penalty or a wrong weight: their closed forms differ."""
    plain = expected(Recipe("wasserstein", critic_steps=5))
    assert plain != pytest.approx(expected(Recipe("wasserstein", critic_steps=5, penalty="gradient", penalty_weight=10.0)))
    r1 = Recipe("non_saturating", critic_steps=4, penalty="r1", penalty_weight=1.0, penalty_every=2)
    assert expected(r1) != pytest.approx(expected(Recipe("non_saturating", critic_steps=4)))
    assert expected(r1) != pytest.approx(
        expected(Recipe("non_saturating", critic_steps=4, penalty="r1", penalty_weight=1.0, penalty_every=1)))
