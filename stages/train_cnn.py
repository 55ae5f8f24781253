"""Stage `train-cnn@<entry>`: a convolutional (or baseline) network on MNIST or CIFAR-10
(slides "Architectures plus complexes" and the CIFAR-10 exercise); one entry per network in
`params.yaml: train_cnn`.

With `processes: N` > 1 the stage runs again under `torchrun` (N processes on this machine); it also
runs as it is under a `torchrun` started by hand, on several machines (README). Only rank 0 writes
outputs and logs the MLflow run.
"""

import sys

import pandas as pd
import torch
from torch.distributed.elastic.multiprocessing.errors import record

from dlcourse import progress
from dlcourse.course import data
from dlcourse.pipeline import distributed, layout, params, registry
from dlcourse.files import write_csv, write_json
from dlcourse.course.models import Classifier, parameter_count, save_classifier
from dlcourse.course.training import EpochRecord, divergence_explained, resolve_device, seed_everything, train_epochs
from dlcourse.pipeline.stage import Stage, stage


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
    with stage("train-cnn", name, entry="train_cnn", seed=seed_everything, device=resolve_device,
               distributed=distributed) as job:
        p, run, world, device = job.entry, job.run, job.world, job.device
        if p.threads:
            torch.set_num_threads(p.threads)
        train, test = (data.load_split(layout.PREPARED, p.dataset, split) for split in ("train", "test"))
        if world.is_main:
            run.log_dataset(layout.prepared_split(p.dataset, "train"), "training")
            run.log_dataset(layout.prepared_split(p.dataset, "test"), "evaluation")
        train_x, train_y = train.images.to(device), train.labels.to(device)
        test_x, test_y = test.images.to(device), test.labels.to(device)

        def log_epoch(record):
            run.log_metrics({"curve.test_accuracy": record.test_accuracy, "curve.train_loss": record.train_loss,
                             "curve.epoch_seconds": record.seconds}, step=record.epoch)

        suspects = job.entry_params("lr", "optimizer", "momentum", "weight_decay", "bias_lr_scale")
        with divergence_explained(job.name, suspects):
            model, records = train_classifier(p, train_x, train_y, test_x, test_y, job.rng, world, log_epoch,
                                              label=job.name)
        if world.is_main:
            write_outputs(name, p, model, train.classes, records, len(train_y), test.images, job)
    if job.is_main:
        progress.summary(job.name, f"{100 * records[-1].test_accuracy:.2f} % test accuracy, "
                                   f"{progress.counted(p.epochs, 'epoch')}")


def write_outputs(name: str, p: params.CnnRunParams, model: Classifier, classes: list[str],
                  records: list[EpochRecord], train_size: int, test_images: torch.Tensor, job: Stage) -> None:
    run, device, world = job.run, job.device, job.world
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
    save_classifier(model, p.dataset, classes, layout.model(f"cnn/{name}"))
    write_json(layout.training_metrics(f"cnn/{name}"), metrics)
    job.write_timing(timing)
    write_csv(pd.DataFrame([{"epoch": r.epoch, "test_accuracy": r.test_accuracy, "train_loss": r.train_loss}
                            for r in records]), layout.training_curve(f"cnn/{name}"))

    run.log_metrics({k: v for k, v in {**metrics, **timing}.items() if not isinstance(v, str)})
    run.log_artifact(layout.model(f"cnn/{name}"))
    registry.log_classifier(run, layout.model(f"cnn/{name}"), test_images, metrics["test_accuracy"])


if __name__ == "__main__":
    main(sys.argv[1])
