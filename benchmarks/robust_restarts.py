"""The robust accuracy's PGD with restarts, two ways side by side on one trained model: every restart
attacking every image (the reference), and each restart attacking only the images no earlier one has
fooled (`robust.robust_correct`, as AutoAttack does). Prints each one's seconds, its robust accuracy,
and whether the two give the same verdict image by image.

Run: python benchmarks/robust_restarts.py [model, default cnn/mnist] [images, default 1000]
Needs the model trained (`dvc repro train-cnn@mnist`); the attack's params are params.yaml's.
"""

import sys
import time

import torch

import trained_classifier
from dlcourse.course import attacks, robust
from dlcourse.course.training import seed_everything


def every_image_every_restart(model, x, y, eps, steps, step, restarts, rng) -> torch.Tensor:
    """The reference: each restart draws its random starts for the batch and attacks every image."""
    with torch.no_grad():
        still = model(x).argmax(1) == y
    for _ in range(restarts):
        attacked = attacks.pgd(model, x, y, eps, steps, step, random_start=True, rng=rng)
        with torch.no_grad():
            still &= model(attacked).argmax(1) == y
    return still


def main(name: str = "cnn/mnist", images: int = 1000) -> None:
    all_params, model, x, y = trained_classifier.load(name, images)
    p, settings = all_params.attack, all_params.attack.models[name]
    eps = settings.robust_eps if settings.robust_eps is not None else max(settings.eps)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {name}, {images} images, eps {eps:g}, "
          f"PGD {p.strong_pgd_steps} steps of {p.strong_pgd_step:g}, {p.strong_pgd_restarts} restarts")
    verdicts, seconds = [], []
    for method in (every_image_every_restart, robust.robust_correct):
        rng = seed_everything(all_params.seed)
        start = time.perf_counter()
        verdicts.append(method(model, x, y, eps, p.strong_pgd_steps, p.strong_pgd_step, p.strong_pgd_restarts, rng))
        seconds.append(time.perf_counter() - start)
        print(f"{method.__name__:>28s}: {seconds[-1]:7.1f} s, robust accuracy "
              f"{100 * verdicts[-1].float().mean().item():.2f} %")
    print(f"ratio (reference / standing only): {seconds[0] / seconds[1]:.2f}x; the same verdict for every image: "
          f"{torch.equal(*verdicts)} ({int((verdicts[0] != verdicts[1]).sum())} differ)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cnn/mnist", int(sys.argv[2]) if len(sys.argv) > 2 else 1000)
