"""By value: the scores both GAN claims rest on (precision / recall, class coverage), the count of
confidently wrong test images the hard-errors claim judges, and PGD's random start."""

import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dlcourse.course.attacks import pgd
from dlcourse.course.gans.metrics import class_coverage, precision_recall

ROOT = Path(__file__).resolve().parents[1]


def test_precision_and_recall_by_hand():
    """Real points 0..4 on a line, k = 1: every real ball has radius 1. Fake 0.5, 1.5, 10: the first
    two lie in the real manifold, 10 (6 from the nearest real point) does not: precision 2/3. Fake
    radii: 1, 1, 8.5 (10's nearest fake neighbour, 1.5): real 0, 1, 2 lie within 1 of 0.5 or 1.5,
    real 3 and 4 within 8.5 of 10: recall 1."""
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    fake = torch.tensor([[0.5], [1.5], [10.0]])
    assert precision_recall(real, fake, k=1) == {"precision": pytest.approx(2 / 3), "recall": 1.0}
    # far fake points: none inside the real manifold, and their balls (radius 10) reach no real point
    assert precision_recall(real, torch.tensor([[20.0], [30.0], [40.0]]), k=1) == {"precision": 0.0, "recall": 0.0}
    # k = 2: the real radii are 2 at the ends (0, 4) and 1 inside; fake 6 is 2 from 4 (inside), 6.5 and 7 not
    assert precision_recall(real, torch.tensor([[6.0], [6.5], [7.0]]), k=2)["precision"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="k = 3 needs more than 3 points"):
        precision_recall(real, fake, k=3)


def test_class_coverage_by_hand():
    probs = torch.zeros(8, 4)
    for i, predicted in enumerate([0, 0, 0, 1, 1, 2, 2, 2]):  # class 3 never predicted
        probs[i, predicted] = 0.7
        probs[i, (predicted + 1) % 4] = 0.3
    assert class_coverage(probs) == {"class_fractions": [3 / 8, 2 / 8, 3 / 8, 0.0], "rarest_class_share": 0.0}


class Fixed(nn.Module):
    """A 'model' whose logits for image i are row i of a table (the image holds its index)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x):
        return self.logits[x.flatten(1)[:, 0].round().long()]


def test_the_confidently_wrong_count_by_hand():
    spec = importlib.util.spec_from_file_location("evaluate_stage", ROOT / "stages" / "evaluate.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    big = math.log(9.0)  # softmax over 2 classes of (big, 0): 0.9 exactly
    logits = [[big, 0.0], [big, 0.0], [0.0, big + 0.01], [0.0, 5.0], [5.0, 0.0], [0.0, 0.5]]
    actual = torch.tensor([0, 1, 0, 1, 1, 0])  # wrong: 1 (0.9), 2 (0.9025), 4 (0.993), 5 (0.62)
    images = torch.arange(6.0).view(6, 1, 1, 1)
    p = SimpleNamespace(confident=0.9, ece_bins=5, hardest=2)
    metrics = stage.evaluate(Fixed(logits), images, actual, ["a", "b"], p).metrics
    assert metrics["errors"] == 4
    assert metrics["confidently_wrong"] == 3  # confidence >= 0.9: images 1, 2, 4; not 5
    p.confident = 0.95
    assert stage.evaluate(Fixed(logits), images, actual, ["a", "b"], p).metrics["confidently_wrong"] == 1


class Flat(nn.Module):
    """Scores that do not depend on the image: a zero input gradient, so PGD's steps (sign 0) stay put."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return self.bias.expand(len(x), 3) + 0 * x.flatten(1).sum(1, keepdim=True)


def test_pgds_random_start_is_uniform_in_the_ball_and_projected():
    x = torch.full((64, 1, 4, 4), 0.5)
    x[:8] = 0.02  # near the lower bound: the start is clamped into [0, 1]
    y = torch.zeros(64, dtype=torch.long)
    eps = 0.1
    adv = pgd(Flat(), x, y, eps, steps=3, rng=torch.Generator().manual_seed(7))
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(adv, (x + eps * (2 * u - 1)).clamp(0, 1), rtol=0, atol=1e-7)
    delta = (adv - x)[8:]
    assert delta.abs().max() <= eps + 1e-7 and delta.min() < -0.09 and delta.max() > 0.09
    assert abs(float(delta.mean())) < 0.01 and float(delta.abs().mean()) == pytest.approx(eps / 2, rel=0.1)
    assert adv[:8].min() >= 0
    assert torch.equal(pgd(Flat(), x, y, eps, steps=3, random_start=False), x)  # no start: no move
