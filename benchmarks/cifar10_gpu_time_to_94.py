"""Time to 94 % on CIFAR-10 on one GPU, the goal of airbench-style fast training: the
`cifar10-airnet` entry of params.yaml with the GPU profile below (the same overrides as the
README's `dvc exp run -S ...`), trained with several epoch budgets. Prints, per budget and seed,
the final test accuracy (with flip test-time augmentation) and the training time (evaluations
excluded), then the smallest budget whose runs all reach 94 %, with its mean time.

Needs `dvc repro preprocess` and a CUDA device.
Run: python benchmarks/cifar10_gpu_time_to_94.py [--epochs 10 14 18] [--seeds 0 1]
"""

import argparse
import json

import torch

from dlcourse import data, params
from dlcourse.models import Classifier
from dlcourse.paths import PREPARED
from dlcourse.training import resolve_device, seed_everything, train_epochs

TARGET = 0.94
GPU_PROFILE = {"model": {"widths": [24, 64, 256, 256], "activation": "gelu", "whiten": True},
               "batch_size": 1024, "lr": 0.8, "bf16": True}


def train_once(p, train, test, device, seed: int) -> tuple[float, float]:
    generator = seed_everything(seed, device)
    model = Classifier(p.architecture, p.model, channels=3).to(device)
    model.fit_input_statistics(train[0], p.normalize)
    records = train_epochs(model, *train, *test, p, generator)
    return records[-1].test_accuracy, sum(r.seconds for r in records)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 14, 18, 24])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--profile", type=json.loads, default=GPU_PROFILE, help="JSON overrides of the entry")
    args = parser.parse_args()
    device = resolve_device("auto")
    if device.type != "cuda":
        raise SystemExit("cifar10_gpu_time_to_94.py: no CUDA device; this benchmark measures a GPU")
    base = params.load().train_cnn["cifar10-airnet"]
    splits = [data.load_split(PREPARED, "cifar10", split) for split in ("train", "test")]
    train, test = [(s.images.to(device), s.labels.to(device)) for s in splits]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, profile {json.dumps(args.profile)}", flush=True)

    def entry(epochs: int):
        return base.model_validate({**base.model_dump(), **args.profile, "epochs": epochs})

    train_once(entry(1), train, test, device, seed=0)  # warm-up: cuDNN picks its kernels
    results = {}
    for epochs in args.epochs:
        for seed in args.seeds:
            accuracy, seconds = train_once(entry(epochs), train, test, device, seed)
            results.setdefault(epochs, []).append((accuracy, seconds))
            print(json.dumps({"epochs": epochs, "seed": seed, "test_accuracy_tta": accuracy,
                              "train_seconds": round(seconds, 2)}), flush=True)
    reached = [e for e in args.epochs if all(a >= TARGET for a, _ in results[e])]
    if reached:
        runs = results[min(reached)]
        print(f"time to {TARGET:.0%}: {min(reached)} epochs, {sum(s for _, s in runs) / len(runs):.2f} s "
              f"(mean of {len(runs)} runs, accuracy {min(a for a, _ in runs):.4f} at worst)")
    else:
        print(f"{TARGET:.0%} not reached within {max(args.epochs)} epochs")


if __name__ == "__main__":
    main()
