"""Stage `train-cnn@<entry>`: a convolutional (or baseline) network on MNIST or CIFAR-10
(slides "Architectures plus complexes" and the CIFAR-10 exercise); one entry per network in
`params.yaml: train_cnn`."""

import sys

import pandas as pd
import torch

from dlcourse import data, params, registry, tracking
from dlcourse.files import write_csv, write_json
from dlcourse.models import Classifier, parameter_count, save_classifier
from dlcourse.paths import METRICS, MODELS, PLOTS, PREPARED
from dlcourse.training import resolve_device, seed_everything, train_epochs


def main(name: str) -> None:
    all_params = params.load()
    if name not in all_params.train_cnn:
        raise SystemExit(f"params.yaml: train_cnn has no entry {name!r} (entries: {sorted(all_params.train_cnn)})")
    p = all_params.train_cnn[name]
    stage = f"train-cnn@{name}"
    with tracking.stage_run(stage, tracking.declared_params(stage, all_params)) as run:
        device = resolve_device(all_params.device)
        generator = seed_everything(all_params.seed, device)
        if p.threads:
            torch.set_num_threads(p.threads)
        train, test = (data.load_split(PREPARED, p.dataset, split) for split in ("train", "test"))
        train_x, train_y = train.images.to(device), train.labels.to(device)
        test_x, test_y = test.images.to(device), test.labels.to(device)

        model = Classifier(p.architecture, p.model, channels=train.images.shape[1]).to(device)
        model.fit_input_statistics(train_x, p.normalize)

        def log_epoch(record):
            run.log_metrics({"curve.test_accuracy": record.test_accuracy, "curve.train_loss": record.train_loss,
                             "curve.epoch_seconds": record.seconds}, step=record.epoch)

        records = train_epochs(model, train_x, train_y, test_x, test_y, p, generator, on_epoch=log_epoch)
        seconds = sum(r.seconds for r in records)
        metrics = {
            "test_accuracy": records[-1].test_accuracy,
            "best_test_accuracy": max(r.test_accuracy for r in records),
            "epochs": p.epochs,
            "parameters": parameter_count(model.net),
            "dataset": p.dataset,
        }
        timing = {"train_seconds": round(seconds, 3), "images_per_second": round(p.epochs * len(train_y) / seconds, 1),
                  "device": str(device), "threads": torch.get_num_threads()}
        save_classifier(model, p.dataset, train.classes, MODELS / "cnn" / f"{name}.pt")
        write_json(METRICS / "cnn" / f"{name}.json", metrics)
        write_json(METRICS / "timing" / f"{stage}.json", timing)
        write_csv(pd.DataFrame([{"epoch": r.epoch, "test_accuracy": r.test_accuracy, "train_loss": r.train_loss}
                                for r in records]), PLOTS / "cnn" / f"{name}.csv")

        run.log_metrics({k: v for k, v in {**metrics, **timing}.items() if not isinstance(v, str)})
        run.log_artifact(MODELS / "cnn" / f"{name}.pt")
        registry.log_classifier(run, MODELS / "cnn" / f"{name}.pt", test.images, metrics["test_accuracy"])


if __name__ == "__main__":
    main(sys.argv[1])
