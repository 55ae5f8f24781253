"""Stage `train-linear@<run>`: the course's `Reseau1` (784 -> 10, softmax) on MNIST, trained with
SGD + momentum on random batches (slides "Boucle d'entraînement" and "Résultats")."""

import sys
from dataclasses import dataclass

import pandas as pd
import torch

from dlcourse import progress
from dlcourse.course import data
from dlcourse.pipeline import layout, params, registry
from dlcourse.files import write_csv, write_json
from dlcourse.course.models import Classifier, save_classifier
from dlcourse.pipeline.stage import stage
from dlcourse.course.divergence import divergence_explained
from dlcourse.course.training import LOSSES, Curve, accuracy, resolve_device, seed_everything, train_iterations


@dataclass
class LinearRun:
    model: Classifier
    curve: Curve
    metrics: dict
    train_seconds: float


def train_linear(p: params.LinearRunParams, seed: int, device: torch.device, train: data.Split,
                 test: data.Split, label: str | None = None) -> LinearRun:
    rng = seed_everything(seed)
    train_x, test_x = data.to_float(train.images, device), data.to_float(test.images, device)
    train_y, test_y = train.labels.to(device), test.labels.to(device)

    model = Classifier("reseau1", {}, channels=1).to(device)  # inputs as ToTensor gives them: pixels / 255
    optimizer = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum)
    # The slides' check at initialisation: one random test batch of 1000 images.
    init_batch = torch.randperm(len(test_y), generator=rng)[: p.init_eval_size].to(device)
    init_accuracy = accuracy(model, test_x[init_batch], test_y[init_batch])
    # One initialisation can land anywhere between ~3 % and ~20 %; the chance level shows in the mean.
    init_mean = sum(
        accuracy(Classifier("reseau1", {}, channels=1).to(device), test_x[init_batch], test_y[init_batch])
        for _ in range(p.init_trials)
    ) / p.init_trials

    curve, seconds = train_iterations(
        model, optimizer, lambda scores, y: LOSSES[p.loss](scores, y, p.reduction), train_x, train_y,
        iterations=p.iterations, batch_size=p.batch_size, rng=rng,
        evaluate=lambda: accuracy(model, test_x, test_y), eval_every=p.eval_every, label=label,
    )
    metrics = {
        "init_batch_accuracy": init_accuracy,
        "init_accuracy_mean": init_mean,
        "init_trials": p.init_trials,
        "test_accuracy": curve.test_accuracy[-1],
        "best_test_accuracy": max(curve.test_accuracy),
        "iterations": p.iterations,
        "epochs": p.iterations * p.batch_size / len(train_y),
    }
    return LinearRun(model, curve, metrics, seconds)


def main(name: str) -> None:
    # train_linear seeds itself: it is the slide's loop, from the seed to the curve.
    with stage("train-linear", name, entry="train_linear", device=resolve_device) as job:
        run, device = job.run, job.device
        # 784 x 10 is too small to split across threads: the threads' synchronisation costs more
        # than it saves, and ruins the timing whenever another process holds a core.
        torch.set_num_threads(1)
        train, test = (data.load_split(layout.PREPARED, "mnist", split) for split in ("train", "test"))
        run.log_dataset(layout.prepared_split("mnist", "train"), "training")
        run.log_dataset(layout.prepared_split("mnist", "test"), "evaluation")
        with divergence_explained(job.name, job.entry_params("lr", "momentum", "reduction")):
            result = train_linear(job.entry, job.params.seed, device, train, test, label=job.name)

        save_classifier(result.model, "mnist", train.classes, layout.model(f"linear/{name}"))
        write_json(layout.training_metrics(f"linear/{name}"), result.metrics)
        job.write_timing({"train_seconds": round(result.train_seconds, 3), "device": str(device)})
        write_csv(pd.DataFrame({"step": result.curve.steps, "test_accuracy": result.curve.test_accuracy}),
                  layout.training_curve(f"linear/{name}"))

        run.log_metrics({**result.metrics, "train_seconds": result.train_seconds})
        run.log_curve("curve.test_accuracy", result.curve.steps, result.curve.test_accuracy)
        run.log_artifact(layout.model(f"linear/{name}"))
        registry.log_classifier(run, layout.model(f"linear/{name}"), test.images, result.metrics["test_accuracy"])
    progress.summary(job.name, f"{100 * result.metrics['test_accuracy']:.2f} % test accuracy, "
                               f"{progress.counted(job.entry.iterations, 'iteration')} "
                               f"({progress.counted(result.metrics['epochs'], 'epoch', '.3g')})")


if __name__ == "__main__":
    main(sys.argv[1])
