"""Time to 94 % on CIFAR-10 on one GPU, the goal of airbench-style fast training: the
`cifar10-airnet` entry of params.yaml with the wide GPU profile below, without airbench's tricks,
then the tricks added one at a time (the last is the README's `dvc exp run -S ...` profile),
each trained with several epoch budgets, side by side in one run. Prints, per trick, budget and seed, the final test
accuracy (with the entry's test-time augmentation) and the training time (evaluations excluded;
a one-epoch warm-up run first lets cuDNN pick its kernels), then per trick the smallest budget
whose runs all reach 94 %, with its mean time.

The tricks (Keller Jordan's airbench94, each an option of the train_cnn schema):
  flip_translate  test-time augmentation over the image, its mirror and two mirrored one-pixel
                  translations (`tta: flip_translate`)
  lookahead       every 5 steps, the weights jump to an average of themselves (`lookahead: true`)
  airbench_bn     airbench's batch norm and optimiser: BN scales frozen at 1, BN momentum 0.4
                  (airbench's 0.6) and eps 1e-12, BN shifts learned 64x faster, block convs
                  initialised as the identity (dirac), SGD momentum 0.85, lr 1.5 on the mean loss
                  (airbench's 11.5 per 1024 examples), weight decay 0.0013, warm-up 23 %

Needs `dvc repro preprocess` and a CUDA device.
Run: python benchmarks/cifar10_gpu_time_to_94.py [--seeds 0 1] [--tricks profile flip_translate ...]
"""

import argparse
import json

import torch

from dlcourse.course import data
from dlcourse.pipeline import params
from dlcourse.course.models import Classifier
from dlcourse.pipeline.layout import PREPARED
from dlcourse.course.training import resolve_device, seed_everything, train_epochs

TARGET = 0.94
# The wide profile without airbench's tricks (which the entry in params.yaml now has), as measured first.
GPU_PROFILE = {"model": {"widths": [24, 64, 256, 256], "activation": "gelu", "whiten": True},
               "batch_size": 1024, "lr": 0.8, "momentum": 0.9, "weight_decay": 0.0005, "warmup": 0.2,
               "bias_lr_scale": 1.0, "lookahead": False, "tta": "flip", "bf16": True,
               "label_smoothing": 0.2}  # airbench's; the CPU entry trains without (params.yaml)
AIRBENCH_BN = {"model": {**GPU_PROFILE["model"], "bn_momentum": 0.4, "bn_eps": 1e-12, "bn_weight": False, "dirac": True},
               "bias_lr_scale": 64.0, "momentum": 0.85, "lr": 1.5, "weight_decay": 0.0013, "warmup": 0.23}
# Each trick adds its overrides to the ones before it, with the epoch budgets it is tried at.
TRICKS = {
    "profile": ({}, [30]),  # 44 epochs: 94.14 % and 94.42 % (README)
    "flip_translate": ({"tta": "flip_translate"}, [24, 30]),
    "lookahead": ({"lookahead": True}, [20, 30]),
    "airbench_bn": (AIRBENCH_BN, [10, 12, 16, 20]),
}


def train_once(p, train, test, device, seed: int) -> tuple[float, float, float]:
    """The final test accuracy, the training seconds and those of the first epoch (where a
    recompilation would show)."""
    rng = seed_everything(seed, device)
    model = Classifier(p.architecture, p.model, channels=3).to(device)
    model.fit_input_statistics(train[0], p.normalize)
    records = train_epochs(model, *train, *test, p, rng)
    return records[-1].test_accuracy, sum(r.seconds for r in records), records[0].seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tricks", nargs="+", default=list(TRICKS), choices=list(TRICKS),
                        help="the tricks to measure; each keeps the ones listed before it in TRICKS")
    parser.add_argument("--epochs", type=int, nargs="+", help="epoch budgets for every trick (default: each trick's own)")
    args = parser.parse_args()
    device = resolve_device("auto")
    if device.type != "cuda":
        raise SystemExit("cifar10_gpu_time_to_94.py: no CUDA device; this benchmark measures a GPU")
    base = params.load().train_cnn["cifar10-airnet"]
    splits = [data.load_split(PREPARED, "cifar10", split) for split in ("train", "test")]
    train, test = [(s.images.to(device), s.labels.to(device)) for s in splits]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)

    overrides, summary = dict(GPU_PROFILE), {}
    for trick, (added, budgets) in TRICKS.items():
        overrides = {**overrides, **added}
        if trick not in args.tricks:
            continue
        measured = overrides

        def entry(epochs: int):
            return base.model_validate({**base.model_dump(), **overrides, "epochs": epochs})

        train_once(entry(1), train, test, device, seed=0)  # warm-up: cuDNN picks its kernels
        results = {}
        for epochs in args.epochs or budgets:
            for seed in args.seeds:
                accuracy, seconds, first_epoch = train_once(entry(epochs), train, test, device, seed)
                results.setdefault(epochs, []).append((accuracy, seconds))
                print(json.dumps({"trick": trick, "epochs": epochs, "seed": seed, "test_accuracy": accuracy,
                                  "train_seconds": round(seconds, 2), "first_epoch_seconds": round(first_epoch, 2)}),
                      flush=True)
        reached = [e for e in results if all(a >= TARGET for a, _ in results[e])]
        if reached:
            runs = results[min(reached)]
            summary[trick] = (f"{min(reached)} epochs, {sum(s for _, s in runs) / len(runs):.2f} s (mean of "
                              f"{len(runs)} runs, {min(a for a, _ in runs):.4f} at worst)")
        else:
            best = max(results, key=lambda e: min(a for a, _ in results[e]))
            summary[trick] = (f"not reached within {max(results)} epochs (best: {best} epochs, "
                              f"{min(a for a, _ in results[best]):.4f} at worst)")
    print(f"overrides of the last trick measured: {json.dumps(measured)}")
    for trick, line in summary.items():
        print(f"time to {TARGET:.0%}, {trick}: {line}")


if __name__ == "__main__":
    main()
