"""The networks. `forward` returns class scores (logits); softmax is applied by the losses and
by `predict_proba`, exactly as the course's formulas do."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Reseau1(nn.Module):
    """The course's first network: a dense layer with no hidden layer, 784 -> 10, then softmax."""

    def __init__(self, in_features: int = 784, num_classes: int = 10):
        super().__init__()
        self.layer = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.flatten(1))


class Reseau2(nn.Module):
    """The course's CNN, line for line: conv 32, conv 64, max-pool, dropout, fc 128, dropout, fc 10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout2d(0.25)
        # The slide has Dropout2d here, which on this 2-D input drops single units: plain Dropout,
        # as torch now requires for 2-D inputs, behaves the same.
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = self.conv2(x)
        x = self.dropout1(F.max_pool2d(x, 2))
        x = torch.flatten(x, 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return self.fc2(x)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
