import io

import pytest
import torch
import torch.nn.functional as F

from dlcourse.course.models import Reseau1, Reseau2, parameter_count
from dlcourse.course.training import LOSSES, accuracy, random_batches, seed_everything, train_iterations


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
    rng = seed_everything(seed)
    y = torch.randint(0, 2, (300,))
    x = 0.3 * torch.rand(300, 1, 28, 28)
    x[y == 1, :, :14] += 0.7  # class 1: a bright top half
    model = Reseau1()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    curve, _ = train_iterations(
        model, optimizer, lambda s, t: LOSSES["log_softmax_nll"](s, t, "sum"), x, y,
        iterations=40, batch_size=60, rng=rng, evaluate=lambda: accuracy(model, x, y), eval_every=10,
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


from dlcourse.course.models import ARCHITECTURES, Classifier, load_classifier, save_classifier  # noqa: E402
from dlcourse.course.optimizers import lr_factor  # noqa: E402
from dlcourse.course.training import augment  # noqa: E402


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
    rng = torch.Generator().manual_seed(0)
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).reshape(2, 1, 6, 6)
    flipped = augment(images, flip=True, crop_padding=0, rng=rng)
    for original, out in zip(images, flipped):
        assert torch.equal(out, original) or torch.equal(out, original.flip(2))
    shifted = augment(images, flip=False, crop_padding=2, rng=rng)
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


# --- airbench's tricks, opt-in per train_cnn entry -------------------------------------------------
from types import SimpleNamespace  # noqa: E402

from dlcourse.course.optimizers import Lookahead, make_optimizer  # noqa: E402
from dlcourse.course.training import train_epochs, tta_scores  # noqa: E402


def test_lookahead_follows_airbench_schedule_and_ends_on_the_average():
    model = torch.nn.Linear(1, 1, bias=False)
    total, decay, weights = 12, 0.95**5, []
    lookahead = Lookahead(model, total)
    average = model.weight.item()
    for step in range(1, total + 1):
        with torch.no_grad():
            model.weight.add_(1.0)  # a stand-in for an optimizer step
        lookahead.step(step)
        weights.append(model.weight.item())
        if step % 5 == 0:  # by hand: the average moves towards the weights, which jump to it
            d = decay * (step / total) ** 3
            average = d * average + (1 - d) * (weights[-2] + 1 if step > 1 else 0)
            assert model.weight.item() == pytest.approx(average, rel=1e-6)
    assert weights[-1] == pytest.approx(average, rel=1e-6)  # the last step: the weights become the average
    assert weights[3] == pytest.approx(weights[2] + 1)  # untouched between updates


def test_tta_views_are_the_image_its_mirror_and_two_mirrored_translations():
    class TopLeftPixel(torch.nn.Module):  # class 0's score is the top-left pixel, the others 0
        def forward(self, x):
            return torch.nn.functional.pad(x[:, 0, :1, 0], (0, 9)) * 50  # near one-hot softmax
    x = torch.arange(16.0).reshape(1, 1, 4, 4) / 15  # pixel (i, j) = (4 i + j) / 15
    model = TopLeftPixel()
    p0 = lambda v: torch.softmax(torch.tensor([50 * v] + [0.0] * 9), 0)

    def value(i, j):
        return (4 * i + j) / 15
    torch.testing.assert_close(tta_scores(model, x, "none")[0], p0(value(0, 0)))
    torch.testing.assert_close(tta_scores(model, x, "flip")[0], p0(value(0, 0)) + p0(value(0, 3)))
    # translated by one pixel, reflect-padded: the top-left pixel of the up-left view is x[1, 1]
    # (reflection), of its mirror x[1, 2]; of the down-right view x[1, 1], of its mirror x[1, 2]
    expected = p0(value(0, 0)) + p0(value(0, 3)) + (p0(value(1, 1)) + p0(value(1, 2)) + p0(value(1, 1)) + p0(value(1, 2))) / 2
    torch.testing.assert_close(tta_scores(model, x, "flip_translate")[0], expected)


def test_bias_lr_scale_speeds_up_the_1d_parameters_only():
    def first_step(scale):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        before = [q.detach().clone() for q in model.parameters()]
        p = SimpleNamespace(weight_decay=0.0, lr=0.1, bias_lr_scale=scale, optimizer="sgd", momentum=0.0, nesterov=False)
        optimizer = make_optimizer(model, p)
        model(torch.randn(8, 3)).pow(2).sum().backward()
        optimizer.step()
        return [(q.detach() - b) for q, b in zip(model.parameters(), before)]
    plain, fast = first_step(1.0), first_step(64.0)
    torch.testing.assert_close(fast[0], plain[0])  # the Linear's weight matrix
    for moved_fast, moved_plain in zip(fast[1:], plain[1:]):  # its bias, BatchNorm's weight and bias
        assert moved_plain.abs().sum() > 0
        torch.testing.assert_close(moved_fast, 64 * moved_plain)


def test_airnet_batchnorm_options_and_dirac_init():
    model = ARCHITECTURES["airnet"](widths=[24, 8, 16, 16], bn_momentum=0.4, bn_eps=1e-12, bn_weight=False, dirac=True)
    norms = [m for m in model.blocks if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.4 and m.eps == 1e-12 and not m.weight.requires_grad for m in norms)
    conv = model.blocks[4]  # block 1's second conv, 8 -> 8: the identity at start
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(conv(x), x)
    widening = model.blocks[7]  # block 2's first conv, 8 -> 16: the identity on its first 8 outputs
    torch.testing.assert_close(widening(x)[:, :8], x)
    default = ARCHITECTURES["airnet"](widths=[24, 8, 16, 16])
    assert all(m.weight.requires_grad and m.momentum == 0.1 for m in default.blocks if isinstance(m, torch.nn.BatchNorm2d))


def _tiny_airnet_run(on_epoch=lambda record: None, forward_hook=None, **tricks):
    rng = seed_everything(0)
    x = torch.randint(0, 256, (96, 3, 16, 16), dtype=torch.uint8)
    y = (x.float().mean((1, 2, 3)) > 127).long() + 2 * (x[:, 0].float().mean((1, 2)) > x[:, 2].float().mean((1, 2))).long()
    p = SimpleNamespace(epochs=3, epoch_images=None, batch_size=32, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True,
                        weight_decay=5e-4, schedule="onecycle", warmup=0.2, gamma=1.0, label_smoothing=0.2, flip=True,
                        crop_padding=1, tta="flip", channels_last=False, bf16=False, lookahead=False,
                        bias_lr_scale=1.0)
    for key, value in tricks.items():
        setattr(p, key, value)
    model = Classifier("airnet", {"widths": [24, 8, 8, 8]}, channels=3)
    model.fit_input_statistics(x, True)
    if forward_hook:
        model.net.register_forward_hook(forward_hook)
    records = train_epochs(model, x, y, x, y, p, rng, on_epoch=on_epoch)
    return model, records


def test_train_epochs_with_airbench_tricks_runs_and_the_defaults_are_unchanged():
    plain, records = _tiny_airnet_run()
    again, _ = _tiny_airnet_run()
    for a, b in zip(plain.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    tricks, tricked_records = _tiny_airnet_run(lookahead=True, bias_lr_scale=8.0, tta="flip_translate")
    assert len(tricked_records) == 3 and 0 <= tricked_records[-1].test_accuracy <= 1
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), tricks.state_dict().values()))


def test_epoch_images_steps_through_a_fresh_draw_of_that_many_images_each_epoch():
    seen = []  # the batch sizes the network trains on

    def watch(module, inputs, output):
        if module.training:
            seen.append(len(inputs[0]))

    _tiny_airnet_run(forward_hook=watch, epoch_images=40)
    assert seen == [32, 8] * 3  # 3 epochs of 40 of the 96 images, in batches of 32
    seen.clear()
    _tiny_airnet_run(forward_hook=watch)
    assert seen == [32, 32, 32] * 3
    for wrong in (16, 97):  # fewer than a batch, more than the training set
        with pytest.raises(ValueError, match=f"epoch_images: {wrong} asked, of 96 training images in batches of 32"):
            _tiny_airnet_run(epoch_images=wrong)


def test_the_curve_is_evaluated_under_the_training_autocast_and_the_last_epoch_in_float32():
    for bf16 in (False, True):
        evaluations = []  # (epoch, autocast on, output dtype) of each forward pass in eval mode
        epoch = [1]

        def watch(module, inputs, output):
            if not module.training:
                evaluations.append((epoch[0], torch.is_autocast_enabled("cpu"), output.dtype))

        _tiny_airnet_run(on_epoch=lambda record: epoch.__setitem__(0, record.epoch + 1), forward_hook=watch,
                         bf16=bf16, tta="none")
        assert sorted({e for e, _, _ in evaluations}) == [1, 2, 3]
        for e, autocast, dtype in evaluations:
            expected = bf16 and e < 3
            assert autocast == expected and dtype == (torch.bfloat16 if expected else torch.float32), (bf16, e)


def test_a_classifier_is_loaded_channels_last_for_inference_with_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    trained = Classifier("airnet", {"widths": [8, 8, 8, 8], "activation": "gelu", "whiten": False}, channels=3).eval()
    save_classifier(trained, "cifar10", [str(i) for i in range(10)], tmp_path / "m.pt")
    fast, _ = load_classifier(tmp_path / "m.pt")
    plain, _ = load_classifier(tmp_path / "m.pt", memory_format=torch.contiguous_format)
    convolutions = [m.weight for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                                for w in convolutions)
    assert all(m.weight.is_contiguous() for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.rand(16, 3, 32, 32)
    with torch.no_grad():
        expected, got = trained(x), fast(x)
    assert torch.allclose(got, expected, atol=1e-5) and torch.equal(plain(x).detach(), expected)
