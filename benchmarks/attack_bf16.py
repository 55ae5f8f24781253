"""PGD with its gradients in float32 and in bfloat16, side by side on one trained model: seconds
and the accuracy left (judged in float32 both times), per eps.

Run: python benchmarks/attack_bf16.py [model, default cnn/cifar10-airnet] [images, default 500]
Needs the model trained (`dvc repro train-cnn@cifar10-airnet`).
"""

import sys
import time

import torch

import trained_classifier
from dlcourse.course import attacks
from dlcourse.course.training import seed_everything


def main(name: str = "cnn/cifar10-airnet", images: int = 500) -> None:
    all_params, model, x, y = trained_classifier.load(name, images)
    p, eps_list = all_params.attack, all_params.attack.models[name].eps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {name}, {images} images, "
          f"PGD {p.pgd_steps} steps")
    print(f"{'eps':>8s} {'fp32 s':>8s} {'bf16 s':>8s} {'fp32 acc':>9s} {'bf16 acc':>9s}")
    totals = [0.0, 0.0]
    for eps in eps_list:
        row = []
        for i, bf16 in enumerate((False, True)):
            rng = seed_everything(all_params.seed)
            method = attacks.standard_methods(model, rng, p.pgd_steps, p.pgd_step_factor, p.pgd_random_start,
                                              bf16)["pgd"]
            start = time.perf_counter()
            accuracy = attacks.accuracy_under(model, x, y, lambda xb, yb: method(xb, yb, eps))["accuracy"]
            seconds = time.perf_counter() - start
            totals[i] += seconds
            row.append((seconds, accuracy))
        print(f"{eps:8g} {row[0][0]:8.1f} {row[1][0]:8.1f} {row[0][1]:9.2%} {row[1][1]:9.2%}")
    print(f"total: float32 {totals[0]:.1f} s, bfloat16 {totals[1]:.1f} s: {totals[0] / totals[1]:.2f}x")


if __name__ == "__main__":
    main(*sys.argv[1:2], *(int(a) for a in sys.argv[2:3]))
