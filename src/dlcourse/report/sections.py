"""The report's sections: the course's results by topic, in Markdown, with the figures the report
draws itself (in reports/figures/) beside those of the stages (in plots/)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..pipeline.layout import FOOLING_METHODS, PLOTS, REPORTS
from .claims_gans import GAN_SLIDES, GAN_TIMELINE, gan_entries, gan_progress_table
from .claims_robustness import adversarially_trained, slight_corruption_verdict
from .figures import image_columns, plot_curves
from .results import Results
from .verdicts import pct


LINEAR_RUNS = {
    "one_epoch": "slides' loss −log f(x)(y), 1 epoch",
    "slide_code_loss": "slides' code: nll_loss on softmax, 1 epoch",
    "long": "slides' loss, 20 epochs",
}


def draw_figures(results: Results) -> None:
    """The report's own figures, in reports/figures/: the curves of one kind together."""
    curves = {label: results.curve(f"linear/{name}") for name, label in LINEAR_RUNS.items()}
    plot_curves(curves, "step", "test_accuracy", "Reseau1 (784 → 10, softmax) on MNIST",
                REPORTS / "figures" / "linear_curves.png", "iteration (batches of 60)")
    for dataset, entries in cnn_entries(results).items():
        plot_curves({name: results.curve(f"cnn/{name}") for name in entries}, "epoch", "test_accuracy",
                    f"train-cnn on {dataset}", REPORTS / "figures" / f"cnn_{dataset}_curves.png", "epoch")
    draw_gan_figures(results)


def last_samples(results: Results, entry: str) -> Path:
    return sorted((results.plots_dir / "gan" / entry / "samples").glob("epoch_*.png"))[-1]


def draw_gan_figures(results: Results) -> None:
    """The slides' timeline (one column per era: year and method above, the last epoch's samples from
    the same fixed noise, the scores under; the slides' five systems in the first row, the other eras'
    losses and normalisations in the second), every entry's Fréchet-distance curve on one plot, and
    every entry's losses."""
    entries = gan_entries(results)
    table = gan_progress_table(entries)

    def column(row: dict) -> tuple[str, Path, str]:
        return (f"{row['year']}\n{row['method']}", last_samples(results, row["entry"]),
                f"FD {row['frechet_distance']:.2f}\nprecision {row['precision']:.2f}, recall "
                f"{row['recall']:.2f}\nconfident {pct(row['confident_fraction'])}\nrarest digit "
                f"{pct(row['rarest_class_share'])}")
    by_era = {row["era"]: row for row in table}
    rows = [[column(by_era[era]) for era in GAN_SLIDES if era in by_era],
            [column(row) for row in table if row["era"] not in GAN_SLIDES]]
    titles = ["the slides' systems", "the losses and normalisations of 2017-2018"]
    shown = [(row, title) for row, title in zip(rows, titles) if row]
    if shown:
        image_columns([row for row, _ in shown], REPORTS / "figures" / "gan_timeline.png",
                      row_titles=[title for _, title in shown])
    curves = {}
    for entry, m in entries.items():
        curve = results.curve(f"gan/{entry}/scores")
        curves[f"{entry} ({m['method']}, {m['year']})"] = curve.assign(
            kimages=curve["epoch"] * m["generator_images"] / results.metrics(f"gan/{entry}/train")["epochs"] / 1000)
    sizes = sorted({m["curve_samples"] for m in entries.values()})
    plot_curves(curves, "kimages", "frechet_distance", f"Fréchet distance to the real test set, after each epoch "
                f"({' / '.join(map(str, sizes))} samples)", REPORTS / "figures" / "gan_frechet_curves.png",
                "images seen by the generator (thousands)", ylabel="Fréchet distance", scale=1)
    plot_curves({entry: results.curve(f"gan/{entry}/losses") for entry in entries}, "step", "generator",
                "generator losses (each era's own loss)", REPORTS / "figures" / "gan_losses.png", "generator step",
                ylabel="loss", scale=1)


def cnn_entries(results: Results) -> dict[str, list[str]]:
    """The train-cnn entries by dataset."""
    entries = {}
    for name, m in results.per_model("cnn").items():  # the entries params.yaml names
        entries.setdefault(m["dataset"], []).append(name)
    return entries


def linear_section(results: Results) -> str:
    rows = []
    for name, label in LINEAR_RUNS.items():
        m = results.metrics(f"linear/{name}")
        t = results.metrics(f"timing/train-linear@{name}")
        rows.append({"run": f"`{name}` ({label})", "at init (1000 images)": pct(m["init_batch_accuracy"]),
                     "final": pct(m["test_accuracy"]), "best": pct(m["best_test_accuracy"]),
                     "iterations": m["iterations"], "train time (s)": t["train_seconds"]})
    return (
        "## MNIST, a dense network with no hidden layer\n\n"
        "![learning curves](figures/linear_curves.png)\n\n" + pd.DataFrame(rows).to_markdown(index=False) + "\n\n"
        "The slides' code applies `F.nll_loss` to softmax probabilities, which minimises −f(x)(y) rather than "
        "the −log f(x)(y) of the slides' formula; both are trained here with the same settings.\n"
    )


def cnn_section(results: Results) -> str:
    rows = []
    for name in sum(cnn_entries(results).values(), []):
        m, t = results.metrics(f"cnn/{name}"), results.metrics(f"timing/train-cnn@{name}")
        rows.append({"entry": f"`{name}`", "dataset": m["dataset"], "parameters": f"{m['parameters']:,}",
                     "epochs": m["epochs"], "test accuracy": pct(m["test_accuracy"]),
                     "train time (s)": t["train_seconds"], "images/s": t["images_per_second"], "device": t["device"],
                     "> 50 %": ("yes" if m["test_accuracy"] > 0.5 else "no") if m["dataset"] == "cifar10" else ""})
    figures = "".join(f"![{dataset} curves](figures/cnn_{dataset}_curves.png)\n\n" for dataset in cnn_entries(results))
    return ("## Convolutional networks, and the CIFAR-10 exercise\n\n" + figures
            + pd.DataFrame(rows).to_markdown(index=False) + "\n")


def evaluation_section(results: Results) -> str:
    rows, images = [], []
    for name, m in results.per_model("evaluate").items():
        rows.append({"model": f"`{name}`", "dataset": m["dataset"], "test accuracy": pct(m["test_accuracy"]),
                     "ECE": pct(m["ece"]), "mean confidence": pct(m["mean_confidence"]), "errors": m["errors"],
                     f"wrong with confidence >= {m['confident_threshold']}": m["confidently_wrong"]})
        folder = f"../plots/evaluate/{name}"
        images.append(f"### `{name}`\n\n| confusion matrix | reliability | most confidently wrong |\n| --- | --- | --- |\n"
                      f"| ![]({folder}/confusion.png) | ![]({folder}/reliability.png) | ![]({folder}/hardest_errors.png) |\n")
    return ("## Evaluation: accuracy, calibration, and the images the networks get very wrong\n\n"
            + pd.DataFrame(rows).to_markdown(index=False) + "\n\n" + "\n".join(images))


def robustness_section(results: Results) -> str:
    parts = ["## Robustness: slight corruptions, and fooling images\n"]
    for name, m in results.per_model("attack").items():
        folder = f"../plots/attack/{name}"
        verdict = slight_corruption_verdict(m)
        eps = f"{verdict['eps']:g}"
        clean = m["evaluation"]["accuracy"]["0"]
        rows = [{"method": method, f"accuracy at eps {eps}": pct(acc), "drop (points)": f"{100 * (clean[method] - acc):.1f}",
                 "PSNR (dB)": f"{m['evaluation']['psnr_db'][eps][method]:.1f}"}
                for method, acc in m["evaluation"]["accuracy"][eps].items()]
        parts.append(f"### `{name}`: eps {eps} chosen on {m['images']['selection']} images, judged on "
                     f"{m['images']['evaluation']} others (clean accuracy {pct(verdict['clean'])})\n\n"
                     + pd.DataFrame(rows).to_markdown(index=False) + "\n\n"
                     f"![examples]({folder}/examples.png)\n\n"
                     f"| L-inf sweep | corruptions |\n| --- | --- |\n"
                     f"| ![]({folder}/accuracy_vs_eps.png) | ![]({folder}/corruptions.png) |\n")
    for dataset in results.names("fooling"):  # the entries params.yaml names
        m = results.metrics(f"fooling/{dataset}")
        timing = results.metrics(f"timing/fooling@{dataset}")
        rows = [{"method": FOOLING_METHODS[method],
                 f"classes >= {m['confidence_bar']}": sum(c["confidence"] >= m["confidence_bar"]
                                                         for c in m[method]["per_class"].values()),
                 "lowest confidence": pct(min(c["confidence"] for c in m[method]["per_class"].values())),
                 "PNG bytes per image": f"{m[method]['png_bytes_mean']:.0f}",
                 "total variation": f"{m[method]['total_variation_mean']:.3f}",
                 f"`{m['transfer_model']}`'s confidence": pct(m[method]["transfer_confidence_mean"]),
                 "seconds": timing[f"{method}_seconds"]}
                for method in FOOLING_METHODS]
        images = "\n\n".join(f"![{label}](../plots/fooling/{dataset}/{method}.png)"
                              for method, label in FOOLING_METHODS.items())
        parts.append(f"### Fooling images, {dataset} (`{m['model']}`, bar {m['confidence_bar']}; transfer to "
                     f"`{m['transfer_model']}`)\n\n"
                     "Noise-like images by gradient ascent and by evolution of the pixels, and regular patterns "
                     "by a CPPN evolved with MAP-Elites over all classes at once (Nguyen et al. 2015, the slides' "
                     "images). Regularity: the size of each 8-bit image as a PNG (zlib level 9) and its total "
                     "variation (mean absolute difference of neighbouring pixels), averaged over the classes; "
                     "lower is more regular.\n\n" + pd.DataFrame(rows).to_markdown(index=False) + "\n\n"
                     + images + "\n")
    return "\n".join(parts)


def robust_training_section(results: Results) -> str:
    """Beyond the course: each adversarially trained network beside the course's networks of its dataset,
    under the same strong attacks, on the same test digits, with the same fooling methods."""
    robust = [name for name in results.names("attack") if adversarially_trained(results, name)]
    if not robust:
        return ""
    attacked = results.per_model("attack")
    rows = [{"model": f"`{name}`", "training": results.metrics(name)["adversarial"]["method"]
             if adversarially_trained(results, name) else "standard",
             "clean (test set)": pct(results.metrics(name)["test_accuracy"]),
             **{f"{label} at eps {m['robust']['eps']:g}": pct(m["robust"][key])
                for key, label in (("pgd", f"PGD-{m['robust']['pgd_steps']} x {m['robust']['pgd_restarts']}"),
                                   ("apgd", f"APGD-{m['robust']['apgd_steps']}"), ("worst_case", "both"))}}
            for name, m in attacked.items() if "robust" in m]
    parts = ["## Beyond the course: a network that a slight corruption does not fool\n",
             "Trained on its own adversarial examples (Wong, Rice and Kolter 2020: FGSM from a random start; "
             "Madry et al. 2018: PGD), a network keeps most of its accuracy under the attacks that wreck the "
             "course's networks. Robust accuracy: the attacked test images that neither a PGD with random restarts "
             "nor an independent implementation of APGD (torchattacks) fools.\n",
             pd.DataFrame(rows).to_markdown(index=False) + "\n"]
    for name in robust:
        a = results.metrics(name)["adversarial"]
        checks = ", ".join(f"{pct(acc)}" for acc in a["holdout_robust_accuracy"])
        caught = (f"catastrophic overfitting caught at epoch {a['overfitting_epoch']}: the weights of epoch "
                  f"{a['kept_epoch']} kept" if a["overfitting_epoch"] else "no catastrophic overfitting")
        dataset = attacked[name]["dataset"]
        standard = [other for other in attacked if other != name and not adversarially_trained(results, other)
                    and attacked[other]["dataset"] == dataset and other.startswith("cnn/")]
        grids = [f"../plots/attack/{model}/eps_grid.png" for model in [*standard, name]]
        parts.append(f"### `{name}`\n\nHeld-out robust accuracy after each epoch (PGD-{a['check_steps']} at eps "
                     f"{a['eps']:g} on {a['holdout']} training images left out): {checks}; {caught}.\n\n"
                     "The same test digits under PGD at growing eps: "
                     + ", ".join(f"`{model}`" for model in [*standard, name]) + ".\n\n"
                     + "| " + " | ".join(f"`{model}`" for model in [*standard, name]) + " |\n"
                     + "| --- " * len(grids) + "|\n| " + " | ".join(f"![]({g})" for g in grids) + " |\n")
        fooled = [entry for entry in results.names("fooling")
                  if results.metrics(f"fooling/{entry}")["model"] in [*standard, name]]
        if fooled:
            parts.append("Fooling images by gradient ascent, from noise, for each network (the transfer: the mean "
                         "confidence of the other network in the class asked for):\n\n"
                         + "| " + " | ".join(f"`{results.metrics(f'fooling/{e}')['model']}` (transfer "
                                             f"{pct(results.metrics(f'fooling/{e}')['gradient']['transfer_confidence_mean'])})"
                                             for e in fooled) + " |\n"
                         + "| --- " * len(fooled) + "|\n| "
                         + " | ".join(f"![](../plots/fooling/{e}/gradient.png)" for e in fooled) + " |\n")
    return "\n".join(parts)


def gan_section(results: Results) -> str:
    entries = gan_entries(results)
    table = gan_progress_table(entries)
    # the timeline's order, then the conditional entry
    entries = {**{row["entry"]: entries[row["entry"]] for row in table}, **entries}
    rows = []
    for row in table:
        train = results.metrics(f"timing/train-gan@{row['entry']}")["train_seconds"]
        score = results.metrics(f"timing/score-gan@{row['entry']}")["score_seconds"]
        rows.append({"year": row["year"], "method": f"{row['method']} (`{row['entry']}`)",
                     "Fréchet distance": f"{row['frechet_distance']:.2f}", "precision": f"{row['precision']:.3f}",
                     "recall": f"{row['recall']:.3f}", "confident": pct(row["confident_fraction"]),
                     "rarest digit": pct(row["rarest_class_share"]), "IS analogue": f"{row['inception_score']:.2f}",
                     "improved on the era before": {None: "", True: "yes", False: "no"}[row["improved_on_previous"]],
                     "still improving": "yes" if still_improving(results, row["entry"]) else "no",
                     "judged by": ", ".join(claim for claim, eras in (("gan-progress", GAN_TIMELINE),
                                                                     ("gan-slides", GAN_SLIDES)) if row["era"] in eras),
                     "train + score (s)": f"{train:.0f} + {score:.0f}"})
    real = next(iter(entries.values()))["real"] if entries else None
    baseline = (f"Real training images scored the same way (as many as the samples): Fréchet distance "
                f"{real['frechet_distance']:.2f}, precision {real['precision']:.3f}, recall {real['recall']:.3f}, "
                f"confident {pct(real['confident_fraction'])}, rarest digit {pct(real['rarest_class_share'])}.\n\n"
                if real else "")
    progression = ["| entry | " + " | ".join(f"epoch {e}" for e in range(1, 1 + max(
        (len(list((results.plots_dir / "gan" / entry / "samples").glob("epoch_*.png"))) for entry in entries),
        default=0))) + " | interpolation |"]
    progression.append("| --- " * (progression[0].count("|") - 1) + "|")
    for entry in entries:
        epochs = sorted((results.plots_dir / "gan" / entry / "samples").glob("epoch_*.png"))
        cells = [f"![](../plots/gan/{entry}/samples/{path.name})" for path in epochs]
        cells += [""] * (progression[0].count("|") - 3 - len(cells))
        progression.append(f"| `{entry}` | " + " | ".join(cells) + f" | ![](../plots/gan/{entry}/interpolation.png) |")
    timeline = "![the GAN timeline](figures/gan_timeline.png)\n\n" if rows else ""
    return (
        "## GANs: the slides' timeline, 2014 → 2019, regenerated on MNIST\n\n"
        "One generator per milestone, trained on the same data with the same number of images seen by the "
        "generator, each with its paper's recipe, and scored the same way by the project's classifier: the "
        "Fréchet distance and precision / recall (k-NN manifolds, Kynkäänniemi et al. 2019) in its penultimate "
        "feature space, the share of samples classified with confidence >= score_gan.confident, and the share of "
        "the rarest predicted digit (class coverage: mode collapse). The samples come from the same fixed noise.\n\n"
        + timeline + pd.DataFrame(rows).to_markdown(index=False) + "\n\n" + baseline
        + "![Fréchet distance by epoch](figures/gan_frechet_curves.png)\n\n" + timeline_explained(results, table)
        + "Every entry's samples after each epoch (the conditional DCGAN, asked for each digit in turn, answers "
        "another question: can a GAN be asked for a digit), and a latent interpolation (slerp):\n\n"
        + "\n".join(progression) + "\n\n![losses](figures/gan_losses.png)\n"
    )


def still_improving(results: Results, entry: str) -> bool:
    """Whether an entry's Fréchet distance (on the curve's samples) fell over its last epoch: it was still
    improving when the budget ran out."""
    distances = results.curve(f"gan/{entry}/scores")["frechet_distance"].tolist()
    return len(distances) >= 2 and distances[-1] < distances[-2]


def timeline_explained(results: Results, table: list[dict]) -> str:
    """Why the two timeline claims hold or fail: the measured ranking, what the literature found, and
    which eras the budget cut short."""
    if not table:
        return ""
    best = min(table, key=lambda row: row["frechet_distance"])
    ranking = ", ".join(f"{row['year']} {row['method']} {row['frechet_distance']:.1f}"
                        for row in sorted(table, key=lambda row: row["frechet_distance"]))
    still = [f"{row['year']} {row['method']}" for row in table if still_improving(results, row["entry"])]
    images = ", ".join(sorted({f"{row['generator_images']:,}" for row in table}))
    return (
        f"**Why the timelines hold or fail.** At this budget ({images} images seen by each generator) the eras "
        f"rank, by Fréchet distance: {ranking}; the best is {best['year']}'s {best['method']}. Lucic et al. 2018 "
        "(\"Are GANs Created Equal? A Large-Scale Study\") trained the losses of 2014-2017 with the same tuning "
        "budget and found none consistently better than the 2014 non-saturating loss: the losses and "
        "normalisations of the second row are not where the slides' faces came from. Those faces improved mostly "
        "through architecture and scale: DCGAN's convolutions, CoGAN's shared layers, ProGAN's growing to "
        "1024 x 1024 and StyleGAN's style-based generator, trained for days on GPUs on CelebA-HQ and FFHQ; at "
        "MNIST's 28 x 28 and a few minutes of CPU, the later architectures have little room to show what they "
        "were made for. "
        + (f"Still improving over their last epoch: {', '.join(still)}: a longer budget may change their rank "
           "(docs/benchmarks.md, the long-budget rows)." if still else
           "None was still improving over its last epoch.") + "\n\n")


def other_figures_section(figures) -> str:
    """Figures a stage writes that no section above shows yet, so that the report never leaves one out."""
    return "## Other figures of the stages\n\n" + "\n\n".join(
        f"![{path.relative_to(PLOTS).as_posix()}](../{path.as_posix()})" for path in figures) + "\n"
