"""How good a GAN's samples are, judged by one of the project's own classifiers (no downloaded
Inception network): its confidence, its predicted-class histogram (class coverage), an
Inception-Score analogue, and, in its penultimate feature space, the Fréchet distance (as the FID)
and precision / recall (Kynkäänniemi et al. 2019), which tell "ugly samples" (low precision) from
"too few kinds of samples" (low recall, mode collapse), two failures one Fréchet distance mixes up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .cogan import JUDGED_AS, judged_domains
from .generative import sample


def classifier_reading(model: nn.Module, module_name: str, batch_size: int = 1000
                       ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A callable images -> (the classifier's softmax probabilities, the flattened *input* of
    `model.<module_name>`), both from one forward pass (in eval mode), batch by batch.

    Naming the classifier's last layer (e.g. Reseau2's `fc2`) gives its penultimate features.
    """
    module = model.get_submodule(module_name)

    @torch.no_grad()
    def read(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured, probabilities = [], []
        handle = module.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].flatten(1)))
        try:
            model.eval()
            for chunk in images.split(batch_size):
                probabilities.append(F.softmax(model(chunk), dim=1))
        finally:
            handle.remove()
        return torch.cat(probabilities), torch.cat(captured)

    return read


def classifier_confidence(probs: torch.Tensor, threshold: float = 0.9) -> dict[str, float]:
    """From class probabilities (N x K): the fraction of samples whose top probability is at
    least `threshold`, and the mean top probability."""
    top = probs.max(dim=1).values
    return {"confident_fraction": float((top >= threshold).float().mean()), "mean_confidence": float(top.mean())}


def class_distribution(probs: torch.Tensor) -> list[float]:
    """The fraction of samples predicted as each class (argmax of the probabilities)."""
    counts = torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1])
    return (counts.double() / len(probs)).tolist()


def inception_score(probs: torch.Tensor, splits: int = 1) -> tuple[float, float]:
    """exp(E_x[KL(p(y|x) || p(y))]) (Salimans et al. 2016) with the given classifier's
    probabilities, p(y) being the mean over each split; returns the mean and std over splits.

    1 when every sample gets the same prediction; K when the predictions are one-hot and
    spread evenly over K classes.
    """
    scores = []
    for part in probs.double().chunk(splits):
        marginal = part.mean(dim=0, keepdim=True)
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(dim=1)  # 0 log 0 = 0
        scores.append(math.exp(float(kl.mean())))
    scores_t = torch.tensor(scores, dtype=torch.float64)
    return float(scores_t.mean()), float(scores_t.std()) if splits > 1 else 0.0


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix, by eigendecomposition."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N x F), as in the FID
    (Heusel et al. 2017), in float64:
        |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)),
    with tr((S_a S_b)^(1/2)) = tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), a symmetric product whose
    eigenvalues `eigh` computes stably."""
    a, b = features_a.double().cpu(), features_b.double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrt_psd(cov_a)
    product = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((product + product.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root
    return float(distance.clamp(min=0))


def kth_neighbour_distances(features: torch.Tensor, k: int, chunk: int = 1000) -> torch.Tensor:
    """Each point's distance to its k-th nearest neighbour in the same set (itself excluded)."""
    return torch.cat([torch.cdist(part, features).kthvalue(k + 1, dim=1).values for part in features.split(chunk)])


def _inside_any_ball(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([(torch.cdist(part, centres) <= radii[None]).any(dim=1) for part in points.split(chunk)])


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1000,
                     real_radii: torch.Tensor | None = None) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019). Each set's manifold is the union
    of balls around its points, of radius the distance to the point's k-th nearest neighbour in
    its own set; precision: the fraction of fake points inside the real manifold; recall: the
    fraction of real points inside the fake manifold. Features N x F (float32 distances: 10,000 x
    10,000 of them in seconds). `real_radii`: the real points' k-th neighbour distances, when already
    computed (`kth_neighbour_distances(real, k)`: the same for every set of fakes)."""
    real, fake = real.float().cpu(), fake.float().cpu()
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision_recall: k = {k} needs more than {k} points in each set "
                         f"(real {len(real)}, fake {len(fake)})")
    if real_radii is None:
        real_radii = kth_neighbour_distances(real, k, chunk)
    precision = _inside_any_ball(fake, real, real_radii.float().cpu(), chunk)
    recall = _inside_any_ball(real, fake, kth_neighbour_distances(fake, k, chunk), chunk)
    return {"precision": float(precision.double().mean()), "recall": float(recall.double().mean())}


def class_coverage(probs: torch.Tensor) -> dict:
    """Mode collapse seen directly: the share of samples predicted as each class, and the smallest."""
    fractions = class_distribution(probs)
    return {"class_fractions": fractions, "rarest_class_share": min(fractions)}


# --- one judge for every GAN entry, its real-data baseline, and its scores ---------------------

@dataclass
class Judge:
    """A classifier, the callable reading images with it (`classifier_reading`: probabilities and
    penultimate features), and the real test images' features and scores (the reference every entry
    is compared with)."""

    classifier: nn.Module
    read: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    real_features: torch.Tensor
    confident: float
    nearest_neighbours: int
    real: dict  # the real-data baseline: the same scores for real training images
    real_radii: torch.Tensor | None = None  # the real features' k-th neighbour distances, once computed

    def radii(self) -> torch.Tensor:
        """The real manifold of precision / recall: computed once for all the sets judged."""
        if self.real_radii is None:
            self.real_radii = kth_neighbour_distances(self.real_features.float().cpu(), self.nearest_neighbours)
        return self.real_radii


def load_judge(classifier_path: str | Path, feature_layer: str, test_images: torch.Tensor, train_images: torch.Tensor,
               samples: int, confident: float, nearest_neighbours: int, rng: torch.Generator,
               device: torch.device | str) -> Judge:
    """The judge of `score-gan` and `benchmarks/gan_sweep.py` alike: the classifier read from
    `classifier_path`, the test set's features, and the baseline: `samples` real training images
    (as many as the GAN's samples, drawn with `rng`) scored against the test set as a GAN's
    samples are."""
    from ..models import load_classifier
    from ..data import to_float

    classifier, _ = load_classifier(classifier_path, device)
    read = classifier_reading(classifier, feature_layer)
    test_probs, test_features = read(to_float(test_images, device))
    real_sample = to_float(train_images[torch.randperm(len(train_images), generator=rng)[:samples]], device)
    judge = Judge(classifier, read, test_features, confident, nearest_neighbours, {})
    judge.real = judge_images(judge, real_sample, full=True)
    judge.real["test_confident_fraction"] = classifier_confidence(test_probs.cpu(), confident)["confident_fraction"]
    return judge


def judge_images(judge: Judge, images: torch.Tensor, asked: torch.Tensor | None = None, full: bool = True) -> dict:
    """Images in [0, 1] judged: confidence, class coverage, the Fréchet distance to the test set's
    features, and when `full` the Inception-Score analogue and precision / recall (k-NN, the slow
    part); with `asked` (the classes a conditional GAN was asked for), how often the classifier
    reads them."""
    probs, fake_features = judge.read(images)
    probs = probs.cpu()
    scores = {**classifier_confidence(probs, judge.confident), **class_coverage(probs),
              "frechet_distance": frechet_distance(fake_features, judge.real_features)}
    if asked is not None:
        scores["label_agreement"] = float((probs.argmax(1) == asked.cpu()).float().mean())
    if full:
        scores["inception_score"] = inception_score(probs)[0]
        scores.update(precision_recall(judge.real_features, fake_features, judge.nearest_neighbours,
                                       real_radii=judge.radii()))
    return scores


def pair_agreement(classifier: nn.Module, first: torch.Tensor, second: torch.Tensor) -> float:
    """The fraction of pairs (row i of `first` and of `second`, images in [0, 1]) that `classifier` reads
    as the same class: how often a coupled generator's two images of one latent vector show one digit."""
    from ..training import predict_proba

    same = predict_proba(classifier, first).argmax(1) == predict_proba(classifier, second).argmax(1)
    return float(same.double().mean())


def score_generator(generator: nn.Module, noise: torch.Tensor, asked: torch.Tensor | None, judge: Judge,
                    full: bool = True) -> dict:
    """The generator's samples from `noise` (and the classes `asked` of a conditional one) judged."""
    return judge_images(judge, sample(generator, noise, asked), asked, full)


def score_domains(coupled: nn.Module, noise: torch.Tensor, judge: Judge, first_scores: dict | None = None) -> dict:
    """A coupled generator's samples from `noise` judged domain by domain, each shown to the judge as
    cogan.judged_domains shows it (the negatives negated back): every domain's scores by name, how each
    was shown, and `pair_agreement`: the fraction of latent vectors whose two images the judge reads as
    the same class. `first_scores`: the first domain's, when already computed on the same noise."""
    images = {name: sample(view, noise) for name, view in judged_domains(coupled).items()}
    scores = {name: first_scores if i == 0 and first_scores is not None else judge_images(judge, batch)
              for i, (name, batch) in enumerate(images.items())}
    return {"domains": scores, "domains_judged_as": JUDGED_AS,
            "pair_agreement": pair_agreement(judge.classifier, *images.values())}
