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


from dlcourse.models import ARCHITECTURES, Classifier, load_classifier, save_classifier  # noqa: E402
from dlcourse.training import augment, lr_factor  # noqa: E402


@pytest.mark.parametrize(
    "architecture, kwargs, shape, count",
    [
        ("mlp", {"in_shape": [3, 32, 32], "hidden": []}, (3, 32, 32), 3072 * 10 + 10),
        ("mlp", {"in_shape": [3, 32, 32], "hidden": [512, 256]}, (3, 32, 32),
         3072 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10),
        ("smallcnn", {"widths": [32, 64], "hidden": 256}, (3, 32, 32),
         (75 * 32 + 32) + (25 * 32 * 64 + 64) + (64 * 64 * 256 + 256) + (256 * 10 + 10)),
        ("mnistnet", {"widths": [16, 32], "hidden": 128}, (1, 28, 28),
         9 * 16 + 2 * 16 + 9 * 16 * 16 + 2 * 16 + 9 * 16 * 32 + 2 * 32 + 9 * 32 * 32 + 2 * 32
         + 32 * 49 * 128 + 128 + 2 * 128 + 128 * 10 + 10),
        ("airnet", {"widths": [24, 32, 64, 64]}, (3, 32, 32),
         (12 * 24 + 24) + sum(9 * a * b + 2 * b + 9 * b * b + 2 * b for a, b in [(24, 32), (32, 64), (64, 64)]) + 640),
    ],
)
def test_architectures_shapes_and_parameter_counts(architecture, kwargs, shape, count):
    model = ARCHITECTURES[architecture](**kwargs)
    assert model(torch.rand(2, *shape)).shape == (2, 10)
    assert parameter_count(model) == count


def test_classifier_checkpoint_roundtrip_keeps_normalisation(tmp_path):
    model = Classifier("smallcnn", {"widths": [4, 8], "hidden": 16}, channels=3)
    model.mean.fill_(0.5)
    model.std.fill_(0.25)
    save_classifier(model, "cifar10", list("abcdefghij"), tmp_path / "m.pt")
    loaded, checkpoint = load_classifier(tmp_path / "m.pt")
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert checkpoint["dataset"] == "cifar10" and loaded.kwargs == {"widths": [4, 8], "hidden": 16}


def test_airnet_whitening_whitens_patches():
    model = ARCHITECTURES["airnet"](widths=[24, 8, 8, 8])
    x = torch.rand(64, 3, 8, 8) * torch.tensor([1.0, 0.8, 0.6])[None, :, None, None]
    model.fit_whitening(x)
    out = model.stem[0](x)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = torch.cov(out.T)
    torch.testing.assert_close(covariance, torch.eye(12), atol=0.05, rtol=0)
    assert not model.stem[0].weight.requires_grad


def test_augment_flips_and_translates_without_changing_content():
    generator = torch.Generator().manual_seed(0)
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).reshape(2, 1, 6, 6)
    flipped = augment(images, flip=True, crop_padding=0, generator=generator)
    for original, out in zip(images, flipped):
        assert torch.equal(out, original) or torch.equal(out, original.flip(2))
    shifted = augment(images, flip=False, crop_padding=2, generator=generator)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    for original, out in zip(images, shifted):  # the centre 2x2 of a <=2-pixel shift is inside the image
        matches = [torch.equal(out[:, 2:4, 2:4], original[:, 2 + dy : 4 + dy, 2 + dx : 4 + dx])
                   for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(matches)


def test_lr_schedules():
    assert lr_factor("constant", 50, 100, 0.2, 10, 1.0) == 1.0
    assert lr_factor("step", 25, 100, 0.0, 10, 0.5) == 0.25
    assert lr_factor("onecycle", 9, 100, 0.1, 10, 1.0) == 1.0  # end of warm-up
    assert lr_factor("onecycle", 0, 100, 0.1, 10, 1.0) == 0.1
    assert lr_factor("onecycle", 99, 100, 0.1, 10, 1.0) == pytest.approx(1 / 90, abs=1e-9)


def test_seeding_makes_cpu_kernels_deterministic_and_leaves_the_gpu_fast():
    try:
        seed_everything(0, "cpu")
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.backends.cudnn.benchmark
        seed_everything(0, "cuda")
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        seed_everything(0, "cpu")
