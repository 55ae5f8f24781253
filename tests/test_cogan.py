"""The 2016 coupled GAN (cogan.py): two domains along the channels, layers really shared (one set of
weights, trained through either domain), unpaired training pairs, its grids, exact resumption, and
its scores domain by domain against values known by construction."""

import math

import pytest
import torch
from torch import nn

from dlcourse.course.gans import cogan
from dlcourse.course.gans.eras import Discriminator, Generator, build
from dlcourse.course.gans.generative import Recipe, make_optimizers, sample, train_gan
from dlcourse.course.gans.metrics import Judge, classifier_reading, pair_agreement, score_domains
from dlcourse.course.gans.resume import load_checkpoint, save_checkpoint

LATENT, WIDTH = 8, 4


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def coupled(seed: int = 0, shape=(1, 28, 28)):
    torch.manual_seed(seed)
    return build("cogan-2016", LATENT, WIDTH, shape)


def distinct_images(n: int, shape=(1, 28, 28), seed: int = 0) -> torch.Tensor:
    """n random uint8 images, no two alike and none the negative of another (odds below 1e-1000)."""
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# --- networks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_a_latent_vector_gives_one_image_per_domain_and_each_domain_its_scores(shape):
    generator, discriminator = coupled(shape=shape)
    images = generator(torch.randn(5, LATENT))
    channels = shape[0]
    assert images.shape == (5, 2 * channels, *shape[1:]) and images.min() >= -1 and images.max() <= 1
    assert not torch.equal(images[:, :channels], images[:, channels:])  # each domain its own last layer
    scores = discriminator(images)
    assert scores.shape == (10,)
    changed = images.clone()
    changed[:, channels:] = torch.rand_like(changed[:, channels:])  # domain B's images only
    after = discriminator(changed)
    assert torch.equal(after[:5], scores[:5]) and not torch.equal(after[5:], scores[5:])  # A's scores, then B's
    with pytest.raises(ValueError, match="images of 1 channels, not 2 domains of"):
        coupled(shape=(1, 28, 28))[1](torch.zeros(2, 1, 28, 28))


def test_the_shared_layers_are_one_set_of_weights():
    """A coupled network has the parameters of one DCGAN network plus the layers each domain has of its
    own, each counted once: the shared ones are the same Parameter objects for both domains."""
    generator, discriminator = coupled()
    single_g, single_d = Generator(LATENT, WIDTH), Discriminator(WIDTH, 0, (1, 28, 28), "none")
    assert count(generator) == count(single_g) + count(single_g.net[-2])  # + the second domain's last layer
    assert count(discriminator) == count(single_d) + count(single_d.features[0])  # + the second's first layer
    for network in (generator, discriminator):
        parameters = list(network.parameters())
        assert len({id(p) for p in parameters}) == len(parameters)


def train_through_domain_a(network: nn.Module, run) -> dict[str, torch.Tensor]:
    """One SGD step on a loss of domain A's outputs alone; the weights before it."""
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    optimizer = torch.optim.SGD(network.parameters(), lr=0.5)
    run().square().mean().backward()
    optimizer.step()
    return before


def test_a_step_through_domain_a_changes_what_domain_b_shares():
    generator, discriminator = coupled()
    z = torch.randn(6, LATENT)
    generator.eval()  # the batch statistics out of it: only the weights change domain B's images
    b_before = generator(z)[:, 1:].detach()
    before = train_through_domain_a(generator, lambda: generator(z)[:, :1])
    after = dict(generator.named_parameters())
    assert not torch.equal(after["shared.0.weight"], before["shared.0.weight"])
    assert not torch.equal(after["to_domain.0.0.weight"], before["to_domain.0.0.weight"])
    assert torch.equal(after["to_domain.1.0.weight"], before["to_domain.1.0.weight"])  # B's own layer untouched
    assert not torch.equal(generator(z)[:, 1:], b_before)  # ... yet B's images moved, through the shared layers

    images = torch.rand(6, 2, 28, 28) * 2 - 1
    b_scores = discriminator(images)[6:].detach()
    before = train_through_domain_a(discriminator, lambda: discriminator(images)[:6])
    after = dict(discriminator.named_parameters())
    assert torch.equal(after["from_domain.1.0.weight"], before["from_domain.1.0.weight"])
    assert not torch.equal(after["shared.0.weight"], before["shared.0.weight"])
    assert not torch.equal(discriminator(images)[6:], b_scores)


# --- data and grids -------------------------------------------------------------------------------

@pytest.mark.parametrize("n, shape", [(40, (1, 28, 28)), (41, (1, 28, 28)), (10, (3, 32, 32))])
def test_the_two_domains_are_unpaired_halves_digits_and_negatives(n, shape):
    images = distinct_images(n, shape)
    pairs = cogan.two_domains(images, seed=3)
    channels = shape[0]
    assert pairs.shape == (n // 2, 2 * channels, *shape[1:]) and pairs.dtype == torch.uint8
    index = {image.numpy().tobytes(): i for i, image in enumerate(images)}
    first = [index[pair[:channels].numpy().tobytes()] for pair in pairs]  # domain A: images as they are
    second = [index[(255 - pair[channels:]).numpy().tobytes()] for pair in pairs]  # domain B: their negatives
    assert len(set(first + second)) == 2 * (n // 2)  # two disjoint halves: no image is its own pair
    assert torch.equal(pairs, cogan.two_domains(images, seed=3))
    assert not torch.equal(pairs, cogan.two_domains(images, seed=4))


def test_the_pairs_are_in_an_order_of_their_own():
    """Domain B's order independent of domain A's: over 1000 pairs, B's image index does not follow A's (the
    correlation of an order tied to A's, e.g. image i with image i + N/2, is 1; of random pairs, |r| about
    0.03: -0.10 with this seed)."""
    n = 2000
    images = torch.arange(n, dtype=torch.int32).view(n, 1, 1, 1).expand(n, 1, 2, 2)  # pixels: the image's index
    pairs = cogan.two_domains(images, seed=0)
    first, second = pairs[:, 0, 0, 0].double(), (255 - pairs[:, 1, 0, 0]).double()
    assert abs(torch.corrcoef(torch.stack([first, second]))[0, 1].item()) < 0.2


def test_grids_show_each_pair_side_by_side():
    images = torch.arange(3 * 4 * 2 * 2, dtype=torch.float32).view(3, 4, 2, 2)  # 3 latent vectors, 2 domains of 2 channels
    shown = cogan.side_by_side(images)
    assert shown.shape == (6, 2, 2, 2)
    for i in range(3):
        assert torch.equal(shown[2 * i], images[i, :2]) and torch.equal(shown[2 * i + 1], images[i, 2:])
    assert torch.equal(cogan.side_by_side(images, domains=1), images)  # one domain: as they are


# --- training -------------------------------------------------------------------------------------

def test_one_training_step_changes_every_part_of_both_networks():
    generator, discriminator = coupled()
    opt_g, opt_d = make_optimizers(generator, discriminator, 2e-4, (0.5, 0.999))
    before = {f"{label}.{name}": p.detach().clone() for label, network in (("G", generator), ("D", discriminator))
              for name, p in network.named_parameters()}
    pairs = cogan.two_domains(distinct_images(16), seed=0)
    history = train_gan(generator, discriminator, opt_g, opt_d, pairs, recipe=Recipe("non_saturating"), epochs=1,
                        batch_size=8, rng=torch.Generator().manual_seed(0), device="cpu")
    assert len(history.g_loss) == 1 and all(math.isfinite(v) for v in history.g_loss + history.d_loss)
    after = {f"{label}.{name}": p for label, network in (("G", generator), ("D", discriminator))
             for name, p in network.named_parameters()}
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert unchanged == []  # both domains' own layers and the shared ones


def test_resuming_equals_an_uninterrupted_run(tmp_path):
    pairs = cogan.two_domains(distinct_images(32), seed=0)
    kwargs = dict(recipe=Recipe("non_saturating"), epoch_images=8, batch_size=4, device="cpu")

    def networks(seed):
        generator, discriminator = (net.to(memory_format=torch.channels_last) for net in coupled(seed))
        return generator, discriminator, *make_optimizers(generator, discriminator, 1e-3, (0.5, 0.999))

    def weights(generator, discriminator):
        return {**generator.state_dict(), **{f"D.{k}": v for k, v in discriminator.state_dict().items()}}

    generator, discriminator, opt_g, opt_d = networks(0)
    train_gan(generator, discriminator, opt_g, opt_d, pairs, epochs=2, rng=torch.Generator().manual_seed(0), **kwargs)
    expected = weights(generator, discriminator)

    generator, discriminator, opt_g, opt_d = networks(0)
    rng = torch.Generator().manual_seed(0)
    train_gan(generator, discriminator, opt_g, opt_d, pairs, epochs=1, rng=rng, **kwargs,
              on_epoch_end=lambda epoch, history: save_checkpoint(
                  tmp_path / "c.pt", epoch=epoch, generator=generator, discriminator=discriminator, opt_g=opt_g,
                  opt_d=opt_d, rng=rng, history=history))
    generator, discriminator, opt_g, opt_d = networks(99)
    rng = torch.Generator().manual_seed(5)
    epoch, history = load_checkpoint(tmp_path / "c.pt", generator=generator, discriminator=discriminator,
                                     opt_g=opt_g, opt_d=opt_d, rng=rng)
    train_gan(generator, discriminator, opt_g, opt_d, pairs, epochs=2, rng=rng, start_epoch=epoch, history=history,
              **kwargs)
    got = weights(generator, discriminator)
    assert got.keys() == expected.keys()
    assert [key for key in expected if not torch.equal(got[key], expected[key])] == []


# --- scoring --------------------------------------------------------------------------------------

class BrightnessClassifier(nn.Module):
    """Reads the digit k from an image of uniform brightness k / 9 in [0, 1]: logit_k = -1000 (m - k/9)^2,
    m the mean pixel, as a linear head on the features (m^2, m, 1)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 10, bias=False)
        k = torch.arange(10, dtype=torch.float32) / 9
        self.head.weight.data = -1000 * torch.stack([torch.ones(10), -2 * k, k ** 2], dim=1)

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return self.head(torch.stack([m ** 2, m, torch.ones_like(m)], dim=1))


class ConstructedCoupledGenerator(nn.Module):
    """z = (a, b): domain A an image of brightness a / 9 (digit a), domain B the negative of one of brightness
    b / 9 (digit b's negative); in [-1, 1]."""

    latent_dim, num_classes = 2, 0

    def forward(self, z, labels=None):
        a = (2 * z[:, 0] / 9 - 1).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)
        b = -(2 * z[:, 1] / 9 - 1).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)
        return torch.cat([a, b], dim=1)


def test_each_domain_is_judged_as_digits_and_pairs_agree_where_the_digits_match():
    generator = ConstructedCoupledGenerator()
    digits = torch.arange(20) % 10
    negated_digits = torch.where(torch.arange(20) < 15, digits, (digits + 1) % 10)  # the last 5 pairs differ
    noise = torch.stack([digits, negated_digits], dim=1).float()
    views = cogan.judged_domains(generator)
    assert list(views) == ["digits", "negatives"]
    as_generated = sample(generator, noise)
    assert torch.equal(sample(views["digits"], noise), as_generated[:, :1])
    assert torch.allclose(sample(views["negatives"], noise), 1 - as_generated[:, 1:])  # negated back
    assert torch.allclose(sample(views["negatives"], noise).mean(dim=(1, 2, 3)), negated_digits / 9)

    classifier = BrightnessClassifier()
    read = classifier_reading(classifier, "head")
    _, real = read(torch.rand(30, 1, 4, 4))
    judge = Judge(classifier, read, real, confident=0.9, nearest_neighbours=3, real={})
    scores = score_domains(generator, noise, judge)
    assert scores["pair_agreement"] == pytest.approx(0.75)
    assert scores["domains"]["digits"]["class_fractions"] == pytest.approx([0.1] * 10)
    expected = torch.bincount(negated_digits, minlength=10).double() / 20
    assert scores["domains"]["negatives"]["class_fractions"] == pytest.approx(expected.tolist())
    assert scores["domains"]["negatives"]["confident_fraction"] == 1.0
    assert set(scores["domains_judged_as"]) == {"digits", "negatives"}
    given = {"frechet_distance": 1.5}
    assert score_domains(generator, noise, judge, given)["domains"]["digits"] is given
    assert pair_agreement(classifier, as_generated[:, :1], as_generated[:, :1]) == 1.0
