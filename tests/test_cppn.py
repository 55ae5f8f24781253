"""dlcourse.course.cppn (CPPN genomes, their mutations, MAP-Elites) and the regularity measures of
dlcourse.course.fooling, on tiny images and toy scorers."""

import math

import pytest
import torch

from dlcourse.course import cppn, fooling
from dlcourse.course.cppn import INPUTS, Genome

MUTATION = dict(weight_rate=0.5, weight_sigma=1.0, add_node_rate=0.2, add_connection_rate=0.3, activation_rate=0.2)


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def grown(channels: int, seed: int, mutations: int = 20) -> Genome:
    r = rng(seed)
    genome = cppn.random_genome(channels, r)
    for _ in range(mutations):
        genome = cppn.mutate(genome, r, **MUTATION)
    return genome


def assert_valid(genome: Genome) -> None:
    """Inputs first, outputs last, every node once; connections between existing nodes, never into an
    input or out of an output; and no cycle, checked by Kahn's algorithm, independently of `order`."""
    inputs, outputs = list(range(len(INPUTS))), genome.outputs
    nodes = set(genome.order)
    assert len(nodes) == len(genome.order)
    assert genome.order[:len(INPUTS)] == inputs and genome.order[-genome.channels:] == outputs
    assert set(genome.activation) == nodes - set(inputs)
    assert set(genome.activation.values()) <= set(cppn.ACTIVATION_NAMES)
    for source, target in genome.weights:
        assert source in nodes and target in nodes, "dangling connection"
        assert source not in outputs and target not in inputs
    incoming, targets = dict.fromkeys(nodes, 0), {node: [] for node in nodes}
    for source, target in genome.weights:
        incoming[target] += 1
        targets[source].append(target)
    ready, seen = [node for node, n in incoming.items() if n == 0], 0
    while ready:
        node, seen = ready.pop(), seen + 1
        for target in targets[node]:
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    assert seen == len(nodes), "cycle"


@pytest.mark.parametrize("channels, height, width", [(1, 28, 28), (3, 32, 32), (3, 5, 7)])
def test_a_genome_renders_the_dataset_shape_in_range_deterministically(channels, height, width):
    genomes = [grown(channels, seed) for seed in range(4)]
    images = cppn.render(genomes, height, width)
    assert images.shape == (4, channels, height, width)
    assert images.min() >= 0 and images.max() <= 1 and torch.isfinite(images).all()
    assert torch.equal(images, cppn.render([grown(channels, seed) for seed in range(4)], height, width))
    assert not torch.equal(images[0], images[1])  # another seed, another image
    assert images.flatten(1).std(dim=1).min() > 0  # patterns, not flat images


def test_a_population_renders_as_each_genome_alone():
    """The padding of smaller genomes to the population's node slots changes nothing."""
    genomes = [cppn.random_genome(3, rng(1)), grown(3, 2, mutations=40), grown(3, 3, mutations=5)]
    assert len({len(g.hidden) for g in genomes}) == 3
    together = cppn.render(genomes, 6, 6)
    alone = torch.cat([cppn.render([g], 6, 6) for g in genomes])
    assert torch.allclose(together, alone, atol=1e-6)


def test_rendering_by_hand():
    """out = sigmoid(2 * sine(3 * x + 1 * d) - 0.5 * bias) at each pixel, x, y on [-1, 1]."""
    x, y, d, bias, out, hidden = 0, 1, 2, 3, 4, 5
    genome = Genome(1, [x, y, d, bias, hidden, out], {(x, hidden): 3.0, (d, hidden): 1.0, (hidden, out): 2.0,
                                                      (bias, out): -0.5},
                    {hidden: "sine", out: "sigmoid"})
    image = cppn.render([genome], 3, 5)[0, 0]
    for row, yv in enumerate([-1.0, 0.0, 1.0]):
        for col, xv in enumerate([-1.0, -0.5, 0.0, 0.5, 1.0]):
            expected = 1 / (1 + math.exp(-(2 * math.sin(3 * xv + math.hypot(xv, yv)) - 0.5)))
            assert image[row, col].item() == pytest.approx(expected, abs=1e-6)


def test_add_node_splits_a_connection_as_neat():
    genome = cppn.random_genome(1, rng())
    before = dict(genome.weights)
    cppn.add_node(genome, rng(5))
    (new,) = genome.hidden
    (split,) = set(before) - set(genome.weights)
    assert genome.weights[(split[0], new)] == 1.0 and genome.weights[(new, split[1])] == before[split]
    # the image changes by the activation only: an identity node leaves it as it was
    genome.activation[new] = "identity"
    assert torch.allclose(cppn.render([genome], 4, 4),
                          cppn.render([Genome(1, list(range(5)), before, {4: "sigmoid"})], 4, 4), atol=1e-6)


def test_1000_random_mutations_keep_the_genome_valid_and_renderable():
    r = rng(7)
    strong = dict(weight_rate=0.5, weight_sigma=1.0, add_node_rate=0.5, add_connection_rate=0.8, activation_rate=0.5)
    for channels in (1, 3):
        genome = cppn.random_genome(channels, r)
        for step in range(500):
            parent = genome
            genome = cppn.mutate(parent, r, **strong)
            assert_valid(genome)
            if step % 100 == 99:
                image = cppn.render([genome], 8, 8)
                assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
        assert len(genome.hidden) > 100 and len(genome.weights) > 2 * len(genome.hidden)
        assert parent is not genome and parent.weights != genome.weights  # a copy: the parent stays as it was


def toy_target(k: int, classes: int) -> float:
    return 0.1 + 0.8 * k / (classes - 1)


def toy_scorer(calls: list):
    """Class k's log-score is -|mean intensity - target_k|: its optimum, 0, is a uniform image of
    intensity target_k. Every score given is recorded in `calls`."""
    def score(images):
        means = images.flatten(1).mean(dim=1, keepdim=True)
        targets = torch.tensor([toy_target(k, 5) for k in range(5)])
        scores = -(means - targets).abs()
        calls.append(scores)
        return scores
    return score


def test_map_elites_keeps_the_best_image_of_every_class():
    calls = []
    elites, images, scores, found = cppn.map_elites(toy_scorer(calls), 1, 6, 6, 5, rng(3), generations_max=40,
                                                 population=16, **MUTATION)
    best_ever = torch.cat(calls).max(dim=0).values
    assert torch.equal(scores, best_ever)  # no better image was ever scored and dropped
    assert len(calls) == 41 and (found <= 40).all()
    assert torch.allclose(cppn.render(elites, 6, 6), images, atol=1e-6)
    rendered = images.flatten(1).mean(dim=1)
    targets = torch.tensor([toy_target(k, 5) for k in range(5)])
    assert torch.equal(-(rendered - targets).abs(), best_ever)  # each elite gives its score
    assert (best_ever > -0.01).all()  # near the known optimum for every class
    assert best_ever.mean() > torch.cat(calls[:1]).max(dim=0).values.mean()  # better than the first batch


def test_map_elites_stops_when_every_class_reaches_the_bar_and_is_deterministic():
    run = lambda: cppn.map_elites(toy_scorer([]), 1, 6, 6, 5, rng(3), generations_max=200, population=16,
                                  confidence=math.exp(-0.05), **MUTATION)
    elites, images, scores, found = run()
    assert (scores >= -0.05).all() and found.max() < 200
    again = run()
    assert all(torch.equal(a, b) for a, b in zip((images, scores, found), again[1:]))


def test_regularity_ranks_patterns_below_noise():
    noise = torch.rand((1, 28, 28), generator=rng())
    constant = torch.full((1, 28, 28), 0.4)
    stripes = (torch.arange(28) // 4 % 2).float().expand(1, 28, 28).clone()  # vertical bands 4 pixels wide
    fine_stripes = (torch.arange(28) % 2).float().expand(1, 28, 28).clone()
    assert fooling.png_bytes(constant) < fooling.png_bytes(noise) / 5
    assert fooling.png_bytes(stripes) < fooling.png_bytes(noise) / 5
    assert fooling.png_bytes(fine_stripes) < fooling.png_bytes(noise) / 5
    assert fooling.png_bytes(torch.rand((3, 32, 32), generator=rng())) > fooling.png_bytes(noise)  # 3 channels
    tv = fooling.total_variation(torch.stack([constant, stripes, noise]))
    # by hand: bands of 4 change 6 times along each of 28 rows, of 28 * 27 * 2 neighbour pairs
    assert tv.tolist() == pytest.approx([0.0, 6 * 28 / (2 * 28 * 27), 1 / 3], abs=0.02)
