"""Time-to-accuracy tricks for one `train_cnn` entry on this machine, measured side by side in one
run: each variant is the entry's params with some keys overridden, trained from the same seed on
the prepared data; the script prints each variant's training seconds (evaluations excluded),
images per second, test accuracy after every epoch, and the trained model's confidence on the test
set as the evaluate stage measures it (no test-time augmentation): its mean, and how many test
images it gets wrong with a confidence of at least evaluate.confident.

Run: python benchmarks/cnn_tricks.py cifar10-airnet "bf16=false" "bf16=true" "bf16=true epochs=7"
(each quoted argument is one variant: space-separated key=value overrides, values read as YAML).
Needs `dvc repro preprocess`.
"""

import sys

import torch
import yaml

from dlcourse.course import data
from dlcourse.pipeline import params
from dlcourse.course.models import Classifier
from dlcourse.pipeline.layout import PREPARED
from dlcourse.course.training import predict_proba, resolve_device, seed_everything, train_epochs


def run_variant(entry: str, overrides: dict, all_params) -> tuple[float, list, torch.Tensor]:
    p = all_params.train_cnn[entry].model_copy(update=overrides)
    device = resolve_device(all_params.device)
    rng = seed_everything(all_params.seed, device)
    if p.threads:
        torch.set_num_threads(p.threads)
    train, test = (data.load_split(PREPARED, p.dataset, split) for split in ("train", "test"))
    model = Classifier(p.architecture, p.model, channels=train.images.shape[1]).to(device)
    model.fit_input_statistics(train.images.to(device), p.normalize)
    records = train_epochs(model, train.images.to(device), train.labels.to(device), test.images.to(device),
                           test.labels.to(device), p, rng,
                           on_epoch=lambda r: print(f"    epoch {r.epoch}: {r.test_accuracy:.2%} ({r.seconds:.1f} s)",
                                                    flush=True))
    confidence, predicted = predict_proba(model, data.to_float(test.images, device)).cpu().max(1)
    wrong_confidence = confidence[predicted != test.labels]
    print(f"    mean confidence {confidence.double().mean():.4f}, most confident error "
          f"{wrong_confidence.max():.4f}", flush=True)
    return sum(r.seconds for r in records), records, wrong_confidence


def main(entry: str, variants: list[str]) -> None:
    all_params = params.load()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, entry {entry}")
    rows = []
    for variant in variants:
        overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in variant.split())}
        print(f"  {variant or '(params.yaml)'}", flush=True)
        seconds, records, wrong_confidence = run_variant(entry, overrides, all_params)
        images = len(records) * len(data.load_split(PREPARED, all_params.train_cnn[entry].dataset, "train").labels)
        confidently_wrong = int((wrong_confidence >= all_params.evaluate.confident).sum())
        rows.append((variant or "(params.yaml)", seconds, images / seconds, records[-1].test_accuracy, confidently_wrong))
    print(f"\n{'variant':40s} {'train s':>8s} {'img/s':>7s} {'accuracy':>9s} "
          f"{'wrong at >= ' + str(all_params.evaluate.confident):>15s}")
    for name, seconds, speed, acc, confidently_wrong in rows:
        print(f"{name:40s} {seconds:8.1f} {speed:7.0f} {acc:9.2%} {confidently_wrong:15d}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or [""])
