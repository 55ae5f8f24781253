"""ProGAN (progan.py): the growing schedule, the fade-ins of both networks, pixel norm, the minibatch
standard deviation and the equalised learning rate by value, and its training with the paper's recipe:
the resolution growing across epochs, exact resumption, the progress kept in checkpoints."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlcourse.course.gans.eras import build
from dlcourse.course.gans.stylegan import EqualLinear
from dlcourse.course.gans.generative import Recipe, make_optimizers, train_gan
from dlcourse.course.gans.progan import (
    EqualConv2d, MinibatchStdDev, PixelNorm, ProgressiveDiscriminator, ProgressiveGenerator, schedule,
)
from dlcourse.course.gans.resume import load_checkpoint, save_checkpoint

LATENT, WIDTH = 8, 4
PAPER = Recipe("wasserstein", 1, "gradient", 10.0, 1, 0.001)  # WGAN-GP, one critic step, drift 0.001
STABLE = {0: 0.1, 1: 0.5, 2: 0.9}  # a progress in each level's stable phase
FADE = {1: 0.2, 2: 0.6}  # where each level's fade-in starts (alpha 0); it ends 0.2 later


def networks(shape=(1, 28, 28), seed: int = 0):
    torch.manual_seed(seed)
    return ProgressiveGenerator(LATENT, WIDTH, shape), ProgressiveDiscriminator(WIDTH, shape)


def at(network, progress: float):
    network.set_progress(progress)
    return network


def tiny_images(n: int = 16):
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("progress, expected", [
    (0.0, (0, 1.0)), (0.1, (0, 1.0)), (0.1999, (0, 1.0)),  # stable at H/4
    (0.2, (1, 0.0)), (0.25, (1, 0.25)), (0.3, (1, 0.5)), (0.39, (1, 0.95)),  # H/2 fades in
    (0.4, (1, 1.0)), (0.5, (1, 1.0)),  # stable at H/2
    (0.6, (2, 0.0)), (0.7, (2, 0.5)), (0.75, (2, 0.75)),  # H fades in
    (0.8, (2, 1.0)), (0.99, (2, 1.0)), (1.0, (2, 1.0)),  # stable at H, done
])
def test_the_schedule_by_value(progress, expected):
    level, alpha = schedule(progress)
    assert level == expected[0] and alpha == pytest.approx(expected[1], abs=1e-9)


def test_each_step_falls_in_its_phase_through_the_float32_buffer():
    """The training loop's progress step / steps, held in a float32 buffer: 5 epochs of 375 steps, one
    phase each, every boundary step (375, 750, ...) in the phase it opens."""
    generator, _ = networks()
    steps = 5 * 375
    for step in range(steps):
        level, alpha = at(generator, step / steps).stage
        phase = 2 * level - (alpha < 1)
        assert phase == step * 5 // steps, step
        if step % 375 == 0 and phase % 2:
            assert alpha == 0.0  # a fade-in starts from the previous level's images exactly


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_full_size_images_and_one_score_each_at_every_level(shape):
    generator, discriminator = networks(shape)
    z = torch.randn(5, LATENT)
    for progress in (0.1, 0.3, 0.5, 0.7, 0.9):
        images = at(generator, progress)(z)
        assert images.shape == (5, *shape) and images.min() >= -1 and images.max() <= 1
        assert at(discriminator, progress)(images).shape == (5,)
    for level, progress in STABLE.items():  # H/4 and H/2: nearest upsampling, blocks of 4 x 4 and 2 x 2 pixels
        images, factor = at(generator, progress)(z), 2 ** (2 - level)
        assert torch.equal(images, F.interpolate(images[..., ::factor, ::factor], scale_factor=factor))
        assert not torch.equal(images, F.interpolate(images[..., ::2 * factor, ::2 * factor], scale_factor=2 * factor))


@pytest.mark.parametrize("level", [1, 2])
def test_the_generator_fades_in_from_the_previous_level_upsampled(level):
    """alpha 0: the previous level's images (upsampled); alpha 1: the new block's; in between, the blend."""
    generator, _ = networks()
    z = torch.randn(4, LATENT)
    with torch.no_grad():
        older, newer = at(generator, STABLE[level - 1])(z), at(generator, STABLE[level])(z)
        assert not torch.allclose(older, newer)
        assert torch.equal(at(generator, FADE[level])(z), older)
        assert torch.equal(at(generator, FADE[level] + 0.2)(z), newer)
        for alpha in (0.25, 0.5, 0.75):
            torch.testing.assert_close(at(generator, FADE[level] + 0.2 * alpha)(z), (1 - alpha) * older + alpha * newer)


def _input_of_the_next_block(discriminator, images, progress, level):
    """The features D's block for level - 1 gets at `progress`: the blend of the two paths during a fade-in."""
    seen = []
    hook = discriminator.blocks[level - 1].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    at(discriminator, progress)(images)
    hook.remove()
    return seen[0]


@pytest.mark.parametrize("level", [1, 2])
def test_the_discriminator_fades_in_from_the_previous_level_downsampled(level):
    _, discriminator = networks()
    images = torch.rand(8, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        # alpha 0: the half-size images' path, i.e. the previous level's critic; alpha 1: the new block's
        torch.testing.assert_close(at(discriminator, FADE[level])(images), at(discriminator, STABLE[level - 1])(images))
        assert torch.equal(at(discriminator, FADE[level] + 0.2)(images), at(discriminator, STABLE[level])(images))
        older = _input_of_the_next_block(discriminator, images, FADE[level], level)
        newer = _input_of_the_next_block(discriminator, images, FADE[level] + 0.2, level)
        assert not torch.allclose(older, newer)
        for alpha in (0.25, 0.5, 0.75):
            blended = _input_of_the_next_block(discriminator, images, FADE[level] + 0.2 * alpha, level)
            torch.testing.assert_close(blended, (1 - alpha) * older + alpha * newer)


def test_the_discriminator_sees_its_resolution_only():
    """Full-size images average-pooled to the level: detail below it changes no score."""
    _, discriminator = networks()
    images = torch.rand(8, 1, 28, 28) * 2 - 1
    for level, factor in ((0, 4), (1, 2)):
        coarse = F.interpolate(F.avg_pool2d(images, factor), scale_factor=factor)  # the same means, no detail
        torch.testing.assert_close(at(discriminator, STABLE[level])(coarse), discriminator(images))
    assert not torch.allclose(at(discriminator, STABLE[2])(coarse), discriminator(images))


def test_pixel_norm_gives_every_pixel_a_unit_mean_square():
    x = torch.randn(3, 6, 5, 5) * torch.rand(3, 1, 5, 5) * 10
    torch.testing.assert_close(PixelNorm()(x).square().mean(dim=1), torch.ones(3, 5, 5))
    vector = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # mean square 12.5
    torch.testing.assert_close(PixelNorm()(vector).flatten(), torch.tensor([3.0, 4.0]) / math.sqrt(12.5))


def test_the_generator_normalises_every_convolution_s_features():
    generator, _ = networks()
    seen = []
    for module in generator.modules():
        if isinstance(module, PixelNorm):
            module.register_forward_hook(lambda module, args, out: seen.append(out))
    at(generator, 1.0)(torch.randn(2, LATENT) * 7)
    assert len(seen) == 1 + 2 + 2 * 2  # the latent vector, the dense layer and the conv at H/4, two convs per level
    for out in seen:  # up to the 1e-8 added to the mean square, felt by the rare pixel with tiny features
        torch.testing.assert_close(out.square().mean(dim=1), torch.ones_like(out[:, 0]), rtol=0, atol=1e-4)


def test_minibatch_standard_deviation_on_a_constructed_batch():
    """8 images, groups of 4 images 2 apart: {0, 2, 4, 6} and {1, 3, 5, 7}. Channel 1 is 3 x channel 0, so
    the features' standard deviations are s and 3 s: their mean 2 s, at every pixel of the group's images."""
    a = torch.tensor([0.0, 10.0, 2.0, 10.0, 4.0, 10.0, 6.0, 10.0])
    x = torch.stack([a, 3 * a], dim=1)[:, :, None, None].expand(8, 2, 2, 2)
    out = MinibatchStdDev()(x)
    assert out.shape == (8, 3, 2, 2) and torch.equal(out[:, :2], x)
    s = math.sqrt(5)  # population standard deviation of 0, 2, 4, 6
    expected = torch.tensor([2 * s, 1e-4] * 4)  # the constant group: sqrt(0 + 1e-8) for each feature
    torch.testing.assert_close(out[:, 2], expected[:, None, None].expand(8, 2, 2))
    # 6 images: groups of 3; 2 images: one group of 2
    assert MinibatchStdDev()(torch.randn(6, 2, 2, 2)).shape == (6, 3, 2, 2)
    two = MinibatchStdDev()(torch.tensor([1.0, 3.0]).view(2, 1, 1, 1))
    torch.testing.assert_close(two[:, 1].flatten(), torch.tensor([1.0, 1.0]))


def test_minibatch_standard_deviation_of_every_other_image_is_the_whole_batch_s():
    """Two processes of DistributedDataParallel hold images rank, rank + 2, ...: the same groups as one process."""
    x = torch.randn(16, 3, 4, 4)
    layer = MinibatchStdDev()
    for rank in range(2):
        torch.testing.assert_close(layer(x[rank::2]), layer(x)[rank::2])


def test_equalised_learning_rate_scales_the_stored_weights_at_run_time():
    torch.manual_seed(0)
    conv, x = EqualConv2d(16, 32, 3), torch.randn(2, 16, 5, 5)
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.05)  # stored N(0, 1)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * math.sqrt(2 / (16 * 9)), conv.bias, padding=1))
    linear, v = EqualLinear(16, 32, gain=math.sqrt(2)), torch.randn(2, 16)
    torch.testing.assert_close(linear(v), v @ (linear.weight * math.sqrt(2 / 16)).T + linear.bias)
    generator, discriminator = networks()
    for network in (generator, discriminator):
        plain = [m for m in network.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert not plain  # every layer equalised


def test_every_parameter_gets_a_gradient_at_every_stage():
    """DistributedDataParallel needs one for each: zero for the layers not grown yet."""
    generator, discriminator = networks()
    for progress in (0.1, 0.3, 0.5, 0.7, 0.9):
        generator.zero_grad(set_to_none=True)
        discriminator.zero_grad(set_to_none=True)
        at(discriminator, progress)(at(generator, progress)(torch.randn(4, LATENT))).sum().backward()
        assert all(p.grad is not None for p in [*generator.parameters(), *discriminator.parameters()])
        assert torch.count_nonzero(generator.to_rgb[2].weight.grad) == 0 or progress > 0.6


def test_training_with_the_paper_s_recipe_grows_across_epochs():
    generator, discriminator = networks()
    opt_g, opt_d = make_optimizers(generator, discriminator, 1e-3, (0.0, 0.99))
    before = [[p.detach().clone() for p in net.parameters()] for net in (generator, discriminator)]
    stages = []
    history = train_gan(generator, discriminator, opt_g, opt_d, tiny_images(), recipe=PAPER, epochs=2, epoch_images=8,
                        batch_size=4, rng=torch.Generator().manual_seed(0), device="cpu",
                        on_epoch_end=lambda epoch, history: stages.append((generator.stage, discriminator.stage)))
    assert all(math.isfinite(v) for v in history.g_loss + history.d_loss) and len(history.g_loss) == 4
    # steps 0..3 of 4: progress 0, 0.25, 0.5, 0.75; each epoch ends at its last step's
    assert stages == [((1, 0.25), (1, 0.25)), ((2, 0.75), (2, 0.75))]
    assert generator.progress.item() == discriminator.progress.item() == 0.75
    for old, net in zip(before, (generator, discriminator)):
        assert any(not torch.equal(a, b) for a, b in zip(old, net.parameters()))


class Killed(Exception):
    pass


def test_resuming_equals_an_uninterrupted_run(tmp_path):
    """2 epochs at once, or killed after the first and resumed from its checkpoint in fresh networks (fully
    grown until loaded): the same weights and progress, bit for bit."""
    images, kwargs = tiny_images(), dict(recipe=PAPER, epochs=2, epoch_images=8, batch_size=4, device="cpu")

    def fresh(seed):
        generator, discriminator = networks(seed=seed)
        return generator, discriminator, *make_optimizers(generator, discriminator, 1e-3, (0.0, 0.99))

    generator, discriminator, opt_g, opt_d = fresh(0)
    train_gan(generator, discriminator, opt_g, opt_d, images, rng=torch.Generator().manual_seed(0), **kwargs)
    expected = {**generator.state_dict(), **{f"D.{k}": v for k, v in discriminator.state_dict().items()}}

    generator, discriminator, opt_g, opt_d = fresh(0)
    rng = torch.Generator().manual_seed(0)

    def checkpoint_and_kill(epoch, history):  # a run of 2 epochs (its schedule's) killed after the first
        save_checkpoint(tmp_path / "c.pt", epoch=epoch, generator=generator, discriminator=discriminator,
                        opt_g=opt_g, opt_d=opt_d, rng=rng, history=history)
        raise Killed

    with pytest.raises(Killed):
        train_gan(generator, discriminator, opt_g, opt_d, images, rng=rng, on_epoch_end=checkpoint_and_kill, **kwargs)
    generator, discriminator, opt_g, opt_d = fresh(99)
    rng = torch.Generator().manual_seed(5)
    epoch, history = load_checkpoint(tmp_path / "c.pt", generator=generator, discriminator=discriminator,
                                     opt_g=opt_g, opt_d=opt_d, rng=rng)
    assert epoch == 1 and generator.stage == discriminator.stage == (1, 0.25)
    train_gan(generator, discriminator, opt_g, opt_d, images, rng=rng, start_epoch=epoch, history=history, **kwargs)
    got = {**generator.state_dict(), **{f"D.{k}": v for k, v in discriminator.state_dict().items()}}
    assert got.keys() == expected.keys() and "progress" in got and "D.progress" in got
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_a_checkpoint_s_progress_is_restored_by_load_state_dict():
    """score-gan loads each epoch's checkpoint into a fresh (fully grown) network: it must draw as then."""
    trained, _ = networks()
    at(trained, 0.3)
    fresh, _ = build("progan-2017", LATENT, WIDTH)
    assert fresh.stage == (2, 1.0) and fresh.progress.item() == 1.0
    fresh.load_state_dict(trained.state_dict())
    assert fresh.stage == (1, 0.5) and fresh.progress.item() == pytest.approx(0.3)
    z = torch.randn(3, LATENT)
    with torch.no_grad():
        assert torch.equal(fresh(z), trained(z))
