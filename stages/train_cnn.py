"""Stage `train-cnn@<entry>`: a convolutional (or baseline) network on MNIST or CIFAR-10
(slides "Architectures plus complexes" and the CIFAR-10 exercise); one entry per network in
`params.yaml: train_cnn`.

With `processes: N` > 1 the stage runs again under `torchrun` (N processes on this machine); it also
runs as it is under a `torchrun` started by hand, on several machines (README). Only rank 0 writes
outputs and logs the MLflow run.
"""

import math
import sys
from dataclasses import dataclass

import pandas as pd
import torch
from torch.distributed.elastic.multiprocessing.errors import record

from dlcourse import progress
from dlcourse.course import data, robust
from dlcourse.course.data import to_float
from dlcourse.pipeline import distributed, layout, params, registry
from dlcourse.files import write_csv, write_json
from dlcourse.course.models import Classifier, parameter_count, save_classifier
from dlcourse.course.divergence import divergence_explained
from dlcourse.course.training import EpochRecord, epoch_images, resolve_device, seed_everything, train_epochs
from dlcourse.pipeline.stage import Stage, stage


@dataclass
class Trained:
    model: Classifier
    records: list[EpochRecord]
    kept_epoch: int  # the epoch whose weights the model holds: the last, unless overfitting was caught
    overfitting_epoch: int | None = None  # adversarial training: where catastrophic overfitting was caught

    @property
    def kept(self) -> EpochRecord:
        return self.records[self.kept_epoch - 1]


def train_classifier(p: params.CnnRunParams, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                     test_y: torch.Tensor, rng: torch.Generator, world: distributed.World = distributed.SINGLE,
                     on_epoch=lambda record: None, label: str | None = None) -> Trained:
    """The entry's network trained on uint8 images held on one device, with one record per epoch (on the
    main process; none on the others). With `p.adversarial`: trained on adversarial examples, the last
    `holdout` training images left out for a robust check after every epoch (course/robust.py)."""
    model = Classifier(p.architecture, p.model, channels=train_x.shape[1]).to(train_x.device)
    model.fit_input_statistics(train_x, p.normalize)
    a = p.adversarial
    if a is None:
        records = train_epochs(model, train_x, train_y, test_x, test_y, p, rng, on_epoch=on_epoch, world=world,
                               label=label)
        return Trained(model, records, len(records))
    kept = len(train_y) - a.holdout
    watch = robust.OverfittingWatch(model, to_float(train_x[kept:]), train_y[kept:], a.eps, a.check_steps,
                                    2.5 * a.eps / a.check_steps, a.overfit_drop, rng)

    def checked(record):
        record.robust_accuracy = watch(record.epoch)
        on_epoch(record)

    ramp = round(a.eps_ramp * p.epochs * math.ceil(epoch_images(p, kept) / p.batch_size))  # in batches
    perturb = robust.perturbation(a.method, a.eps, a.step_factor * a.eps, a.steps, rng, ramp)
    records = train_epochs(model, train_x[:kept], train_y[:kept], test_x, test_y, p, rng, on_epoch=checked,
                           world=world, label=label, perturb=perturb)
    return Trained(model, records, watch.keep(), watch.overfitting_epoch)


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
            if record.robust_accuracy is not None:
                run.log_metrics({"curve.holdout_robust_accuracy": record.robust_accuracy}, step=record.epoch)

        suspects = job.entry_params("lr", "optimizer", "momentum", "weight_decay", "bias_lr_scale")
        with divergence_explained(job.name, suspects):
            trained = train_classifier(p, train_x, train_y, test_x, test_y, job.rng, world, log_epoch, label=job.name)
        if world.is_main:
            write_outputs(name, p, trained, train.classes, epoch_images(p, len(train_y)), test.images, job)
    if job.is_main:
        robust_part = ("" if p.adversarial is None else
                       f", {100 * trained.kept.robust_accuracy:.2f} % held-out robust accuracy at eps {p.adversarial.eps:g}")
        progress.summary(job.name, f"{100 * trained.kept.test_accuracy:.2f} % test accuracy{robust_part}, "
                                   f"{progress.counted(p.epochs, 'epoch')}"
                                   f"{'' if p.epoch_images is None else f' of {p.epoch_images} images'}")


def write_outputs(name: str, p: params.CnnRunParams, trained: Trained, classes: list[str], epoch_size: int,
                  test_images: torch.Tensor, job: Stage) -> None:
    run, device, world, records, model = job.run, job.device, job.world, trained.records, trained.model
    seconds = sum(r.seconds for r in records)
    metrics = {
        "test_accuracy": trained.kept.test_accuracy,
        "best_test_accuracy": max(r.test_accuracy for r in records),
        "epochs": p.epochs,
        "parameters": parameter_count(model.net),
        "dataset": p.dataset,
    }
    if p.adversarial is not None:
        metrics["adversarial"] = {
            **p.adversarial.model_dump(),
            "holdout_robust_accuracy": [r.robust_accuracy for r in records],  # per epoch, PGD of check_steps
            "overfitting_epoch": trained.overfitting_epoch,  # null: no catastrophic overfitting seen
            "kept_epoch": trained.kept_epoch,
            "robust_accuracy": trained.kept.robust_accuracy,
        }
    timing = {"train_seconds": round(seconds, 3), "images_per_second": round(p.epochs * epoch_size / seconds, 1),
              "device": str(device), "threads": torch.get_num_threads(), "world_size": world.size}
    save_classifier(model, p.dataset, classes, layout.model(f"cnn/{name}"))
    write_json(layout.training_metrics(f"cnn/{name}"), metrics)
    job.write_timing(timing)
    curve = pd.DataFrame([{"epoch": r.epoch, "test_accuracy": r.test_accuracy, "train_loss": r.train_loss}
                          for r in records])
    if p.adversarial is not None:
        curve["holdout_robust_accuracy"] = [r.robust_accuracy for r in records]
    write_csv(curve, layout.training_curve(f"cnn/{name}"))

    run.log_metrics({k: v for k, v in {**metrics, **timing}.items() if isinstance(v, (int, float))})
    run.log_artifact(layout.model(f"cnn/{name}"))
    tags = {} if p.adversarial is None else {
        "adversarial_training": f"{p.adversarial.method}, eps {p.adversarial.eps:g}",
        "holdout_robust_accuracy": f"{metrics['adversarial']['robust_accuracy']:.4f}"}
    registry.log_classifier(run, layout.model(f"cnn/{name}"), test_images, metrics["test_accuracy"], tags)


if __name__ == "__main__":
    main(sys.argv[1])
