"""The GAN library: shapes and ranges, a tiny training run, exact resumption, and the scores
checked against hand-computed values (the eras of the timeline: test_gan_eras.py)."""

import math

import pytest
import torch

from dlcourse.files import load_torch
from dlcourse.course.training import predict_proba
from dlcourse.course.gans.eras import Discriminator, Generator
from dlcourse.course.gans.metrics import (
    class_distribution, classifier_confidence, frechet_distance, classifier_reading, inception_score,
)
from dlcourse.course.gans.generative import (
    GanHistory, exponential_moving_average, fixed_noise, interpolate, make_optimizers, sample, sample_labels,
    sampler_weights, train_gan,
)
from dlcourse.course.gans.resume import ResumeError, check_resumable, load_checkpoint, run_fingerprint, save_checkpoint

LATENT, WIDTH = 8, 4


def tiny_images(n: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def tiny_labels(n: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))


def tiny_gan(seed: int = 0, num_classes: int = 0):
    torch.manual_seed(seed)
    generator, discriminator = Generator(LATENT, WIDTH, num_classes), Discriminator(WIDTH, num_classes)
    return (generator, discriminator, *make_optimizers(generator, discriminator, 2e-4, (0.5, 0.999)))


def test_shapes_and_ranges():
    generator, discriminator, *_ = tiny_gan()
    z = torch.randn(5, LATENT) * 10  # large inputs saturate the Tanh: the range must still hold
    raw = generator(z)
    assert raw.shape == (5, 1, 28, 28) and raw.min() >= -1 and raw.max() <= 1
    images = sample(generator, z)
    generator.eval()
    with torch.no_grad():
        assert torch.allclose(images, (generator(z) + 1) / 2, atol=1e-6)  # the Tanh range mapped onto [0, 1]
    assert discriminator(raw).shape == (5,)


def test_sample_restores_mode_and_fixed_noise_is_reproducible():
    generator, *_ = tiny_gan()
    generator.train()
    sample(generator, fixed_noise(3, LATENT, seed=1))
    assert generator.training
    torch.manual_seed(123)  # the global generator must not matter
    assert torch.equal(fixed_noise(3, LATENT, seed=1), fixed_noise(3, LATENT, seed=1))
    assert not torch.equal(fixed_noise(3, LATENT, seed=1), fixed_noise(3, LATENT, seed=2))


def test_two_steps_of_training_give_finite_losses():
    generator, discriminator, opt_g, opt_d = tiny_gan()
    before = [p.clone() for p in generator.parameters()]
    epochs_seen = []
    history = train_gan(generator, discriminator, opt_g, opt_d, tiny_images(20), epochs=1, batch_size=8,
                        rng=torch.Generator().manual_seed(0), device="cpu",
                        on_epoch_end=lambda epoch, _h: epochs_seen.append(epoch))
    assert len(history.g_loss) == len(history.d_loss) == 2  # 20 images, full batches of 8
    assert all(math.isfinite(v) for v in history.g_loss + history.d_loss)
    assert epochs_seen == [1] and len(history.epoch_seconds) == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, generator.parameters()))


@pytest.mark.parametrize("num_classes, ema_decay", [(0, 0.0), (10, 0.9)])
def test_resuming_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path, num_classes, ema_decay):
    images, labels = tiny_images(24), tiny_labels(24)
    kwargs = dict(epochs=3, batch_size=8, device="cpu")

    def networks(seed: int = 0):
        generator, discriminator, opt_g, opt_d = tiny_gan(seed, num_classes)
        ema = exponential_moving_average(generator, ema_decay) if ema_decay else None
        return generator, discriminator, opt_g, opt_d, ema

    def weights(generator, discriminator, ema) -> dict:
        return {**generator.state_dict(), **{f"D.{k}": v for k, v in discriminator.state_dict().items()},
                **({f"EMA.{k}": v for k, v in ema.state_dict().items()} if ema else {})}

    generator, discriminator, opt_g, opt_d, ema = networks()
    full = train_gan(generator, discriminator, opt_g, opt_d, images, labels, ema=ema,
                     rng=torch.Generator().manual_seed(0), **kwargs)
    expected = weights(generator, discriminator, ema)

    # The "killed" run: stops after epoch 1, leaving its checkpoint behind.
    generator, discriminator, opt_g, opt_d, ema = networks()
    rng = torch.Generator().manual_seed(0)
    checkpoint = tmp_path / "gan.ckpt"
    train_gan(generator, discriminator, opt_g, opt_d, images, labels, ema=ema, rng=rng, **{**kwargs, "epochs": 1},
              on_epoch_end=lambda epoch, history: save_checkpoint(
                  checkpoint, epoch=epoch, generator=generator, discriminator=discriminator,
                  opt_g=opt_g, opt_d=opt_d, rng=rng, history=history, ema=ema))

    # A fresh process: differently initialised networks, fresh optimisers and generator.
    generator, discriminator, opt_g, opt_d, ema = networks(seed=99)
    rng = torch.Generator().manual_seed(12345)
    epoch, history = load_checkpoint(checkpoint, generator=generator, discriminator=discriminator,
                                     opt_g=opt_g, opt_d=opt_d, rng=rng, ema=ema)
    assert epoch == 1 and len(history.g_loss) == 3
    resumed = train_gan(generator, discriminator, opt_g, opt_d, images, labels, ema=ema, rng=rng, start_epoch=epoch,
                        history=history, **kwargs)
    got = weights(generator, discriminator, ema)

    assert got.keys() == expected.keys()
    for key in expected:  # byte-identical, BatchNorm running statistics included
        assert torch.equal(got[key], expected[key]), key
    assert resumed.g_loss == full.g_loss and resumed.d_loss == full.d_loss
    assert not list(tmp_path.glob(".*.part"))  # the atomic write left nothing behind


def test_interpolation_endpoints_are_the_samples_of_z0_and_z1():
    generator, *_ = tiny_gan()
    z0, z1 = fixed_noise(2, LATENT, seed=3)
    ends = sample(generator, torch.stack([z0, z1]))
    for method in ("slerp", "linear"):
        path = interpolate(generator, z0, z1, steps=7, method=method)
        assert path.shape == (7, 1, 28, 28)
        torch.testing.assert_close(path[0], ends[0])
        torch.testing.assert_close(path[-1], ends[1])
    torch.testing.assert_close(interpolate(generator, z0, z0, steps=3)[1], ends[0])  # degenerate slerp


def test_inception_score_hand_computed_cases():
    one_hot = torch.eye(10)
    # All samples the same confident prediction: p(y|x) = p(y), KL = 0, score exp(0) = 1.
    assert inception_score(one_hot[[3] * 50])[0] == pytest.approx(1.0)
    # Confident one-hot predictions spread evenly over K classes: KL = log K, score K.
    assert inception_score(one_hot.repeat(5, 1))[0] == pytest.approx(10.0)
    assert inception_score(one_hot[[0, 1, 2, 3]].repeat(3, 1))[0] == pytest.approx(4.0)
    # Uniform p(y|x): no information, score 1; two splits of the even case: 10 in each, std 0.
    assert inception_score(torch.full((20, 10), 0.1))[0] == pytest.approx(1.0)
    assert inception_score(one_hot.repeat(4, 1), splits=2) == pytest.approx((10.0, 0.0))
    # Half the samples one-hot on class 0, half on class 1: p(y) = (1/2, 1/2), KL = log 2.
    assert inception_score(one_hot[[0, 1]].repeat(6, 1))[0] == pytest.approx(2.0)


def test_confidence_and_class_distribution():
    probs = torch.tensor([[0.95, 0.05, 0.0], [0.2, 0.8, 0.0], [0.0, 0.1, 0.9], [0.0, 0.0, 1.0]])
    assert classifier_confidence(probs) == pytest.approx({"confident_fraction": 0.75, "mean_confidence": 0.9125})
    assert class_distribution(probs) == pytest.approx([0.25, 0.25, 0.5])


def test_frechet_distance_hand_computed_cases():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # Two Gaussians with diagonal covariances: the closed form is
    # |mu_a - mu_b|^2 + sum_i (sigma_a,i - sigma_b,i)^2. Build samples whose empirical mean and
    # covariance are exactly those: standardise, whiten, then scale and shift.
    base = torch.randn(2000, 3, generator=g, dtype=torch.float64)
    base = base - base.mean(0)
    base = base @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(base.T))).T  # identity covariance
    mu_a, sd_a = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 2.0, 0.5])
    mu_b, sd_b = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([3.0, 1.0, 0.5])
    expected = (1 + 0 + 4) + ((1 - 3) ** 2 + (2 - 1) ** 2 + 0)  # = 10
    assert frechet_distance(base * sd_a + mu_a, base * sd_b + mu_b) == pytest.approx(expected, rel=1e-9)
    # Symmetric, and a pure shift adds exactly |shift|^2.
    assert frechet_distance(base * sd_b + mu_b, base * sd_a + mu_a) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a + 2.0) == pytest.approx(6 * 4.0, rel=1e-6)


def test_frechet_distance_agrees_with_scipy_on_full_covariances():
    from scipy import linalg
    g = torch.Generator().manual_seed(1)
    a = torch.randn(300, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    b = torch.randn(300, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64) + 0.3
    cov_a, cov_b = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    reference = (float(((a.mean(0) - b.mean(0)) ** 2).sum()) + cov_a.trace() + cov_b.trace()
                 - 2 * linalg.sqrtm(cov_a @ cov_b).real.trace())
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-8)


def test_classifier_reading_gives_the_probabilities_and_the_input_of_the_named_layer_in_one_pass():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    images = torch.rand(7, 1, 28, 28)
    probabilities, features = classifier_reading(model, "3", batch_size=3)(images)
    torch.testing.assert_close(features, model[:3](images))
    assert torch.equal(probabilities, predict_proba(model, images, batch_size=3))  # the same bytes as the classifier's
    assert not model[3]._forward_hooks  # the hook is removed afterwards


def test_history_round_trips_through_a_checkpoint(tmp_path):
    generator, discriminator, opt_g, opt_d = tiny_gan()
    rng = torch.Generator().manual_seed(5)
    history = GanHistory([1.0, 2.0], [3.0, 4.0], [0.5])
    save_checkpoint(tmp_path / "c.pt", epoch=4, generator=generator, discriminator=discriminator,
                    opt_g=opt_g, opt_d=opt_d, rng=rng, history=history)
    other_rng = torch.Generator()
    epoch, loaded = load_checkpoint(tmp_path / "c.pt", generator=generator, discriminator=discriminator,
                                    opt_g=opt_g, opt_d=opt_d, rng=other_rng)
    assert (epoch, loaded) == (4, GanHistory([1.0, 2.0], [3.0, 4.0]))  # wall times stay out of the checkpoint
    assert torch.equal(other_rng.get_state(), rng.get_state())


def test_a_conditional_gan_draws_the_digit_it_is_asked_for():
    generator, discriminator, *_ = tiny_gan(num_classes=10)
    z = fixed_noise(1, LATENT, seed=0).repeat(10, 1)
    asked = sample_labels(10, 10)
    assert asked.tolist() == list(range(10)) and sample_labels(25, 10).bincount().tolist() == [3] * 5 + [2] * 5
    images = sample(generator, z, asked)
    assert images.shape == (10, 1, 28, 28)
    assert not torch.equal(images[0], images[1])  # same noise, another digit: another image
    real = tiny_images(4).float() / 127.5 - 1
    assert not torch.equal(discriminator(real, torch.tensor([0, 0, 0, 0])), discriminator(real, torch.tensor([1, 1, 1, 1])))
    with pytest.raises(ValueError, match="needs the images' labels"):
        train_gan(generator, discriminator, *make_optimizers(generator, discriminator, 2e-4, (0.5, 0.999)),
                  tiny_images(8), epochs=1, batch_size=4, rng=torch.Generator(), device="cpu")


def test_the_moving_average_is_what_samples_come_from(tmp_path):
    generator, discriminator, opt_g, opt_d = tiny_gan()
    ema = exponential_moving_average(generator, 0.5)
    train_gan(generator, discriminator, opt_g, opt_d, tiny_images(24), ema=ema, epochs=1, batch_size=8,
              rng=torch.Generator().manual_seed(0), device="cpu")
    save_checkpoint(tmp_path / "c.pt", epoch=1, generator=generator, discriminator=discriminator, opt_g=opt_g,
                    opt_d=opt_d, rng=torch.Generator(), history=GanHistory(), ema=ema)
    state = load_torch(tmp_path / "c.pt")
    averaged = sampler_weights(state)
    assert averaged.keys() == generator.state_dict().keys()
    assert all(torch.equal(averaged[k], v) for k, v in ema.module.state_dict().items())
    assert not torch.equal(averaged["net.0.weight"], generator.state_dict()["net.0.weight"])
    del state["ema"]
    assert sampler_weights(state) is state["generator"]
    torch.save(state, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="no moving-average generator"):
        load_checkpoint(tmp_path / "plain.pt", generator=generator, discriminator=discriminator, opt_g=opt_g,
                        opt_d=opt_d, rng=torch.Generator(), ema=ema)


def fingerprinted_checkpoint(path, epoch=3, lr=0.0002, seed=0):
    generator, discriminator, opt_g, opt_d = tiny_gan()
    images, labels = torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.arange(4)
    fingerprint = run_fingerprint({"lr": lr, "width": 8, "epochs": 5}, seed, images, labels)
    save_checkpoint(path, epoch=epoch, generator=generator, discriminator=discriminator, opt_g=opt_g, opt_d=opt_d,
                    rng=torch.Generator(), history=GanHistory(), fingerprint=fingerprint)
    return images, labels


def test_a_run_whose_schedule_depends_on_its_length_resumes_only_with_the_same_epochs(tmp_path):
    """ProGAN grows over the whole run: the same epoch of a 5-epoch and of a 10-epoch run differ."""
    images, labels = torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.arange(4)
    five, ten = (run_fingerprint({"lr": 0.001, "epochs": e}, 0, images, labels, by_length=True) for e in (5, 10))
    assert five != ten and five["train_gan.epochs"] == "5"
    assert run_fingerprint({"epochs": 5}, 0, images, labels) == run_fingerprint({"epochs": 10}, 0, images, labels)


def test_a_run_resumes_from_its_own_checkpoint_only(tmp_path):
    images, labels = fingerprinted_checkpoint(tmp_path / "c.pt")
    same = run_fingerprint({"lr": 0.0002, "width": 8, "epochs": 40}, 0, images, labels)  # more epochs: fine
    check_resumable(tmp_path / "c.pt", same, epochs=40)

    other_lr = run_fingerprint({"lr": 0.01, "width": 8, "epochs": 5}, 0, images, labels)
    with pytest.raises(ResumeError) as err:
        check_resumable(tmp_path / "c.pt", other_lr, epochs=5)
    assert "train_gan.lr: checkpoint 0.0002, now 0.01" in str(err.value)
    assert "a plain `dvc repro` (without GAN_RESUME=1) starts afresh" in str(err.value)

    other_data = run_fingerprint({"lr": 0.0002, "width": 8, "epochs": 5}, 0, images + 1, labels)
    with pytest.raises(ResumeError, match=r"data \(sha256\): checkpoint"):
        check_resumable(tmp_path / "c.pt", other_data, epochs=5)
    with pytest.raises(ResumeError, match="epochs: the checkpoint has 3 done, now 2 asked"):
        check_resumable(tmp_path / "c.pt", same, epochs=2)


def test_a_checkpoint_without_fingerprint_is_not_resumed(tmp_path):
    generator, discriminator, opt_g, opt_d = tiny_gan()
    save_checkpoint(tmp_path / "old.pt", epoch=1, generator=generator, discriminator=discriminator, opt_g=opt_g,
                    opt_d=opt_d, rng=torch.Generator(), history=GanHistory())
    fingerprint = run_fingerprint({"lr": 0.1}, 0, torch.zeros(1, dtype=torch.uint8), torch.zeros(1))
    with pytest.raises(ResumeError, match="train_gan.lr: checkpoint none, now 0.1"):
        check_resumable(tmp_path / "old.pt", fingerprint, epochs=5)
