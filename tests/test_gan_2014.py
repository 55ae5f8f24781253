"""The 2014 GAN with its paper's recipe (Goodfellow et al.'s code): maxout units, dropout in the
discriminator, output biases from the data, the SGD schedule; and the loop's per-step schedule and
ProGAN's drift term, by value."""

import pytest
import torch

from dlcourse.course.gans.eras import build
from dlcourse.course.gans.gan2014 import Maxout, MlpDiscriminator, MlpGenerator, ShardedDropout
from dlcourse.course.gans.generative import Recipe, make_optimizers, schedule_step, train_gan
from dlcourse.course.gans.resume import load_checkpoint, save_checkpoint
from dlcourse.pipeline.params import SgdSchedule

SCHEDULE = SgdSchedule(lr_decay=1.5, lr_min=0.02, momentum_final=0.9, momentum_ramp_images=40)


def test_a_maxout_unit_is_the_largest_of_its_pieces():
    layer = Maxout(3, units=2, pieces=4)
    x = torch.randn(5, 3)
    pieces = layer.linear(x).view(5, 2, 4)
    assert torch.equal(layer(x), pieces.max(2).values)


def test_the_paper_sizes_at_width_75_and_its_uniform_initialisation():
    generator, discriminator = build("gan-2014", 100, 75)
    assert [m.out_features for m in generator.net if isinstance(m, torch.nn.Linear)] == [1200, 1200, 784]
    maxouts = [m for m in discriminator.net if isinstance(m, Maxout)]
    assert [(m.units, m.pieces) for m in maxouts] == [(240, 5), (240, 5)]
    assert [m.p for m in discriminator.net if isinstance(m, ShardedDropout)] == [0.2, 0.5, 0.5]
    assert generator.net[0].weight.abs().max() <= 0.05 and discriminator.net[2].linear.weight.abs().max() <= 0.005
    assert not any(m.bias.any() for m in generator.net if isinstance(m, torch.nn.Linear))


def test_the_generator_gives_the_papers_sigmoid_images_in_the_projects_range_starting_from_the_data_means():
    generator = MlpGenerator(latent_dim=4, width=2, image_shape=(1, 2, 2))
    images = torch.tensor([[[[0, 255], [51, 255]]], [[[0, 255], [153, 0]]]], dtype=torch.uint8)
    generator.init_from_data(images)
    mean = torch.tensor([0.001, 0.999, 0.4, 0.5])  # per pixel, clipped to [0.001, 0.999]
    assert torch.allclose(generator.net[-1].bias, torch.logit(mean), atol=1e-5)
    torch.nn.init.zeros_(generator.net[-1].weight)  # the biases alone: the mean image, in [-1, 1]
    assert torch.allclose(generator(torch.randn(3, 4)), (2 * mean - 1).view(1, 1, 2, 2).expand(3, 1, 2, 2), atol=1e-5)


def test_the_discriminator_reads_pixels_in_0_1_and_drops_units_only_while_training():
    discriminator = MlpDiscriminator(width=2, image_shape=(1, 2, 2))
    x = torch.rand(64, 1, 2, 2) * 2 - 1
    discriminator.eval()
    plain = torch.nn.Sequential(*[m for m in discriminator.net if not isinstance(m, ShardedDropout)])
    assert torch.allclose(discriminator(x), plain((x + 1) / 2).flatten())
    discriminator.train()
    torch.manual_seed(0)
    assert not torch.equal(discriminator(x), discriminator(x))


def test_dropout_keeps_units_with_its_probability_and_two_processes_drop_what_one_would():
    x = torch.ones(4000, 50)
    dropout = ShardedDropout(0.2)
    torch.manual_seed(0)
    one = dropout(x)
    assert set(one.unique().tolist()) == {0.0, 1.25} and abs((one > 0).float().mean().item() - 0.8) < 0.01
    for rank in (0, 1):  # each process's rows of the global batch: rank, rank + 2, ... (World.shard)
        dropout.noise_shard = (rank, 2)
        torch.manual_seed(0)
        assert torch.equal(dropout(x[rank::2]), one[rank::2])
    assert torch.equal(dropout.eval()(x), x)


def test_the_sgd_schedule_by_value():
    generator, discriminator = build("gan-2014", 4, 2)
    opt_g, opt_d = make_optimizers(generator, discriminator, (0.1, 0.05), (0.5, 0.0), "sgd")
    recipe = Recipe(sgd_schedule=SCHEDULE)
    expected = {0: (0.1, 0.05, 0.5), 1: (0.1 / 1.5, 0.05 / 1.5, 0.6), 2: (0.1 / 1.5**2, 0.05 / 1.5**2, 0.7),
                3: (0.1 / 1.5**3, 0.02, 0.8), 4: (0.02, 0.02, 0.9), 9: (0.02, 0.02, 0.9)}  # lr_min 0.02
    for step, (lr_g, lr_d, momentum) in expected.items():  # batches of 10 images: the ramp ends at step 4
        schedule_step(generator, discriminator, (opt_g, opt_d), recipe, step, 10, batch_size=10)
        assert opt_g.param_groups[0]["lr"] == pytest.approx(lr_g) and opt_d.param_groups[0]["lr"] == pytest.approx(lr_d)
        assert opt_g.param_groups[0]["momentum"] == pytest.approx(momentum)
        assert opt_d.param_groups[0]["momentum"] == pytest.approx(momentum)


def test_a_network_with_set_progress_is_told_the_fraction_of_training_done():
    seen = []

    class Growing(torch.nn.Linear):
        def set_progress(self, t):
            seen.append(t)

    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    for step in range(4):
        schedule_step(Growing(1, 1), torch.nn.Linear(1, 1), (opt,), Recipe(), step, 4, batch_size=2)
    assert seen == [0.0, 0.25, 0.5, 0.75]


def test_resuming_the_2014_recipe_equals_an_uninterrupted_run(tmp_path):
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    recipe = Recipe(sgd_schedule=SCHEDULE)
    kwargs = dict(recipe=recipe, epochs=2, epoch_images=8, batch_size=4, device="cpu")

    def networks():
        torch.manual_seed(0)
        generator, discriminator = build("gan-2014", 4, 2)
        generator.init_from_data(images)
        return (generator, discriminator, *make_optimizers(generator, discriminator, (0.1, 0.05), (0.5, 0.0), "sgd"))

    generator, discriminator, opt_g, opt_d = networks()
    torch.manual_seed(1)
    train_gan(generator, discriminator, opt_g, opt_d, images, rng=torch.Generator().manual_seed(0), **kwargs)
    expected = {**generator.state_dict(), **{f"D.{k}": v for k, v in discriminator.state_dict().items()}}
    assert opt_g.param_groups[0]["momentum"] == pytest.approx(0.5 + 0.4 * 12 / 40)  # 3 steps of 4 images before the last

    generator, discriminator, opt_g, opt_d = networks()
    rng = torch.Generator().manual_seed(0)
    torch.manual_seed(1)
    train_gan(generator, discriminator, opt_g, opt_d, images, rng=rng, **{**kwargs, "epochs": 1},
              on_epoch_end=lambda epoch, history: save_checkpoint(
                  tmp_path / "c.pt", epoch=epoch, generator=generator, discriminator=discriminator, opt_g=opt_g,
                  opt_d=opt_d, rng=rng, history=history))
    generator, discriminator, opt_g, opt_d = networks()
    rng = torch.Generator()
    epoch, history = load_checkpoint(tmp_path / "c.pt", generator=generator, discriminator=discriminator,
                                     opt_g=opt_g, opt_d=opt_d, rng=rng)
    train_gan(generator, discriminator, opt_g, opt_d, images, rng=rng, start_epoch=epoch, history=history, **kwargs)
    got = {**generator.state_dict(), **{f"D.{k}": v for k, v in discriminator.state_dict().items()}}
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


class ConstantCritic(torch.nn.Module):
    """Scores every image with the one learned number `score`: its gradients are known in closed form."""

    def __init__(self, score: float):
        super().__init__()
        self.score = torch.nn.Parameter(torch.tensor(score))

    def forward(self, x, labels=None):
        return self.score.expand(len(x))


class Fixed(torch.nn.Module):
    latent_dim, num_classes = 2, 0

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1, 1, 2, 2))

    def forward(self, z, labels=None):
        return self.bias.expand(len(z), 1, 2, 2)


@pytest.mark.parametrize("drift", [0.0, 0.5])
def test_the_drift_term_adds_its_weight_times_the_mean_squared_real_score(drift):
    """Wasserstein critic loss E[D(fake)] - E[D(real)] = 0 for a constant critic s, plus drift * s^2: the
    loss recorded is drift * s^2 and the critic's gradient 2 drift s."""
    critic, generator = ConstantCritic(3.0), Fixed()
    opt_d = torch.optim.SGD(critic.parameters(), lr=0.1)
    opt_g = torch.optim.SGD(generator.parameters(), lr=0.1)
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    history = train_gan(generator, critic, opt_g, opt_d, images, recipe=Recipe("wasserstein", drift_weight=drift),
                        epochs=1, epoch_images=4, batch_size=4, rng=torch.Generator().manual_seed(0), device="cpu")
    assert history.d_loss[0] == pytest.approx(drift * 9.0)
    assert critic.score.item() == pytest.approx(3.0 - 0.1 * 2 * drift * 3.0)
