"""The course's claims, each checked against measured numbers.

Every bar is fixed here, before the data it judges is seen, and written once: a claim's text is
built from the same constants (and, where a bar is a param, from the value the stage recorded), so
the sentence and the check cannot disagree. Where a bar is a param, a floor that no param edit can
lower stands beside it (`floor`). `evaluate_claims` gives `reports/claims.json`: one entry per
claim id, with `holds` and the values it was judged on, a DVC metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..course.attacks import HARMLESS, WRECKED, choose_slight_eps, drop, noise_drop, slight_and_wrecking
from ..files import non_finite_keys, rebuild_hint
from ..pipeline.layout import FOOLING_METHODS
from .results import ClaimError, Results, entries_of, leftover_warning  # noqa: F401 - the claims' API

MNIST_SIZE = (60000, 10000)
INIT_BAND = (0.07, 0.13)  # "à peu près 10 %": a random guess among 10 classes
ONE_EPOCH_BAND = (0.875, 0.925)  # "environ 90 %"
PLATEAU_GAIN_MAX = 0.02  # "pas vraiment [...] nettement plus élevée": at most 2 points more
# ... and the long run ends on its plateau, at most 2 points below the one-epoch run: a run that
# diverged (to 10 %) shows no plateau, though it gains nothing
PLATEAU_FINAL_LOSS_MAX = 0.02
PLATEAU_LENGTH_MIN = 5  # the long run trains at least 5x as many iterations as the one-epoch run
CNN_BAR, CNN_EPOCHS = 0.97, 2  # "en 1 ou 2 epochs une précision de 97~98%"
SLOWER_MIN = 5  # "nettement plus long": an epoch at least 5x as long
CIFAR10_BAR = 0.5  # "plus de 50%"
VERY_WRONG_MIN = 0.9  # the least confidence that counts as "very wrong"
FOOLING_MIN = 0.99  # the least confidence that counts as "une grande confiance"
GAN_CONFIDENT_MIN = 0.9  # the least classifier confidence that counts a sample as recognisable
GAN_RECOGNISABLE = 0.9  # of the samples
GAN_AGREEMENT = 0.9  # a conditional GAN's samples read as the digit asked for
# "les images générées s'améliorent", 2014 -> 2019: the eras whose Fréchet distances must decrease, oldest first
GAN_TIMELINE = ("gan-2014", "dcgan-2015", "stylegan-2019")
# ... and the five systems of the slides' own figure ("GAN progress on face generation"): 2014 Goodfellow et
# al., 2015 Radford et al., 2016 Liu and Tuzel (coupled GANs: judged on its first domain, the digits), 2017
# Karras et al. (progressive growing), 2019 Karras et al.; each year's Fréchet distance below the year before
GAN_SLIDES = ("gan-2014", "dcgan-2015", "cogan-2016", "progan-2017", "stylegan-2019")
# Beyond the course, the adversarially trained MNIST network (`robust-training`), its bars from the
# literature at L-inf eps 0.3: Madry et al. 2018 (PGD training), about 89 % under a strong white-box
# attack, 98.8 % clean; Wong, Rice and Kolter 2020 (FGSM from a random start), 88.8 % under PGD-50 with
# 10 restarts, 98.5 % clean. The bars allow 4 and 0.5-0.8 points for a network trained in minutes on a CPU.
ROBUST_EPS = 0.3
ROBUST_BAR = 0.85  # worst case of the strong PGD and the independent APGD, on the attacked test images
ROBUST_CLEAN_BAR = 0.98  # on the whole test set
ROBUST_CONFIRMATION = 0.02  # the independent attack agrees with ours within 2 points
GAN_GOAL_CONFIDENT = 0.9  # beyond the course (reported, not judged): the best unconditional entry's samples
GAN_GOAL_RAREST_DIGIT = 0.07  # ... and the smallest share of any digit among them


def require_finite(value, what: str):
    """`value` (a number, or a JSON-like structure of them), refused when any number in it is NaN or
    infinite: a verdict never holds on a measurement that is not one."""
    bad = non_finite_keys(value)
    if bad:
        raise ClaimError(f"{what}: {', '.join(bad)} not finite (NaN or infinity); a verdict cannot rest on it")
    return value


def floor(value: float, least: float, what: str) -> float:
    """A bar read from the metrics (set by a param), refused when below the least the claim allows."""
    if value < least:
        raise ClaimError(f"{what} is {value:g}, below {least:g}: too low a bar for the course's words; "
                         "raise it in params.yaml")
    return value


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def band(bounds: tuple[float, float]) -> str:
    return f"{100 * bounds[0]:g}-{100 * bounds[1]:g} %"


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str  # what the course states, in English, with the test applied: built from the constants above
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


def _mnist_size(r: Results):
    data = r.metrics("data")
    train, test = data["mnist.train"]["count"], data["mnist.test"]["count"]
    return f"{train} train / {test} test images", {"train": train, "test": test}, (train, test) == MNIST_SIZE


def _linear_init(r: Results):
    m = r.metrics("linear/one_epoch")
    mean = m["init_accuracy_mean"]
    return (f"{pct(mean)} on average over {m['init_trials']} initialisations "
            f"(this run's own initialisation: {pct(m['init_batch_accuracy'])})",
            {"mean": mean, "this_run": m["init_batch_accuracy"], "trials": m["init_trials"]},
            INIT_BAND[0] <= mean <= INIT_BAND[1])


def _linear_one_epoch(r: Results):
    m = r.metrics("linear/one_epoch")
    acc = m["test_accuracy"]
    return (f"{pct(acc)} after {m['iterations']} iterations ({m['epochs']:g} epoch)", {"test_accuracy": acc},
            ONE_EPOCH_BAND[0] <= acc <= ONE_EPOCH_BAND[1])


def _linear_plateau(r: Results):
    one, long = r.metrics("linear/one_epoch"), r.metrics("linear/long")
    gain = long["best_test_accuracy"] - one["test_accuracy"]
    length = long["iterations"] / one["iterations"]
    return (f"{long['epochs']:g} epochs: best {pct(long['best_test_accuracy'])}, final {pct(long['test_accuracy'])}; "
            f"{100 * gain:+.2f} points over one epoch ({pct(one['test_accuracy'])})",
            {"one_epoch": one["test_accuracy"], "long_best": long["best_test_accuracy"],
             "long_final": long["test_accuracy"], "gain": gain, "length_factor": length},
            gain <= PLATEAU_GAIN_MAX and length >= PLATEAU_LENGTH_MIN
            and long["test_accuracy"] >= one["test_accuracy"] - PLATEAU_FINAL_LOSS_MAX)


def _cnn_mnist(r: Results):
    curve = r.curve("cnn/mnist-course")
    early = curve[curve["epoch"] <= CNN_EPOCHS]
    if early.empty:
        raise ClaimError(f"{r.plots_dir / 'cnn/mnist-course.csv'}: no epoch <= {CNN_EPOCHS}; "
                         f"{rebuild_hint('plots/cnn/mnist-course.csv')}")
    by_epoch = ", ".join(f"epoch {int(e)}: {pct(a)}" for e, a in zip(early["epoch"], early["test_accuracy"]))
    best = float(early["test_accuracy"].max())
    return f"Reseau2, {by_epoch}", {"by_epoch": early["test_accuracy"].tolist(), "best": best}, best >= CNN_BAR


def _cnn_slower(r: Results):
    linear, cnn = r.metrics("timing/train-linear@one_epoch"), r.metrics("timing/train-cnn@mnist-course")
    if not linear["train_seconds"] > 0:
        raise ClaimError(f"{r.metrics_dir / 'timing/train-linear@one_epoch.json'}: train_seconds is "
                         f"{linear['train_seconds']}, not a time; {rebuild_hint('metrics/timing/train-linear@one_epoch.json')}")
    per_epoch = cnn["train_seconds"] / r.metrics("cnn/mnist-course")["epochs"]
    ratio = per_epoch / linear["train_seconds"]
    return (f"one epoch: Reseau1 {linear['train_seconds']:.2f} s, Reseau2 {per_epoch:.1f} s ({ratio:.0f}x longer, "
            f"on {cnn['device']})",
            {"linear_epoch_seconds": linear["train_seconds"], "cnn_epoch_seconds": per_epoch, "ratio": ratio},
            ratio >= SLOWER_MIN)


def cifar10_entries(r: Results) -> dict[str, dict]:
    return {name: m for name, m in r.per_model("cnn").items() if m["dataset"] == "cifar10"}


def _cifar10_50(r: Results):
    entries = cifar10_entries(r)
    passing = [name for name, m in entries.items() if m["test_accuracy"] > CIFAR10_BAR]
    listing = ", ".join(f"{name} {pct(m['test_accuracy'])}" for name, m in entries.items())
    return (f"{len(passing)} of {len(entries)} networks pass: {listing}",
            {name: {"test_accuracy": m["test_accuracy"], "passes": m["test_accuracy"] > CIFAR10_BAR}
             for name, m in entries.items()},
            bool(passing))


def _hard_errors(r: Results):
    models = r.per_model("evaluate")
    counts = {name: m["confidently_wrong"] for name, m in models.items()}
    bars = {floor(m["confident_threshold"], VERY_WRONG_MIN, f"evaluate.confident ({name})")
            for name, m in models.items()}
    listing = ", ".join(f"{name}: {n}" for name, n in counts.items())
    return (f"test images misclassified with confidence >= {' / '.join(f'{b:g}' for b in sorted(bars))}: {listing}",
            counts, bool(counts) and all(n > 0 for n in counts.values()))


def slight_corruption_verdict(m: dict) -> dict:
    """One attacked model's verdict: the eps chosen on the selection half, judged on the evaluation half."""
    require_finite(m["selection"]["accuracy"], "slight-corruption: the selection half's accuracies")
    require_finite(m["evaluation"]["accuracy"], "slight-corruption: the evaluation half's accuracies")
    if not m["evaluation"]["accuracy"] or not m["selection"]["accuracy"]:
        raise ClaimError("slight-corruption: an attacked model's metrics hold no accuracy sweep")
    selection = {float(eps): row for eps, row in m["selection"]["accuracy"].items()}
    evaluation = {float(eps): row for eps, row in m["evaluation"]["accuracy"].items()}
    eps = choose_slight_eps(selection)
    holds_at = slight_and_wrecking(evaluation)
    psnr = m["evaluation"]["psnr_db"][f"{eps:g}"]
    return {"eps": eps, "images": m["images"], "clean": evaluation[0.0]["pgd"], "pgd": evaluation[eps]["pgd"],
            "pgd_drop": drop(evaluation, eps, "pgd"), "noise_drop": noise_drop(evaluation, eps),
            "psnr_db": {"pgd": psnr["pgd"], "sign_noise": psnr["sign_noise"], "l2_noise": psnr["l2_noise"]},
            "eps_where_it_holds": [e for e, holds in holds_at.items() if holds], "holds": holds_at[eps]}


def adversarially_trained(r: Results, model: str) -> bool:
    """Whether a trained model ("cnn/mnist-robust") was trained on adversarial examples: beyond the
    course, left out of the course's own claims (slight-corruption, fooling) and judged by robust-training."""
    return model.startswith("cnn/") and "adversarial" in r.metrics(model)


def _slight_corruption(r: Results):
    verdicts = {name: slight_corruption_verdict(m) for name, m in r.per_model("attack").items()
                if not adversarially_trained(r, name)}
    parts = [f"{name}, eps {v['eps']:g} chosen on {v['images']['selection']} images, judged on "
             f"{v['images']['evaluation']} others: {pct(v['clean'])} → {pct(v['pgd'])} under PGD (PSNR "
             f"{v['psnr_db']['pgd']:.1f} dB), random noise of the same size costs {100 * v['noise_drop']:.1f} points "
             f"(PSNR {v['psnr_db']['sign_noise']:.1f} dB); holds at eps "
             f"{', '.join(f'{e:g}' for e in v['eps_where_it_holds']) or 'none'}"
             for name, v in verdicts.items()]
    return "; ".join(parts), verdicts, bool(verdicts) and all(v["holds"] for v in verdicts.values())


def _robust_training(r: Results):
    robust = [name for name in r.names("attack") if adversarially_trained(r, name)]
    if not robust:
        return ("no attacked model was trained on adversarial examples (params.yaml: a train_cnn entry with "
                "`adversarial`, in attack.models with robust_eps)", {}, False)
    verdicts, parts = {}, []
    for name in robust:
        attacked, trained = r.metrics(f"attack/{name}"), r.metrics(name)
        if "robust" not in attacked:
            raise ClaimError(f"robust-training: metrics/attack/{name}.json holds no robust accuracy "
                             f"(params.yaml: attack.models.{name}.robust_eps)")
        m = require_finite(attacked["robust"], f"robust-training: {name}'s robust accuracies")
        if m["eps"] != ROBUST_EPS:
            raise ClaimError(f"robust-training: {name} is attacked at eps {m['eps']:g}; the bars are the "
                             f"literature's at eps {ROBUST_EPS:g} (attack.models.{name}.robust_eps)")
        slight = slight_corruption_verdict(attacked)
        v = {"eps": m["eps"], "images": m["images"], "robust": m["worst_case"], "pgd": m["pgd"], "apgd": m["apgd"],
             "clean": trained["test_accuracy"], "training": trained["adversarial"]["method"],
             "slight_corruption_holds": slight["holds"], "slight_corruption_pgd_drop": slight["pgd_drop"]}
        v["confirmed"] = abs(m["apgd"] - m["pgd"]) <= ROBUST_CONFIRMATION
        v["holds"] = (v["robust"] >= ROBUST_BAR and v["clean"] >= ROBUST_CLEAN_BAR and v["confirmed"]
                      and not v["slight_corruption_holds"])
        verdicts[name] = v
        parts.append(f"{name} ({v['training']}): {pct(v['robust'])} robust at eps {v['eps']:g} on {v['images']} test "
                     f"images (PGD-{m['pgd_steps']} x {m['pgd_restarts']} restarts {pct(v['pgd'])}, APGD-"
                     f"{m['apgd_steps']} {pct(v['apgd'])}), {pct(v['clean'])} clean; the slight-corruption rule "
                     + ("still holds" if v["slight_corruption_holds"] else "no longer holds")
                     + f" (PGD costs {100 * v['slight_corruption_pgd_drop']:.1f} points at the eps it chooses)")
    return "; ".join(parts), verdicts, all(v["holds"] for v in verdicts.values())


def _fooling(r: Results):
    verdicts, parts = {}, []
    for dataset in r.names("fooling"):
        path = r.metrics_dir / "fooling" / f"{dataset}.json"
        m = r.metrics(f"fooling/{dataset}")
        if adversarially_trained(r, m["model"]):
            continue
        bar = floor(m["confidence_bar"], FOOLING_MIN, f"fooling.{path.stem}.confidence")
        missing = [method for method in FOOLING_METHODS if method not in m]
        if missing:
            raise ClaimError(f"{path}: no results for the fooling method(s) {', '.join(missing)}; "
                             "rerun the fooling stage")
        methods = {}
        for method in FOOLING_METHODS:
            per_class = require_finite(m[method]["per_class"], f"{path}: {method}.per_class")
            if not per_class:  # all() over no class would be true
                raise ClaimError(f"{path}: {method}.per_class is empty; {rebuild_hint(path)}")
            methods[method] = {
                "reaches_every_class": all(c["confidence"] >= bar for c in per_class.values()),
                "short_of_the_bar": {name: c["confidence"] for name, c in per_class.items() if c["confidence"] < bar},
                "png_bytes_mean": m[method]["png_bytes_mean"],
                "total_variation_mean": m[method]["total_variation_mean"],
                "transfer_confidence_mean": m[method]["transfer_confidence_mean"]}
        reached = [method for method, v in methods.items() if v["reaches_every_class"]]
        regular = methods["cppn"]["png_bytes_mean"] < methods["evolution"]["png_bytes_mean"]
        verdicts[path.stem] = {"model": m["model"], "bar": bar, "methods_reaching_every_class": reached,
                               "cppn_more_regular_than_direct_encoding": regular, "methods": methods}
        short = "; ".join(f"{method} short on {', '.join(f'{k} {pct(c)}' for k, c in v['short_of_the_bar'].items())}"
                          for method, v in methods.items() if v["short_of_the_bar"])
        parts.append(
            f"{path.stem} ({m['model']}, confidence >= {bar:g}): every class reached by "
            f"{' and '.join(reached) if reached else 'no method'} (of {', '.join(FOOLING_METHODS)})"
            + (f" ({short})" if short else "") + "; PNG bytes per image: "
            + ", ".join(f"{method} {v['png_bytes_mean']:.0f}" for method, v in methods.items())
            + "; total variation: " + ", ".join(f"{method} {v['total_variation_mean']:.3f}"
                                                for method, v in methods.items())
            + "; second network's mean confidence: " + ", ".join(
                f"{method} {pct(v['transfer_confidence_mean'])}" for method, v in methods.items()))
    holds = bool(verdicts) and all(v["methods_reaching_every_class"] and v["cppn_more_regular_than_direct_encoding"]
                                   for v in verdicts.values())
    return "; ".join(parts), verdicts, holds


def gan_entries(r: Results) -> dict[str, dict]:
    """Each train-gan entry's scores (metrics/gan/<entry>/scores.json), by entry."""
    return {entry: r.metrics(f"gan/{entry}/scores") for entry in r.names("gan")}


def _gan_digits(r: Results):
    conditional = {name: m for name, m in gan_entries(r).items() if m["conditional"]}
    if not conditional:
        return "no conditional train-gan entry was scored", {}, False
    name, m = next(iter(conditional.items()))
    bar = floor(m["confident_threshold"], GAN_CONFIDENT_MIN, "score_gan.confident")
    first, last, final, real = m["first_epoch"], m["last_epoch"], m["generated"], m["real"]
    improved = last["frechet_distance"] < first["frechet_distance"] and \
        last["confident_fraction"] > first["confident_fraction"]
    recognisable = final["confident_fraction"] >= GAN_RECOGNISABLE
    agreement = final.get("label_agreement")  # a conditional entry's: without it, the digit asked is unchecked
    asked = agreement is not None and agreement >= GAN_AGREEMENT
    measured = (
        f"`{name}`, epoch {first['epoch']} → {last['epoch']} ({m['curve_samples']} samples each): Fréchet distance "
        f"{first['frechet_distance']:.2f} → {last['frechet_distance']:.2f}, classified with confidence >= {bar:g}: "
        f"{pct(first['confident_fraction'])} → {pct(last['confident_fraction'])}; the last epoch on {m['samples']} "
        f"samples: {pct(final['confident_fraction'])} (real test set: {pct(real['test_confident_fraction'])}), "
        f"Fréchet distance {final['frechet_distance']:.2f} (real train vs test: {real['frechet_distance']:.2f}), "
        f"Inception-Score analogue {final['inception_score']:.2f} (real: {real['inception_score']:.2f})"
        + (f"; class-conditional: the classifier reads the digit asked for in {pct(agreement)}"
           if agreement is not None else "; the digit asked for was not measured (no label_agreement)"))
    values = {"entry": name, "first_epoch": first, "last_epoch": last, "generated": final, "real": real,
              "improved": improved, "recognisable": recognisable, "reads_the_digit_asked_for": asked}
    return measured, values, improved and recognisable and asked


def gan_progress_table(entries: dict[str, dict]) -> list[dict]:
    """The unconditional entries in timeline order, each with its scores and whether it improved on
    the previous era's Fréchet distance."""
    rows, previous = [], None
    for name, m in sorted(((n, m) for n, m in entries.items() if not m["conditional"]), key=lambda e: e[1]["year"]):
        g = m["generated"]
        rows.append({"entry": name, "era": m["era"], "year": m["year"], "method": m["method"],
                     "generator_images": m["generator_images"], "frechet_distance": g["frechet_distance"],
                     "precision": g["precision"], "recall": g["recall"], "confident_fraction": g["confident_fraction"],
                     "rarest_class_share": g["rarest_class_share"], "inception_score": g["inception_score"],
                     "improved_on_previous": None if previous is None else g["frechet_distance"] < previous})
        previous = g["frechet_distance"]
    return rows


def timeline_verdict(entries: dict[str, dict], timeline: tuple[str, ...]) -> dict:
    """The unconditional entries' rows (`gan_progress_table`), and for the eras of `timeline`: their Fréchet
    distances, whether they decrease along it, whether every unconditional entry saw the same images
    (dataset, images per generator, samples scored); `missing`: the eras of `timeline` not scored."""
    rows = gan_progress_table(entries)
    by_era = {row["era"]: row for row in rows}
    missing = [era for era in timeline if era not in by_era]
    for m in entries.values():
        floor(m["confident_threshold"], GAN_CONFIDENT_MIN, "score_gan.confident")
    budgets = {(m["dataset"], m["generator_images"], m["samples"]) for m in entries.values() if not m["conditional"]}
    distances = [by_era[era]["frechet_distance"] for era in timeline if era in by_era]
    return {"rows": rows, "missing": missing, "budgets": budgets, "same_budget": len(budgets) == 1,
            "distances": distances, "ordered": not missing and all(b < a for a, b in zip(distances, distances[1:]))}


def _timeline_steps(rows: list[dict]) -> str:
    return "; ".join(
        f"{row['year']} {row['method']} {row['frechet_distance']:.2f} (precision {row['precision']:.2f}, recall "
        f"{row['recall']:.2f}, confident {pct(row['confident_fraction'])}, rarest digit "
        f"{pct(row['rarest_class_share'])})" + ("" if row["improved_on_previous"] is None else
                                                 " improved" if row["improved_on_previous"] else " did not improve")
        for row in rows)


def _gan_progress(r: Results):
    entries = gan_entries(r)
    t = timeline_verdict(entries, GAN_TIMELINE)
    rows, budgets, same_budget, distances, ordered = t["rows"], t["budgets"], t["same_budget"], t["distances"], t["ordered"]
    if t["missing"]:
        return f"no scores for the era(s) {', '.join(t['missing'])}", {"eras": rows}, False
    best = min(rows, key=lambda row: row["frechet_distance"])
    goal = {row["entry"]: row["confident_fraction"] >= GAN_GOAL_CONFIDENT
            and row["rarest_class_share"] >= GAN_GOAL_RAREST_DIGIT for row in rows}
    real = next(iter(entries.values()))["real"]
    measured = (f"Fréchet distance by era ({', '.join(sorted({str(b[1]) for b in budgets}))} images seen by each "
                f"generator; real train vs test: {real['frechet_distance']:.2f}): {_timeline_steps(rows)}. "
                + ("" if same_budget else "The eras' budgets differ: the comparison does not hold. ")
                + f"Beyond the course, the best entry ({best['entry']}): {pct(best['confident_fraction'])} of samples "
                f"confident, rarest digit {pct(best['rarest_class_share'])} (goal: >= {100 * GAN_GOAL_CONFIDENT:g} % "
                f"and every digit >= {100 * GAN_GOAL_RAREST_DIGIT:g} %: "
                + (f"met by {', '.join(e for e, met in goal.items() if met)})" if any(goal.values()) else "not met)"))
    values = {"eras": rows, "timeline": list(GAN_TIMELINE), "frechet_distances": dict(zip(GAN_TIMELINE, distances)),
              "ordered": ordered, "same_budget": same_budget, "goal_met_by": [e for e, met in goal.items() if met]}
    return measured, values, ordered and same_budget


def _gan_slides(r: Results):
    entries = gan_entries(r)
    t = timeline_verdict(entries, GAN_SLIDES)
    if t["missing"]:
        return f"no scores for the era(s) {', '.join(t['missing'])}", {"eras": t["rows"]}, False
    by_era = {row["era"]: row for row in t["rows"]}
    steps = "; ".join(f"{by_era[era]['year']} {by_era[era]['method']} {d:.2f}"
                      + ("" if i == 0 else " improved" if d < t["distances"][i - 1] else " did not improve")
                      for i, (era, d) in enumerate(zip(GAN_SLIDES, t["distances"])))
    real = next(iter(entries.values()))["real"]
    measured = (f"Fréchet distance along the slides' years ({', '.join(sorted({str(b[1]) for b in t['budgets']}))} "
                f"images seen by each generator; real train vs test: {real['frechet_distance']:.2f}): {steps}"
                + ("" if t["same_budget"] else ". The eras' budgets differ: the comparison does not hold"))
    values = {"timeline": list(GAN_SLIDES), "frechet_distances": dict(zip(GAN_SLIDES, t["distances"])),
              "ordered": t["ordered"], "same_budget": t["same_budget"],
              "best": min(GAN_SLIDES, key=lambda era: by_era[era]["frechet_distance"])}
    return measured, values, t["ordered"] and t["same_budget"]


CLAIMS = [
    Claim("mnist-size", f"MNIST has {MNIST_SIZE[0]:,} training and {MNIST_SIZE[1]:,} test images.",
          "Un ensemble d'entraînement de taille 60000 [...] Et un ensemble de test de taille 10000", _mnist_size),
    Claim("linear-init",
          "Right after initialisation, the linear network is right about 10 % of the time on a 1000-image "
          f"test batch, as a random guess among 10 classes (checked: mean over initialisations within {band(INIT_BAND)}).",
          "Juste après initialisation [...] le réseau effectue une prédiction correcte dans à peu près 10% des cas",
          _linear_init, lambda values: ["linear/one_epoch"]),
    Claim("linear-one-epoch",
          "After 1000 iterations on batches of 60 (one epoch), about 90 % of test predictions are right "
          f"(checked: {band(ONE_EPOCH_BAND)}).",
          "Après 1000 itérations sur des batchs de taille 60 (une \"epoch\") [...] correctes à environ 90%",
          _linear_one_epoch, lambda values: ["linear/one_epoch"]),
    Claim("linear-plateau",
          "Training the linear network longer does not give a clearly higher accuracy than 90-92 % (checked: a run "
          f"at least {PLATEAU_LENGTH_MIN}x as long gains at most {100 * PLATEAU_GAIN_MAX:g} points of best test "
          f"accuracy over the one-epoch run, and ends at most {100 * PLATEAU_FINAL_LOSS_MAX:g} points below it).",
          "entraîner le réseau plus longtemps ne permet pas vraiment d'obtenir une précision nettement plus "
          "élevée que 90~92%", _linear_plateau,
          lambda values: ["linear/one_epoch", "linear/long"]),
    Claim("cnn-mnist", f"The course's CNN (Reseau2) reaches 97-98 % within 1-2 epochs (checked: >= {100 * CNN_BAR:g} % "
          f"by epoch {CNN_EPOCHS}).",
          "il est possible d'atteindre en 1 ou 2 epochs une précision de 97~98%", _cnn_mnist,
          lambda values: ["cnn/mnist-course"]),
    Claim("cnn-slower",
          f"The CNN's training takes much longer than the linear network's (checked: an epoch takes >= {SLOWER_MIN}x "
          "longer).",
          "Avec l'architecture proposée, le temps d'apprentissage est nettement plus long (car il y a beaucoup plus "
          "de paramètres)", _cnn_slower, lambda values: ["linear/one_epoch", "cnn/mnist-course"]),
    Claim("cifar10-50", f"Simple and more complex networks on CIFAR-10: more than {100 * CIFAR10_BAR:g} % test "
          "accuracy (checked: at least one network above it; each network's verdict in `values`).",
          "Tester des réseaux simples et plus complexes sur la base de données CIFAR 10. Tenter d'obtenir plus de "
          "50% de précision sur CIFAR 10.", _cifar10_50,
          lambda values: [f"cnn/{name}" for name, verdict in values.items() if verdict["passes"]]),
    Claim("hard-errors", "There are test images on which the network is very wrong (checked: every evaluated model "
          f"misclassifies some test images with confidence >= evaluate.confident, itself >= {VERY_WRONG_MIN:g}).",
          "Trouver des images sur lesquelles le réseau se trompe beaucoup.", _hard_errors,
          lambda values: [model for model, count in values.items() if count > 0]),
    Claim("slight-corruption", "A very slight corruption of still recognisable images can wreck the predictions "
          "(checked for every attacked model trained the course's way, not on adversarial examples: the eps is "
          "chosen on one half of the attacked images, the smallest of "
          f"the sweep where PGD costs >= {100 * WRECKED:g} points of accuracy while random noise of the same L-inf "
          f"or L2 size costs <= {100 * HARMLESS:g} points; the verdict is both conditions at that eps on the other "
          "half).",
          "introduire une corruption très légère des images et montrer que cela peut significativement réduire la "
          "qualité des prédictions du réseau (alors que les images restent très reconnaissables)", _slight_corruption,
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
          "avec une grande confiance", _fooling,
          lambda values: [v["model"] for v in values.values() if v["methods_reaching_every_class"]]),
    Claim("robust-training", "Beyond the course: a network trained on its own adversarial examples is no longer "
          f"wrecked by a slight corruption (checked on each adversarially trained network: at L-inf eps {ROBUST_EPS:g}, "
          f"at least {100 * ROBUST_BAR:g} % of the attacked test images resist both a PGD with random restarts and "
          "an independent implementation of APGD (attack.strong_*, attack.apgd_steps), the two within "
          f"{100 * ROBUST_CONFIRMATION:g} points of each other; at least {100 * ROBUST_CLEAN_BAR:g} % clean test "
          "accuracy; and the slight-corruption rule, applied to it, no longer holds. Bars from Madry et al. 2018 and "
          "Wong, Rice and Kolter 2020: about 89 % robust, 98.5-98.8 % clean).",
          "le réseau est loin d'apprendre comme un humain [...] introduire une corruption très légère des images",
          _robust_training, lambda values: [model for model, v in values.items() if v["holds"]]),
    Claim("gan-digits", "A GAN can be asked for a digit and its samples get better as it trains, until they are "
          "recognisable digits (checked on the conditional train-gan entry with the project's classifier: the last "
          "epoch's Fréchet distance is lower and its fraction of samples classified with confidence >= "
          f"score_gan.confident (itself >= {GAN_CONFIDENT_MIN:g}) higher than the first epoch's; that fraction >= "
          f"{100 * GAN_RECOGNISABLE:g} %; the samples read as the digit asked for >= {100 * GAN_AGREEMENT:g} % of "
          "the time).",
          "GANs [...] 2014, 2015, 2016, 2017, 2019 (les images générées s'améliorent)", _gan_digits),
    Claim("gan-progress", "Generated images improved from 2014 to 2019 (checked on the same data, with the same "
          "number of images seen by each generator, scored the same way: the Fréchet distance to the real test "
          f"set's classifier features decreases along {' → '.join(GAN_TIMELINE)}; every era's scores and whether "
          "each step of the timeline improved are in `values`).",
          "GANs [...] 2014, 2015, 2016, 2017, 2019 (les images générées s'améliorent)", _gan_progress),
    Claim("gan-slides", "The slides' own five systems improved year by year (checked as gan-progress, on the "
          f"systems of the slides' figure: the Fréchet distance decreases along {' → '.join(GAN_SLIDES)}; the "
          "coupled GAN of 2016 judged on its first domain, the digits; same data, same number of images seen by "
          "each generator, scored the same way).",
          "GANs [...] 2014, 2015, 2016, 2017, 2019 (les images générées s'améliorent)", _gan_slides),
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
