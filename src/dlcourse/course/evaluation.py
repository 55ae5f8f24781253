"""How good, how calibrated, and how wrong a classifier is on a test set."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def confusion_matrix(actual: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts, rows = actual class, columns = predicted class."""
    return torch.bincount(actual * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    return confusion.diag() / confusion.sum(1).clamp(min=1)


@dataclass
class Calibration:
    ece: float  # expected calibration error: sum over bins of |accuracy - confidence| weighted by bin size
    bin_edges: list[float]
    bin_confidence: list[float | None]  # mean confidence per bin (None where empty)
    bin_accuracy: list[float | None]
    bin_count: list[int]


def calibration(confidence: torch.Tensor, correct: torch.Tensor, bins: int) -> Calibration:
    """Equal-width confidence bins (Guo et al. 2017); a bin holds confidences in (lower, upper]."""
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence.double(), edges[1:-1], right=False)
    ece, mean_conf, mean_acc, counts = 0.0, [], [], []
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        counts.append(n)
        if n == 0:
            mean_conf.append(None)
            mean_acc.append(None)
            continue
        conf, acc = float(confidence[members].double().mean()), float(correct[members].double().mean())
        mean_conf.append(conf)
        mean_acc.append(acc)
        ece += n / len(confidence) * abs(acc - conf)
    return Calibration(ece, edges.tolist(), mean_conf, mean_acc, counts)


def hardest_errors(probabilities: torch.Tensor, actual: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the most confidently misclassified examples, most confident first."""
    confidence, predicted = probabilities.max(1)
    wrong = (predicted != actual).nonzero().flatten()
    order = confidence[wrong].argsort(descending=True, stable=True)
    return wrong[order[:count]]
