"""Inference with the classifiers' convolution weights channels-last against the default layout, side
by side in one run, on the trained models under `models/cnn/` (needs them: `dvc repro train-cnn`):
the forward pass of a batch (what `evaluate`, `fooling`'s evolution and `score-gan` do) and the
forward pass with the input's gradient (what `attack` and `fooling`'s gradient ascent do), on the
same images, with each layout's error against the same pass in float64 (the largest difference,
relative to the largest output).

Run: python benchmarks/inference_layout.py [--batch 500] [--repeats 5] [ENTRY ...]
"""

import argparse
import time

import torch

from dlcourse.course.models import IMAGE_SHAPES, load_classifier
from dlcourse.pipeline.layout import MODELS


def timed(step, repeats: int):
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        out = step()
    return (time.perf_counter() - start) / repeats, out


def forward(model, x):
    with torch.no_grad():
        return model(x)


def input_gradient(model, x):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(model(x).log_softmax(1)[:, 0].sum(), x)[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("entries", nargs="*", default=["cifar10-airnet", "cifar10-cnn", "mnist", "mnist-course"])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batches of {args.batch}")
    print(f"{'model':16s} {'pass':15s} {'default ms':>10s} {'channels-last ms':>16s} {'speed-up':>8s} "
          f"{'error':>8s} {'error, channels-last':>20s}")
    for entry in args.entries:
        path = MODELS / "cnn" / f"{entry}.pt"
        default, checkpoint = load_classifier(path, "cpu", torch.contiguous_format)
        channels_last, _ = load_classifier(path, "cpu", torch.channels_last)
        reference, _ = load_classifier(path, "cpu", torch.contiguous_format)
        reference = reference.double()
        x = torch.rand(args.batch, *IMAGE_SHAPES[checkpoint["dataset"]], generator=torch.Generator().manual_seed(0))
        for name, step in (("forward", forward), ("input gradient", input_gradient)):
            before, a = timed(lambda: step(default, x), args.repeats)
            after, b = timed(lambda: step(channels_last, x), args.repeats)
            exact = step(reference, x.double())
            error = [float((out.double() - exact).abs().max() / exact.abs().max()) for out in (a, b)]
            print(f"{entry:16s} {name:15s} {before * 1e3:10.0f} {after * 1e3:16.0f} {before / after:7.2f}x "
                  f"{error[0]:8.1e} {error[1]:20.1e}", flush=True)


if __name__ == "__main__":
    main()
