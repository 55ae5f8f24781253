"""The GAN timeline's eras: shapes, one training step of each recipe, exact resumption, and the
methods' own formulas (gradient penalty, spectral norm, style modulation) against values computed
by hand or by a reference formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlcourse.course.gans import eras as gan_eras
from dlcourse.course.gans.eras import (
    ERAS, Discriminator, build, check_gan_buildable, discriminator_loss, generator_loss, gradient_penalty, r1_penalty,
)
from dlcourse.course.gans.stylegan import EqualLinear, modulated_conv2d
from dlcourse.course.gans.generative import Recipe, exponential_moving_average, make_optimizers, train_gan
from dlcourse.course.gans.resume import load_checkpoint, save_checkpoint

LATENT, WIDTH = 8, 4
# Each era's recipe as params.yaml gives it (optimizer, betas, loss, critic steps, penalty), tiny.
RECIPES = {
    "gan-2014": ("sgd", (0.5, 0.0), Recipe("non_saturating")),
    "dcgan-2015": ("adam", (0.5, 0.999), Recipe("non_saturating")),
    "cogan-2016": ("adam", (0.5, 0.999), Recipe("non_saturating")),
    "wgan-gp-2017": ("adam", (0.0, 0.9), Recipe("wasserstein", 5, "gradient", 10.0)),
    "progan-2017": ("adam", (0.0, 0.99), Recipe("wasserstein", 1, "gradient", 10.0, 1, 0.001)),
    "sngan-2018": ("adam", (0.5, 0.999), Recipe("hinge")),
    "stylegan-2019": ("adam", (0.0, 0.99), Recipe("non_saturating", 1, "r1", 1.0, 2)),
    "dcgan-conditional": ("adam", (0.5, 0.999), Recipe("non_saturating")),
}


def tiny_data(n: int = 16, shape=(1, 28, 28)):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_each_era_generates_images_of_the_dataset_and_scores_them(era, shape):
    torch.manual_seed(0)
    generator, discriminator = build(era, LATENT, WIDTH, shape)
    labels = torch.tensor([3, 7, 1])
    images = generator(torch.randn(3, LATENT), labels)
    domains = ERAS[era].domains  # a coupled GAN's images: its domains' channels, one by one
    assert images.shape == (3, domains * shape[0], *shape[1:]) and images.min() >= -1 and images.max() <= 1
    assert discriminator(images, labels).shape == (3 * domains,)
    check_gan_buildable(era, era, LATENT, WIDTH, "cifar10" if shape[0] == 3 else "mnist")


def test_an_era_that_does_not_fit_is_refused_naming_the_entry():
    with pytest.raises(ValueError, match="unknown GAN era 'gan-2016'"):
        build("gan-2016", LATENT, WIDTH)
    with pytest.raises(ValueError, match=r"train_gan.x: the dcgan-2015 networks .* do not build or run on mnist"):
        gan_eras.check_gan_buildable("train_gan.x", "dcgan-2015", LATENT, 0, "mnist")


@pytest.mark.parametrize("era", ERAS)
def test_one_training_step_of_each_recipe_changes_both_networks(era):
    torch.manual_seed(0)
    generator, discriminator = build(era, LATENT, WIDTH)
    optimizer, betas, recipe = RECIPES[era]
    opt_g, opt_d = make_optimizers(generator, discriminator, (1e-3, 1e-3), betas, optimizer)
    before_g = [p.detach().clone() for p in generator.parameters()]
    before_d = [p.detach().clone() for p in discriminator.parameters()]
    images, labels = tiny_data(8 * recipe.critic_steps, (ERAS[era].domains, 28, 28))
    history = train_gan(generator, discriminator, opt_g, opt_d, images, labels, recipe=recipe, epochs=1,
                        epoch_images=8, batch_size=8, rng=torch.Generator().manual_seed(0), device="cpu")
    assert len(history.g_loss) == 1 and all(math.isfinite(v) for v in history.g_loss + history.d_loss)
    assert any(not torch.equal(a, b) for a, b in zip(before_g, generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, discriminator.parameters()))
    with pytest.raises(ValueError, match="needs batch_size <= epoch_images <= the training images"):
        train_gan(generator, discriminator, opt_g, opt_d, images, labels, recipe=recipe, epochs=1,
                  epoch_images=len(images) + 1, batch_size=8, rng=torch.Generator(), device="cpu")


class Killed(Exception):
    pass


@pytest.mark.parametrize("era", sorted(RECIPES))
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["default", "channels_last"])
def test_resuming_each_era_equals_an_uninterrupted_run(tmp_path, era, layout):
    """Critic steps, the penalty's random mixing, spectral norm's power-iteration vectors, StyleGAN's
    per-pixel noise (torch's global generator) and its EMA: all in the checkpoint. Bit for bit, so each
    era's training is also a function of its seeds (test_pipeline's forced rerun of the stage byte for
    byte covers one era, whose outputs every era writes the same way), in either memory layout of
    the networks (`train_gan.<entry>.channels_last`)."""
    images, labels = tiny_data(16, (ERAS[era].domains, 28, 28))
    optimizer, betas, recipe = RECIPES[era]
    kwargs = dict(recipe=recipe, epochs=2, epoch_images=8, batch_size=4, device="cpu")

    def networks(seed):
        torch.manual_seed(seed)
        generator, discriminator = (net.to(memory_format=layout) for net in build(era, LATENT, WIDTH))
        return (generator, discriminator, *make_optimizers(generator, discriminator, 1e-3, betas, optimizer),
                exponential_moving_average(generator, 0.9))

    torch.manual_seed(1)
    generator, discriminator, opt_g, opt_d, ema = networks(0)
    rng = torch.Generator().manual_seed(0)
    torch.manual_seed(1)
    train_gan(generator, discriminator, opt_g, opt_d, images, labels, ema=ema, rng=rng, **kwargs)
    expected = {**ema.state_dict(), **{f"D.{k}": v for k, v in discriminator.state_dict().items()}}

    generator, discriminator, opt_g, opt_d, ema = networks(0)
    rng = torch.Generator().manual_seed(0)
    torch.manual_seed(1)

    def checkpoint_and_kill(epoch, history):  # killed after epoch 1 of 2: ProGAN's schedule is that of 2 epochs
        save_checkpoint(tmp_path / "c.pt", epoch=epoch, generator=generator, discriminator=discriminator, opt_g=opt_g,
                        opt_d=opt_d, rng=rng, history=history, ema=ema)
        raise Killed

    with pytest.raises(Killed):
        train_gan(generator, discriminator, opt_g, opt_d, images, labels, ema=ema, rng=rng,
                  on_epoch_end=checkpoint_and_kill, **kwargs)
    generator, discriminator, opt_g, opt_d, ema = networks(99)
    rng = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    epoch, history = load_checkpoint(tmp_path / "c.pt", generator=generator, discriminator=discriminator,
                                     opt_g=opt_g, opt_d=opt_d, rng=rng, ema=ema)
    train_gan(generator, discriminator, opt_g, opt_d, images, labels, ema=ema, rng=rng, start_epoch=epoch,
              history=history, **kwargs)
    got = {**ema.state_dict(), **{f"D.{k}": v for k, v in discriminator.state_dict().items()}}
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_losses_against_their_formulas():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sigmoid = torch.sigmoid
    assert discriminator_loss("non_saturating", real, fake).item() == pytest.approx(
        (-torch.log(sigmoid(real)).mean() - torch.log(1 - sigmoid(fake)).mean()).item())
    assert generator_loss("non_saturating", fake).item() == pytest.approx(-torch.log(sigmoid(fake)).mean().item())
    assert discriminator_loss("wasserstein", real, fake).item() == pytest.approx(-1.25 - 0.5)
    assert generator_loss("wasserstein", fake).item() == pytest.approx(1.25)
    # hinge: mean(max(0, 1 - [2, -1])) + mean(max(0, 1 + [0.5, -3])) = (0 + 2) / 2 + (1.5 + 0) / 2
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(1.75)
    with pytest.raises(ValueError, match="unknown GAN loss 'l2'"):
        discriminator_loss("l2", real, fake)


class LinearCritic(torch.nn.Module):
    """D(x) = <a, x> + (x . x) * c: its input gradient a + 2 c x is known in closed form."""

    def __init__(self, a: torch.Tensor, c: float = 0.0):
        super().__init__()
        self.a, self.c = a, c

    def forward(self, x, labels=None):
        flat = x.flatten(1)
        return flat @ self.a + self.c * flat.square().sum(1)


def test_gradient_penalty_against_a_hand_computed_value():
    a = torch.tensor([3.0, 4.0, 0.0, 0.0])  # |a| = 5: every gradient of a linear critic has norm 5
    real, fake = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    assert gradient_penalty(LinearCritic(a), real, fake, torch.tensor([0.3, 0.9])).item() == pytest.approx((5 - 1) ** 2)
    # With the quadratic term, the gradient at x_hat = eps * 1 is a + 2 c eps 1: its norm by hand.
    c, eps = 0.5, torch.tensor([0.0, 1.0])
    norms = [math.sqrt((3 + 2 * c * e) ** 2 + (4 + 2 * c * e) ** 2 + 2 * (2 * c * e) ** 2) for e in eps.tolist()]
    expected = sum((n - 1) ** 2 for n in norms) / 2
    assert gradient_penalty(LinearCritic(a, c), real, fake, eps).item() == pytest.approx(expected)
    # R1: the squared gradient norm on real images, |a + 2c x|^2 at x = 1.
    assert r1_penalty(LinearCritic(a, c), real).item() == pytest.approx(4 ** 2 + 5 ** 2 + 1 + 1)


def test_the_gradient_penalty_is_differentiable_for_the_critic():
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    wrapped = lambda x, labels=None: critic(x).flatten()
    penalty = gradient_penalty(wrapped, torch.rand(5, 1, 2, 2), torch.rand(5, 1, 2, 2), torch.rand(5))
    penalty.backward()
    assert critic[1].weight.grad is not None and critic[1].weight.grad.abs().sum() > 0


def test_spectral_norm_makes_every_critic_layer_1_lipschitz():
    torch.manual_seed(0)
    critic = Discriminator(8, 0, (1, 28, 28), "spectral").train()
    images = torch.randn(4, 1, 28, 28)
    layers = [critic.features[0], critic.features[2], critic.head]
    with torch.no_grad():
        for layer in layers:  # weights far from 1-Lipschitz, as training can make them
            layer.parametrizations.weight.original.mul_(10)
    for _ in range(30):  # each training-mode call runs one power iteration
        critic(images)
    for layer in layers:
        weight = layer.weight.detach().flatten(1)  # the normalised weight, as the layer applies it
        original = layer.parametrizations.weight.original.detach().flatten(1)
        assert torch.linalg.matrix_norm(original, ord=2) > 1.5  # there was something to normalise
        assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, abs=1e-3)


def test_modulated_convolution_against_the_reference_formula():
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(3, 4, 5, 5, generator=g), torch.randn(6, 4, 3, 3, generator=g)
    style = torch.rand(3, 4, generator=g) + 0.5
    for demodulate in (True, False):
        got = modulated_conv2d(x, weight, style, demodulate)
        for n in range(3):  # one sample at a time, the paper's formula written out
            w = weight * style[n].view(1, 4, 1, 1)  # w'_ijk = s_i w_ijk
            if demodulate:
                w = w / torch.sqrt((w ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)  # w''_ijk = w'_ijk / sigma_j
            torch.testing.assert_close(got[n], F.conv2d(x[n:n + 1], w, padding=1)[0])
    # Demodulation undoes any scaling of the style: the output does not depend on its size.
    torch.testing.assert_close(modulated_conv2d(x, weight, 3 * style), modulated_conv2d(x, weight, style))


def test_the_style_generator_maps_noise_and_draws_per_pixel_noise():
    torch.manual_seed(0)
    generator, _ = build("stylegan-2019", LATENT, WIDTH)
    z = torch.randn(2, LATENT)
    assert torch.equal(generator(z), generator(z))  # the noise strengths start at 0: no effect yet
    for conv in generator.convs:
        torch.nn.init.constant_(conv.noise_strength, 0.1)
    assert not torch.equal(generator(z), generator(z))  # fresh per-pixel noise at each call
    assert len([m for m in generator.mapping if isinstance(m, EqualLinear)]) == 4
