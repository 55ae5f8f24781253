"""Stage `train-cnn@<entry>`: a convolutional (or baseline) network on MNIST or CIFAR-10
(slides "Architectures plus complexes" and the CIFAR-10 exercise); one entry per network in
`params.yaml: train_cnn`.

With `processes: N` > 1 the stage runs again under `torchrun` (N processes on this machine); it also
runs as it is under a `torchrun` started by hand, on several machines (README). Only rank 0 writes
outputs and logs the MLflow run.
"""

import sys
from contextlib import nullcontext

import pandas as pd
import torch
from torch.distributed.elastic.multiprocessing.errors import record

from dlcourse import data, distributed, params, progress, registry, tracking
from dlcourse.files import write_csv, write_json
from dlcourse.models import Classifier, parameter_count, save_classifier
from dlcourse.paths import METRICS, MODELS, PLOTS, PREPARED
from dlcourse.training import EpochRecord, resolve_device, seed_everything, train_epochs


def train_classifier(p: params.CnnRunParams, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                     test_y: torch.Tensor, rng: torch.Generator, world: distributed.World = distributed.SINGLE,
                     on_epoch=lambda record: None, label: str | None = None) -> tuple[Classifier, list[EpochRecord]]:
    """The entry's network trained on uint8 images held on one device: the model, and one record per
    epoch (on the main process; none on the others)."""
    model = Classifier(p.architecture, p.model, channels=train_x.shape[1]).to(train_x.device)
    model.fit_input_statistics(train_x, p.normalize)
    records = train_epochs(model, train_x, train_y, test_x, test_y, p, rng, on_epoch=on_epoch, world=world, label=label)
    return model, records


@record  # a failing rank's traceback, in torchrun's summary of the failure
def main(name: str) -> None:
    all_params = params.load()
    p = all_params.entry("train_cnn", name)
    distributed.launch_if_asked(p.processes)
    stage = f"train-cnn@{name}"
    with distributed.initialized(resolve_device(all_params.device)) as (world, device):
        logged = {**tracking.declared_params(stage, all_params), "world_size": world.size} if world.is_main else None
        with tracking.stage_run(stage, logged) if world.is_main else nullcontext() as run:
            rng = seed_everything(all_params.seed, device)
            if p.threads:
                torch.set_num_threads(p.threads)
            train, test = (data.load_split(PREPARED, p.dataset, split) for split in ("train", "test"))
            if world.is_main:
                run.log_dataset(PREPARED / p.dataset / "train.pt", "training")
                run.log_dataset(PREPARED / p.dataset / "test.pt", "evaluation")
            train_x, train_y = train.images.to(device), train.labels.to(device)
            test_x, test_y = test.images.to(device), test.labels.to(device)

            def log_epoch(record):
                run.log_metrics({"curve.test_accuracy": record.test_accuracy, "curve.train_loss": record.train_loss,
                                 "curve.epoch_seconds": record.seconds}, step=record.epoch)

            model, records = train_classifier(p, train_x, train_y, test_x, test_y, rng, world, log_epoch, label=stage)
            if world.is_main:
                write_outputs(name, p, model, train.classes, records, len(train_y), test.images, device, world, run)
        if world.is_main:
            progress.summary(stage, f"{100 * records[-1].test_accuracy:.2f} % test accuracy, {p.epochs} epochs")


def write_outputs(name: str, p: params.CnnRunParams, model: Classifier, classes: list[str],
                  records: list[EpochRecord], train_size: int, test_images: torch.Tensor, device: torch.device,
                  world: distributed.World,
                  run: tracking.StageRun) -> None:
    seconds = sum(r.seconds for r in records)
    metrics = {
        "test_accuracy": records[-1].test_accuracy,
        "best_test_accuracy": max(r.test_accuracy for r in records),
        "epochs": p.epochs,
        "parameters": parameter_count(model.net),
        "dataset": p.dataset,
    }
    timing = {"train_seconds": round(seconds, 3), "images_per_second": round(p.epochs * train_size / seconds, 1),
              "device": str(device), "threads": torch.get_num_threads(), "world_size": world.size}
    save_classifier(model, p.dataset, classes, MODELS / "cnn" / f"{name}.pt")
    write_json(METRICS / "cnn" / f"{name}.json", metrics)
    write_json(METRICS / "timing" / f"train-cnn@{name}.json", timing)
    write_csv(pd.DataFrame([{"epoch": r.epoch, "test_accuracy": r.test_accuracy, "train_loss": r.train_loss}
                            for r in records]), PLOTS / "cnn" / f"{name}.csv")

    run.log_metrics({k: v for k, v in {**metrics, **timing}.items() if not isinstance(v, str)})
    run.log_artifact(MODELS / "cnn" / f"{name}.pt")
    registry.log_classifier(run, MODELS / "cnn" / f"{name}.pt", test_images, metrics["test_accuracy"])


if __name__ == "__main__":
    main(sys.argv[1])
