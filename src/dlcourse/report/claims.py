"""The course's claims, each checked against measured numbers.

Every bar is fixed before the data it judges is seen, and written once, beside its claim's rule in
the module of its topic: `claims_networks` (MNIST and CIFAR-10), `claims_robustness` (slight
corruption, fooling, robust training), `claims_gans`. A claim's text here is built from the same
constants (and, where a bar is a param, from the value the stage recorded), so the sentence and the
check cannot disagree. Where a bar is a param, a floor that no param edit can lower stands beside it
(`verdicts.floor`). `evaluate_claims` gives `reports/claims.json`: one entry per claim id, with
`holds` and the values it was judged on, a DVC metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..course.attacks import HARMLESS, WRECKED
from .claims_gans import (GAN_AGREEMENT, GAN_CONFIDENT_MIN, GAN_RECOGNISABLE, GAN_SLIDES, GAN_TIMELINE, gan_digits,
                          gan_progress, gan_slides)
from .claims_networks import (CIFAR10_BAR, CNN_BAR, CNN_EPOCHS, INIT_BAND, MNIST_SIZE, ONE_EPOCH_BAND,
                              PLATEAU_FINAL_LOSS_MAX, PLATEAU_GAIN_MAX, PLATEAU_LENGTH_MIN, SLOWER_MIN, VERY_WRONG_MIN,
                              cifar10_50, cnn_mnist, cnn_slower, hard_errors, linear_init, linear_one_epoch,
                              linear_plateau, mnist_size)
from .claims_robustness import (FOOLING_MIN, ROBUST_BAR, ROBUST_CLEAN_BAR, ROBUST_CONFIRMATION, ROBUST_EPS, fooling,
                                robust_training, slight_corruption)
from .results import ClaimError, Results, entries_of, leftover_warning  # noqa: F401 - the claims' API
from .verdicts import band, pct, require_finite


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str  # what the course states, in English, with the test applied: built from its topic module's bars
    course: str  # the course's own words (slides, in French)
    check: Callable[[Results], tuple[str, dict, bool]]  # -> (measured, values, holds)
    # the trained models ("cnn/mnist") whose own numbers back the claim, from its values
    backed_by: Callable[[dict], list[str]] = lambda values: []

    def evaluate(self, results: Results) -> dict:
        measured, values, holds = self.check(results)
        require_finite(values, f"claim {self.id}: the values judged")
        return {"claim": self.claim, "course": self.course, "measured": measured,
                "summary": SUMMARIES[self.id](values) if values else "nothing measured", "values": values,
                "holds": bool(holds)}


CLAIMS = [
    Claim("mnist-size", f"MNIST has {MNIST_SIZE[0]:,} training and {MNIST_SIZE[1]:,} test images.",
          "Un ensemble d'entraînement de taille 60000 [...] Et un ensemble de test de taille 10000", mnist_size),
    Claim("linear-init",
          "Right after initialisation, the linear network is right about 10 % of the time on a 1000-image "
          f"test batch, as a random guess among 10 classes (checked: mean over initialisations within {band(INIT_BAND)}).",
          "Juste après initialisation [...] le réseau effectue une prédiction correcte dans à peu près 10% des cas",
          linear_init, lambda values: ["linear/one_epoch"]),
    Claim("linear-one-epoch",
          "After 1000 iterations on batches of 60 (one epoch), about 90 % of test predictions are right "
          f"(checked: {band(ONE_EPOCH_BAND)}).",
          "Après 1000 itérations sur des batchs de taille 60 (une \"epoch\") [...] correctes à environ 90%",
          linear_one_epoch, lambda values: ["linear/one_epoch"]),
    Claim("linear-plateau",
          "Training the linear network longer does not give a clearly higher accuracy than 90-92 % (checked: a run "
          f"at least {PLATEAU_LENGTH_MIN}x as long gains at most {100 * PLATEAU_GAIN_MAX:g} points of best test "
          f"accuracy over the one-epoch run, and ends at most {100 * PLATEAU_FINAL_LOSS_MAX:g} points below it).",
          "entraîner le réseau plus longtemps ne permet pas vraiment d'obtenir une précision nettement plus "
          "élevée que 90~92%", linear_plateau,
          lambda values: ["linear/one_epoch", "linear/long"]),
    Claim("cnn-mnist", f"The course's CNN (Reseau2) reaches 97-98 % within 1-2 epochs (checked: >= {100 * CNN_BAR:g} % "
          f"by epoch {CNN_EPOCHS}).",
          "il est possible d'atteindre en 1 ou 2 epochs une précision de 97~98%", cnn_mnist,
          lambda values: ["cnn/mnist-course"]),
    Claim("cnn-slower",
          f"The CNN's training takes much longer than the linear network's (checked: an epoch takes >= {SLOWER_MIN}x "
          "longer).",
          "Avec l'architecture proposée, le temps d'apprentissage est nettement plus long (car il y a beaucoup plus "
          "de paramètres)", cnn_slower, lambda values: ["linear/one_epoch", "cnn/mnist-course"]),
    Claim("cifar10-50", f"Simple and more complex networks on CIFAR-10: more than {100 * CIFAR10_BAR:g} % test "
          "accuracy (checked: at least one network above it; each network's verdict in `values`).",
          "Tester des réseaux simples et plus complexes sur la base de données CIFAR 10. Tenter d'obtenir plus de "
          "50% de précision sur CIFAR 10.", cifar10_50,
          lambda values: [f"cnn/{name}" for name, verdict in values.items() if verdict["passes"]]),
    Claim("hard-errors", "There are test images on which the network is very wrong (checked: every evaluated model "
          f"misclassifies some test images with confidence >= evaluate.confident, itself >= {VERY_WRONG_MIN:g}).",
          "Trouver des images sur lesquelles le réseau se trompe beaucoup.", hard_errors,
          lambda values: [model for model, count in values.items() if count > 0]),
    Claim("slight-corruption", "A very slight corruption of still recognisable images can wreck the predictions "
          "(checked for every attacked model trained the course's way, not on adversarial examples: the eps is "
          "chosen on one half of the attacked images, the smallest of "
          f"the sweep where PGD costs >= {100 * WRECKED:g} points of accuracy while random noise of the same L-inf "
          f"or L2 size costs <= {100 * HARMLESS:g} points; the verdict is both conditions at that eps on the other "
          "half).",
          "introduire une corruption très légère des images et montrer que cela peut significativement réduire la "
          "qualité des prédictions du réseau (alors que les images restent très reconnaissables)", slight_corruption,
          lambda values: [model for model, verdict in values.items() if verdict["holds"]]),
    Claim("fooling", "Strange images can be made that the network classifies wrongly with very high confidence "
          "(checked, for each dataset's network trained the course's way, on the three methods of Nguyen et al. "
          "2015 run from noise: gradient ascent, "
          "evolution of the pixels (direct encoding), and a CPPN evolved with MAP-Elites: every class reaches "
          f"fooling.<dataset>.confidence, itself >= {100 * FOOLING_MIN:g} %, with at least one method; and the "
          "CPPN's images are more regular than the direct encoding's, fewer PNG bytes per image on average (8-bit, "
          "zlib level 9); each method's classes short of the bar, the total variation and the second network's "
          "confidence are reported).",
          "on peut essayer de créer des images étranges mais pour lesquelles le réseau fait des prédictions fausses "
          "avec une grande confiance", fooling,
          lambda values: [v["model"] for v in values.values() if v["methods_reaching_every_class"]]),
    Claim("robust-training", "Beyond the course: a network trained on its own adversarial examples is no longer "
          f"wrecked by a slight corruption (checked on each adversarially trained network: at L-inf eps {ROBUST_EPS:g}, "
          f"at least {100 * ROBUST_BAR:g} % of the attacked test images resist both a PGD with random restarts and "
          "an independent implementation of APGD (attack.strong_*, attack.apgd_steps), the two within "
          f"{100 * ROBUST_CONFIRMATION:g} points of each other; at least {100 * ROBUST_CLEAN_BAR:g} % clean test "
          "accuracy; and the slight-corruption rule, applied to it, no longer holds. Bars from Madry et al. 2018 and "
          "Wong, Rice and Kolter 2020: about 89 % robust, 98.5-98.8 % clean).",
          "le réseau est loin d'apprendre comme un humain [...] introduire une corruption très légère des images",
          robust_training, lambda values: [model for model, v in values.items() if v["holds"]]),
    Claim("gan-digits", "A GAN can be asked for a digit and its samples get better as it trains, until they are "
          "recognisable digits (checked on the conditional train-gan entry with the project's classifier: the last "
          "epoch's Fréchet distance is lower and its fraction of samples classified with confidence >= "
          f"score_gan.confident (itself >= {GAN_CONFIDENT_MIN:g}) higher than the first epoch's; that fraction >= "
          f"{100 * GAN_RECOGNISABLE:g} %; the samples read as the digit asked for >= {100 * GAN_AGREEMENT:g} % of "
          "the time).",
          "GANs [...] 2014, 2015, 2016, 2017, 2019 (les images générées s'améliorent)", gan_digits),
    Claim("gan-progress", "Generated images improved from 2014 to 2019 (checked on the same data, with the same "
          "number of images seen by each generator, scored the same way: the Fréchet distance to the real test "
          f"set's classifier features decreases along {' → '.join(GAN_TIMELINE)}; every era's scores and whether "
          "each step of the timeline improved are in `values`).",
          "GANs [...] 2014, 2015, 2016, 2017, 2019 (les images générées s'améliorent)", gan_progress),
    Claim("gan-slides", "The slides' own five systems improved year by year (checked as gan-progress, on the "
          f"systems of the slides' figure: the Fréchet distance decreases along {' → '.join(GAN_SLIDES)}; the "
          "coupled GAN of 2016 judged on its first domain, the digits; same data, same number of images seen by "
          "each generator, scored the same way).",
          "GANs [...] 2014, 2015, 2016, 2017, 2019 (les images générées s'améliorent)", gan_slides),
]


# One short line per claim, from the values it was judged on: the figure and its bar, for the claims
# tables of the report and the README (the long `measured` text stays in the report's claim sections).
def _span(numbers, fmt) -> str:
    low, high = min(numbers), max(numbers)
    return fmt(low) if fmt(low) == fmt(high) else f"{fmt(low)}-{fmt(high)}"


def _summary_slight(v: dict) -> str:
    costs, noise = [m["pgd_drop"] for m in v.values()], [m["noise_drop"] for m in v.values()]
    return (f"PGD costs {_span(costs, lambda x: f'{100 * x:.0f}')} points, noise of its size <= "
            f"{100 * max(noise):.1f}; {sum(m['holds'] for m in v.values())} of {len(v)} models "
            f"(bar: >= {100 * WRECKED:g}, <= {100 * HARMLESS:g} points)")


def _summary_fooling(v: dict) -> str:
    fooled = [d for d, m in v.items() if m["methods_reaching_every_class"]]
    regular = [d for d, m in v.items() if m["cppn_more_regular_than_direct_encoding"]]
    ratios = [m["methods"]["evolution"]["png_bytes_mean"] / m["methods"]["cppn"]["png_bytes_mean"]
              for m in v.values()]
    bars = " / ".join(f"{100 * m['bar']:g} %" for m in v.values())
    return (f"every class fooled on {len(fooled)} of {len(v)} datasets (bar: {bars}); CPPN's PNGs "
            f"{_span(ratios, lambda x: f'{x:.1f}')}x smaller than direct encoding's on {len(regular)} of {len(v)} "
            "(bar: smaller)")


def _summary_gan_digits(v: dict) -> str:
    g = v["generated"]
    asked = "" if g.get("label_agreement") is None else f", {pct(g['label_agreement'])} the digit asked for"
    return (f"{pct(g['confident_fraction'])} recognisable{asked} (bar: >= {100 * GAN_RECOGNISABLE:g} %, "
            f">= {100 * GAN_AGREEMENT:g} %); Fréchet distance {v['first_epoch']['frechet_distance']:.2f} → "
            f"{v['last_epoch']['frechet_distance']:.2f} (bar: lower)")


def _summary_gan_progress(v: dict) -> str:
    if "frechet_distances" not in v:
        return "not every era of the timeline was scored"
    return (f"Fréchet distance {' → '.join(f'{d:.1f}' for d in v['frechet_distances'].values())} along "
            f"{' → '.join(v['frechet_distances'])} (bar: decreasing)")


SUMMARIES: dict[str, Callable[[dict], str]] = {
    "mnist-size": lambda v: f"{v['train']:,} / {v['test']:,} images (bar: {MNIST_SIZE[0]:,} / {MNIST_SIZE[1]:,})",
    "linear-init": lambda v: f"{pct(v['mean'])} right at initialisation (bar: {band(INIT_BAND)})",
    "linear-one-epoch": lambda v: f"{pct(v['test_accuracy'])} after one epoch (bar: {band(ONE_EPOCH_BAND)})",
    "linear-plateau": lambda v: (f"{100 * v['gain']:+.2f} points from a {v['length_factor']:g}x longer run "
                                 f"(bar: <= {100 * PLATEAU_GAIN_MAX:g} points)"),
    "cnn-mnist": lambda v: f"{pct(v['best'])} by epoch {len(v['by_epoch'])} (bar: >= {100 * CNN_BAR:g} %)",
    "cnn-slower": lambda v: f"an epoch {v['ratio']:.0f}x longer (bar: >= {SLOWER_MIN}x)",
    "cifar10-50": lambda v: (f"best {pct(max(m['test_accuracy'] for m in v.values()))}, {sum(m['passes'] for m in v.values())}"
                             f" of {len(v)} networks above the bar (bar: > {100 * CIFAR10_BAR:g} % for one)"),
    "hard-errors": lambda v: (f"{_span(list(v.values()), str)} confidently wrong test images per model, "
                              f"{sum(n > 0 for n in v.values())} of {len(v)} models (bar: > 0 for each)"),
    "slight-corruption": _summary_slight,
    "fooling": _summary_fooling,
    "robust-training": lambda v: "; ".join(
        f"{pct(m['robust'])} robust at eps {m['eps']:g}, {pct(m['clean'])} clean, APGD {pct(m['apgd'])} vs PGD "
        f"{pct(m['pgd'])} (bar: >= {100 * ROBUST_BAR:g} %, >= {100 * ROBUST_CLEAN_BAR:g} %, within "
        f"{100 * ROBUST_CONFIRMATION:g} points)" for m in v.values()),
    "gan-digits": _summary_gan_digits,
    "gan-progress": _summary_gan_progress,
    "gan-slides": _summary_gan_progress,
}


def evaluate_claims(results: Results) -> dict[str, dict]:
    """Every claim's verdict, keyed by claim id, in the course's order."""
    return {claim.id: claim.evaluate(results) for claim in CLAIMS}


def supported_claims(verdicts: dict[str, dict]) -> dict[str, list[str]]:
    """By trained model ("cnn/mnist"): the ids of the claims that hold and that its own numbers back."""
    supported: dict[str, list[str]] = {}
    for claim in CLAIMS:
        verdict = verdicts[claim.id]
        if verdict["holds"]:
            for model in claim.backed_by(verdict["values"]):
                supported.setdefault(model, []).append(claim.id)
    return supported
