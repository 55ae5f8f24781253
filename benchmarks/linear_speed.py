"""Reseau1 for 1000 iterations of 60, two ways, on the same data and machine:

- the course's loop: torchvision's MNIST dataset, ToTensor, a shuffling DataLoader;
- the project's loop (dlcourse.course.training.train_iterations): uint8 tensors turned into floats once,
  random batches drawn by indexing.

Goal: the project's loop is at least 10x faster at equal accuracy. Needs `dvc repro preprocess`
(it reads data/raw/mnist and data/prepared/mnist). Run: python benchmarks/linear_speed.py
"""

import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from course_data import torchvision_mnist_root
from dlcourse.course import data
from dlcourse.course.models import Reseau1
from dlcourse.pipeline.layout import PREPARED
from dlcourse.course.training import LOSSES, accuracy, seed_everything, train_iterations

ITERATIONS, BATCH, LR, MOMENTUM = 1000, 60, 0.001, 0.9


class CourseReseau1(nn.Module):  # the slide's code, softmax inside forward
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(784, 10)

    def forward(self, x):
        return F.softmax(self.layer(x.view(-1, 784)), dim=1)


def course_loop(root: Path) -> tuple[float, float]:
    seed_everything(0)
    train = torchvision.datasets.MNIST(root, train=True, download=False, transform=torchvision.transforms.ToTensor())
    test = torchvision.datasets.MNIST(root, train=False, download=False, transform=torchvision.transforms.ToTensor())
    model = CourseReseau1()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    start = time.perf_counter()
    train_loader = enumerate(DataLoader(train, batch_size=BATCH, shuffle=True))
    for _ in range(ITERATIONS):
        _, (images, targets) = next(train_loader)
        loss = F.nll_loss(torch.log(model(images)), targets, reduction="sum")  # the slides' -log f(x)(y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    correct = total = 0
    with torch.no_grad():
        for images, targets in DataLoader(test, batch_size=1000):
            correct += int((model(images).argmax(1) == targets).sum())
            total += len(targets)
    return seconds, correct / total


def project_loop() -> tuple[float, float]:
    rng = seed_everything(0)
    train, test = (data.load_split(PREPARED, "mnist", split) for split in ("train", "test"))
    cpu = torch.device("cpu")
    train_x, test_x = data.to_float(train.images, cpu), data.to_float(test.images, cpu)
    model = Reseau1()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    curve, seconds = train_iterations(
        model, optimizer, lambda s, y: LOSSES["log_softmax_nll"](s, y, "sum"), train_x, train.labels,
        iterations=ITERATIONS, batch_size=BATCH, rng=rng,
        evaluate=lambda: accuracy(model, test_x, test.labels), eval_every=ITERATIONS,
    )
    return seconds, curve.test_accuracy[-1]


def main() -> None:
    torch.set_num_threads(1)  # as the train-linear stage; the same for both loops
    with torchvision_mnist_root() as root:
        course_s, course_acc = course_loop(root)
    project_s, project_acc = project_loop()
    print(f"{'loop':<40}{'seconds':>10}{'test accuracy':>16}")
    print(f"{'course (torchvision MNIST + DataLoader)':<40}{course_s:>10.3f}{course_acc:>16.4f}")
    print(f"{'project (tensors in memory)':<40}{project_s:>10.3f}{project_acc:>16.4f}")
    print(f"speed-up: {course_s / project_s:.1f}x (goal: >= 10x), accuracy difference: "
          f"{100 * (project_acc - course_acc):+.2f} points")


if __name__ == "__main__":
    main()
