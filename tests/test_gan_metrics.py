"""Precision / recall (k-NN manifolds) and class coverage on constructed feature sets whose answers
are known: identical sets, disjoint sets, one collapsed mode."""

import pytest
import torch

from dlcourse.course.gans.metrics import class_coverage, kth_neighbour_distances, precision_recall


def cloud(n: int, centre: float, dim: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) + centre


def test_identical_sets_have_precision_and_recall_1():
    features = cloud(200, 0.0)
    assert precision_recall(features, features.clone(), k=3) == {"precision": 1.0, "recall": 1.0}


def test_disjoint_sets_have_precision_and_recall_0():
    assert precision_recall(cloud(200, 0.0), cloud(200, 100.0, seed=1), k=3) == {"precision": 0.0, "recall": 0.0}


def test_one_collapsed_mode_keeps_precision_and_loses_recall():
    real = torch.cat([cloud(200, 0.0), cloud(200, 50.0, seed=1)])  # two modes, far apart
    fake = cloud(200, 0.0, seed=2)  # only the first, as a collapsed generator draws it
    scores = precision_recall(real, fake, k=3)
    assert scores["precision"] > 0.9  # what it draws looks real
    assert 0.4 <= scores["recall"] <= 0.5  # at most the half of the real images it covers


def test_the_real_manifold_computed_once_gives_the_same_scores():
    real, fake = cloud(300, 0.0), cloud(200, 0.5, seed=3)
    radii = kth_neighbour_distances(real, 3)
    assert radii.shape == (300,)
    assert precision_recall(real, fake, k=3, chunk=64, real_radii=radii) == precision_recall(real, fake, k=3)


def test_the_manifold_radius_is_the_kth_neighbour_distance():
    # Real points at 0, 1, 3 on a line: with k = 1 their balls have radii 1, 1, 2 (covering [-1, 5]).
    real = torch.tensor([[0.0], [1.0], [3.0]])
    fake = torch.tensor([[-1.0], [4.9], [5.1], [-1.1]])
    assert precision_recall(real, fake, k=1)["precision"] == pytest.approx(0.5)
    # k = 2: radii 3, 2, 3 (covering [-3, 6]): every fake point is inside.
    assert precision_recall(real, fake, k=2)["precision"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k = 3 needs more than 3 points in each set"):
        precision_recall(real, fake, k=3)


def test_class_coverage_shows_a_missing_digit():
    one_hot = torch.eye(10)
    assert class_coverage(one_hot.repeat(3, 1)) == {"class_fractions": [0.1] * 10, "rarest_class_share": 0.1}
    collapsed = class_coverage(one_hot[[0, 0, 0, 1]])
    assert collapsed["class_fractions"][:2] == [0.75, 0.25] and collapsed["rarest_class_share"] == 0.0
