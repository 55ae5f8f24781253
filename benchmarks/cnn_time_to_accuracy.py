"""Time to accuracy on MNIST, two ways, in one run on the same machine:

- the course's loop: Reseau2, torchvision's MNIST dataset, ToTensor, a shuffling DataLoader with
  batches of 64, SGD (lr 0.01, momentum 0.5), test accuracy checked every 100 iterations, until
  its first 98 %;
- the project's default MNIST entry (params.yaml: train_cnn.mnist) with its own loop, test
  accuracy checked at the end of each epoch (so its time is an upper bound), until 99 %.

Goal: the project reaches the higher accuracy in at most half the course loop's time. Training
time only (evaluations excluded) for both. Needs `dvc repro preprocess`.
Run: python benchmarks/cnn_time_to_accuracy.py
"""

import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader

from course_data import torchvision_mnist_root
from dlcourse.course import data
from dlcourse.pipeline import params
from dlcourse.course.models import Classifier, Reseau2
from dlcourse.pipeline.layout import PREPARED
from dlcourse.course.training import EpochRecord, seed_everything, train_epochs

COURSE_TARGET, PROJECT_TARGET, MAX_EPOCHS = 0.98, 0.99, 3


def course_loop(root: Path) -> tuple[float, int, bool]:
    """(training seconds, iterations, whether the target was reached)."""
    seed_everything(0)
    to_tensor = torchvision.transforms.ToTensor()
    train = torchvision.datasets.MNIST(root, train=True, download=False, transform=to_tensor)
    test_loader = DataLoader(torchvision.datasets.MNIST(root, train=False, download=False, transform=to_tensor),
                             batch_size=1000)
    model = Reseau2()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    seconds, iteration = 0.0, 0
    for _ in range(MAX_EPOCHS):
        start = time.perf_counter()
        for images, targets in DataLoader(train, batch_size=64, shuffle=True):
            model.train()
            loss = F.cross_entropy(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            iteration += 1
            if iteration % 100 == 0:
                seconds += time.perf_counter() - start
                model.eval()
                with torch.no_grad():
                    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in test_loader)
                if correct / 10000 >= COURSE_TARGET:
                    return seconds, iteration, True
                start = time.perf_counter()
        seconds += time.perf_counter() - start
    return seconds, iteration, False


class Reached(Exception):
    pass


def project_loop() -> tuple[float | None, list[EpochRecord]]:
    p = params.load().train_cnn["mnist"].model_copy(update={"epochs": MAX_EPOCHS})
    rng = seed_everything(0)
    train, test = (data.load_split(PREPARED, "mnist", split) for split in ("train", "test"))
    model = Classifier(p.architecture, p.model, channels=1)
    model.fit_input_statistics(train.images, p.normalize)
    records: list[EpochRecord] = []

    def stop_at_target(record: EpochRecord) -> None:
        records.append(record)
        if record.test_accuracy >= PROJECT_TARGET:
            raise Reached

    try:
        train_epochs(model, train.images, train.labels, test.images, test.labels, p, rng, stop_at_target)
    except Reached:
        return sum(r.seconds for r in records), records
    return None, records


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with torchvision_mnist_root() as root:
        course_s, iterations, reached = course_loop(root)
    project_s, records = project_loop()
    print(f"course  Reseau2 + DataLoader: first {COURSE_TARGET:.0%} after {iterations} iterations: {course_s:.1f} s"
          if reached else f"course  Reseau2 + DataLoader: {COURSE_TARGET:.0%} not reached in {MAX_EPOCHS} epochs "
          f"({iterations} iterations, {course_s:.1f} s): its time to {COURSE_TARGET:.0%} is longer")
    print("project train_cnn.mnist: " + ", ".join(f"epoch {r.epoch} {r.test_accuracy:.4f} ({r.seconds:.1f} s)"
                                                   for r in records))
    print(f"project first {PROJECT_TARGET:.0%}: " + (f"{project_s:.1f} s" if project_s else "not reached"))
    if project_s:
        bound = "" if reached else " at most (the course loop's time is a lower bound)"
        print(f"ratio project / course: {project_s / course_s:.2f}{bound} (goal: <= 0.5)")


if __name__ == "__main__":
    main()
