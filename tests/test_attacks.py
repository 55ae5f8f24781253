"""dlcourse.course.attacks on a tiny MLP trained in a second on generated 10-class 8x8 images."""

import matplotlib.colors
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.course import attacks, corruptions, cppn, fooling

SHAPE = (1, 8, 8)
NUM_CLASSES = 10


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copies of 10 fixed random prototypes (drawn with their own seed, whatever `seed` is)."""
    prototypes = torch.rand((NUM_CLASSES, *SHAPE), generator=torch.Generator().manual_seed(12345))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(NUM_CLASSES, (n,), generator=g)
    x = (prototypes[y] + 0.25 * torch.randn((n, *SHAPE), generator=g)).clamp(0, 1)
    return x, y


def train_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, NUM_CLASSES))
    x, y = make_data(2000, seed=1 + seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return train_mlp(seed=0)


@pytest.fixture(scope="module")
def test_data() -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(500, seed=100)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def clean_accuracy(model, x, y) -> float:
    return attacks.accuracy_under(model, x, y, lambda xb, yb: xb)["accuracy"]


def test_the_tiny_model_learns(model, test_data):
    assert clean_accuracy(model, *test_data) > 0.9


def test_eps_zero_gives_clean_accuracy(model, test_data):
    x, y = test_data
    clean = clean_accuracy(model, x, y)
    for method in (lambda xb, yb: attacks.fgsm(model, xb, yb, 0.0),
                   lambda xb, yb: attacks.pgd(model, xb, yb, 0.0, steps=5, rng=gen())):
        result = attacks.accuracy_under(model, x, y, method, batch_size=128)
        assert result["accuracy"] == clean
        assert result["linf"] == 0.0


@pytest.mark.parametrize("eps", [0.02, 0.1, 0.3])
def test_attacks_stay_in_the_eps_ball_and_in_range(model, test_data, eps):
    x, y = test_data
    for x_adv in (attacks.fgsm(model, x, y, eps), attacks.pgd(model, x, y, eps, steps=5, rng=gen()),
                  attacks.pgd(model, x, y, eps, steps=5, step_size=eps, random_start=False),
                  attacks.sign_noise(x, eps, gen())):
        assert x_adv.shape == x.shape
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_attacks_leave_no_gradient_on_the_model(model, test_data):
    x, y = test_data
    attacks.pgd(model, x[:20], y[:20], 0.1, steps=2, rng=gen())
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_pgd_is_at_least_as_strong_as_fgsm_and_noise_is_weak(model, test_data):
    x, y = test_data
    table = attacks.sweep(model, x, y, [0.1, 0.2, 0.3], attacks.standard_methods(model, gen()), batch_size=200)
    assert list(table.columns) == ["method", "eps", "accuracy", "confidence", "linf", "l2", "mse"]
    accuracy = table.pivot(index="eps", columns="method", values="accuracy")
    assert (accuracy["pgd"] <= accuracy["fgsm"]).all()
    assert accuracy["fgsm"].is_monotonic_decreasing
    assert accuracy.loc[0.2, "fgsm"] < 0.5 * clean_accuracy(model, x, y)
    assert accuracy.loc[0.2, "pgd"] < accuracy.loc[0.2, "fgsm"]
    # Random perturbations of the same size barely matter.
    assert (accuracy["sign_noise"] >= 0.9).all() and (accuracy["l2_noise"] >= 0.9).all()


def test_a_sweep_at_eps_zero_computes_no_attack_and_draws_no_random_number(model, test_data):
    x, y = test_data
    calls = []
    methods = {"counted": lambda xb, yb, eps: calls.append(eps) or attacks.sign_noise(xb, eps, rng)}
    rng = gen(5)
    table = attacks.sweep(model, x, y, [0.0, 0.1], methods, batch_size=200)
    assert calls == [0.1] * -(-len(y) // 200)
    clean = table[table.eps == 0].iloc[0]
    assert clean.accuracy == clean_accuracy(model, x, y) and clean.linf == clean.l2 == clean.mse == 0.0
    after_sweep = torch.rand(3, generator=rng)
    rng = gen(5)
    attacks.sweep(model, x, y, [0.1], methods, batch_size=200)
    assert torch.equal(torch.rand(3, generator=rng), after_sweep)  # eps 0 drew nothing


def test_bf16_gradients_point_where_float32_ones_do_and_attack_as_well(model, test_data):
    x, y = test_data
    exact, rounded = (attacks.input_gradient(model, x, y, bf16) for bf16 in (False, True))
    agree = (exact.sign() == rounded.sign())[exact.abs() > 1e-3 * exact.abs().amax()]
    assert agree.float().mean() > 0.9
    fp32, bf16 = (attacks.accuracy_under(model, x, y, lambda xb, yb: attacks.pgd(
        model, xb, yb, 0.2, steps=5, rng=gen(2), bf16=bf16))["accuracy"] for bf16 in (False, True))
    assert abs(fp32 - bf16) <= 0.03 and bf16 < 0.5 * clean_accuracy(model, x, y)


def test_sweep_is_deterministic(model, test_data):
    x, y = test_data
    first, second = (attacks.sweep(model, x[:100], y[:100], [0.1], attacks.standard_methods(model, gen(3), pgd_steps=3))
                     for _ in range(2))
    assert first.equals(second)


def test_noise_controls_have_the_requested_size():
    x = 0.4 + 0.2 * torch.rand((6, 3, 5, 7), generator=gen(1))  # far enough from 0 and 1: no clamping
    eps = 0.1
    delta = attacks.sign_noise(x, eps, gen()) - x
    assert torch.allclose(delta.abs(), torch.full_like(delta, eps), atol=1e-6)
    assert 0.4 < (delta > 0).float().mean() < 0.6
    radius = attacks.fgsm_l2_radius(x, eps)
    assert radius == pytest.approx(eps * (3 * 5 * 7) ** 0.5)
    delta = attacks.l2_noise(x, radius, gen()) - x
    assert torch.allclose(delta.flatten(1).norm(dim=1), torch.full((6,), radius), rtol=1e-5)
    assert delta.abs().max() < eps * 4  # spread over the pixels, unlike a sign perturbation's corners


def test_random_draws_are_deterministic(model):
    x = torch.rand((4, *SHAPE), generator=gen(2))
    y = torch.arange(4)
    assert torch.equal(attacks.sign_noise(x, 0.1, gen(5)), attacks.sign_noise(x, 0.1, gen(5)))
    assert torch.equal(attacks.l2_noise(x, 1.0, gen(5)), attacks.l2_noise(x, 1.0, gen(5)))
    assert torch.equal(attacks.pgd(model, x, y, 0.1, rng=gen(5)), attacks.pgd(model, x, y, 0.1, rng=gen(5)))
    assert not torch.equal(attacks.sign_noise(x, 0.1, gen(5)), attacks.sign_noise(x, 0.1, gen(6)))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(corruptions.CORRUPTIONS))
def test_corruptions_keep_shape_and_range_and_grow_with_severity(name, channels):
    x = torch.rand((8, channels, 16, 16), generator=gen(4))
    x = corruptions.gaussian_blur(x, 3)  # some spatial structure, as in real images
    distances = []
    for severity in corruptions.SEVERITIES:
        corrupted = corruptions.CORRUPTIONS[name](x, severity, gen(9))
        assert corrupted.shape == x.shape and corrupted.dtype == x.dtype
        assert corrupted.min() >= 0 and corrupted.max() <= 1
        distances.append((corrupted - x).norm().item())
    assert distances[0] > 0
    assert distances == sorted(distances), distances


def test_corruptions_are_deterministic():
    x = torch.rand((4, 3, 16, 16), generator=gen(4))
    for corrupt in corruptions.CORRUPTIONS.values():
        assert torch.equal(corrupt(x, 3, gen(1)), corrupt(x, 3, gen(1)))


def test_brightness_matches_the_hsv_round_trip():
    x = torch.rand((3, 3, 6, 6), generator=gen(7))
    x[0, :, 0, 0] = 0  # a black pixel
    for severity in corruptions.SEVERITIES:
        c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
        hsv = matplotlib.colors.rgb_to_hsv(x.permute(0, 2, 3, 1).numpy())
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        expected = torch.from_numpy(matplotlib.colors.hsv_to_rgb(hsv)).permute(0, 3, 1, 2)
        assert torch.allclose(corruptions.brightness(x, severity), expected, atol=1e-5)
    grey = torch.rand((2, 1, 4, 4), generator=gen(8))
    assert torch.allclose(corruptions.brightness(grey, 5), (grey + 0.3).clamp(max=1))


def test_sweep_corruptions(model, test_data):
    x, y = test_data
    table = corruptions.sweep_corruptions(model, x[:100], y[:100], gen())
    assert len(table) == len(corruptions.CORRUPTIONS) * 5
    assert table["accuracy"].between(0, 1).all()


def test_fooling_by_gradient_ascent_reaches_the_bar_for_every_class(model):
    targets = list(range(NUM_CLASSES))
    run = lambda: fooling.fool_gradient_ascent(model, targets, SHAPE, steps_max=300, lr=0.02, confidence=0.99,
                                               rng=gen())
    images, confidence, steps = run()
    assert images.shape == (NUM_CLASSES, *SHAPE)
    assert images.min() >= 0 and images.max() <= 1
    assert (confidence >= 0.99).all() and (steps < 300).all()
    assert (steps > 0).all()  # the starting noise is not already confidently classified
    assert torch.allclose(fooling.transfer_confidence(model, images, targets), confidence, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip((images, confidence, steps), run()))


def test_fooling_by_evolution_reaches_the_bar_for_every_class(model):
    targets = list(range(NUM_CLASSES))
    run = lambda: fooling.fool_evolution(model, targets, SHAPE, generations_max=300, population=20,
                                         mutation_rate=0.1, confidence=0.99, rng=gen())
    images, confidence, generations = run()
    assert images.shape == (NUM_CLASSES, *SHAPE)
    assert images.min() >= 0 and images.max() <= 1
    assert (confidence >= 0.99).all() and (generations < 300).all()
    assert (generations > 0).all()
    assert torch.allclose(fooling.transfer_confidence(model, images, targets), confidence, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip((images, confidence, generations), run()))


def test_fooling_by_cppn_reaches_the_bar_for_every_class_with_regular_images(model):
    run = lambda: cppn.fool_cppn(model, SHAPE, gen(), generations_max=200, population=20, confidence=0.95,
                                 weight_rate=0.5, weight_sigma=1.0, add_node_rate=0.2, add_connection_rate=0.3,
                                 activation_rate=0.2)
    images, confidence, generations, genomes = run()
    assert images.shape == (NUM_CLASSES, *SHAPE) and len(genomes) == NUM_CLASSES
    assert images.min() >= 0 and images.max() <= 1
    assert (confidence >= 0.95).all() and (generations < 200).all()
    targets = list(range(NUM_CLASSES))
    assert torch.allclose(fooling.transfer_confidence(model, images, targets), confidence, atol=1e-5)
    assert torch.allclose(cppn.render(genomes, *SHAPE[1:]), images, atol=1e-6)
    again = run()
    assert all(torch.equal(a, b) for a, b in zip((images, confidence, generations), again))
    noise, _, _ = fooling.fool_evolution(model, targets, SHAPE, generations_max=300, population=20,
                                         mutation_rate=0.1, confidence=0.99, rng=gen())
    assert fooling.total_variation(images).mean() < fooling.total_variation(noise).mean()


def test_transfer_confidence_on_a_second_model(model):
    other = train_mlp(seed=1)
    images, _, _ = fooling.fool_gradient_ascent(model, range(NUM_CLASSES), SHAPE, steps_max=300, lr=0.02,
                                                rng=gen())
    targets = list(range(NUM_CLASSES))
    transferred = fooling.transfer_confidence(other, images, targets, batch_size=3)  # in batches, as one
    with torch.no_grad():
        expected = F.softmax(other(images), dim=1)[torch.arange(NUM_CLASSES), targets]
    assert torch.allclose(transferred, expected, atol=1e-6)


def test_matches_torchattacks(model, test_data):
    import torchattacks

    x, y = test_data
    assert torch.allclose(attacks.fgsm(model, x, y, 0.1), torchattacks.FGSM(model, eps=0.1)(x, y), atol=1e-6)
    ours = attacks.pgd(model, x, y, 0.1, steps=5, step_size=0.03, random_start=False)
    theirs = torchattacks.PGD(model, eps=0.1, alpha=0.03, steps=5, random_start=False)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_psnr_of_a_sign_perturbation_is_the_formula():
    x = torch.full((2, 1, 8, 8), 0.5)
    row = attacks.accuracy_under(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), x, torch.zeros(2, dtype=torch.long),
                                 lambda xb, yb: attacks.sign_noise(xb, 0.1, gen()))
    assert row["mse"] == pytest.approx(0.01)  # every pixel moved by exactly 0.1
    assert attacks.psnr(row["mse"]) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert attacks.psnr(0.0) == float("inf")


def sweep_table(rows: dict[float, tuple[float, float]]) -> dict[float, dict[str, float]]:
    """{eps: (pgd, noise)} as a sweep's accuracies, clean 0.9 at eps 0."""
    table = {0.0: dict.fromkeys(("fgsm", "pgd", "sign_noise", "l2_noise"), 0.9)}
    for eps, (pgd, noise) in rows.items():
        table[eps] = {"fgsm": pgd, "pgd": pgd, "sign_noise": noise, "l2_noise": noise + 0.005}
    return table


@pytest.mark.parametrize("rows, chosen", [
    ({0.05: (0.5, 0.89), 0.1: (0.3, 0.89), 0.2: (0.0, 0.5)}, 0.1),  # the smallest passing eps
    ({0.05: (0.1, 0.89), 0.1: (0.0, 0.89)}, 0.05),
    ({0.05: (0.6, 0.89), 0.1: (0.5, 0.89), 0.2: (0.0, 0.5)}, 0.1),  # none passes: PGD's worst where noise is harmless
    ({0.05: (0.0, 0.8), 0.1: (0.0, 0.7)}, 0.05),  # noise hurts everywhere: the smallest
])
def test_the_claims_eps_is_the_slightest_that_wrecks(rows, chosen):
    assert attacks.choose_slight_eps(sweep_table(rows)) == chosen


def test_ten_images_of_five_hundred_cost_two_points_exactly():
    table = {0.0: dict.fromkeys(("pgd", "sign_noise", "l2_noise"), 1.0),
             0.1: {"pgd": 0.182, "sign_noise": 490 / 500, "l2_noise": 0.99}}
    assert 1.0 - 490 / 500 > attacks.HARMLESS  # the float arithmetic the rule must not trip on
    assert attacks.slight_and_wrecking(table) == {0.1: True}


def test_slight_and_wrecking_at_each_eps():
    verdicts = attacks.slight_and_wrecking(sweep_table({0.05: (0.41, 0.89), 0.1: (0.39, 0.89), 0.2: (0.0, 0.87)}))
    assert verdicts == {0.05: False, 0.1: True, 0.2: False}


def test_unmoved_names_the_attacks_that_changed_no_pixel(test_data):
    x, y = test_data
    dead = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 10))
    torch.nn.init.zeros_(dead[1].weight)  # every input gradient 0: FGSM cannot move
    table = attacks.sweep(dead, x[:20], y[:20], [0.0, 0.1], {"fgsm": lambda xs, ys, eps: attacks.fgsm(dead, xs, ys, eps),
                                                             "sign_noise": lambda xs, ys, eps: attacks.sign_noise(xs, eps)})
    assert attacks.unmoved(table) == ["fgsm at eps 0.1"]  # noise moves; eps 0 moves nothing by definition
