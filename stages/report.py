"""Stage `report`: every course claim beside its measured value, the figures, and the environment.

Writes reports/claims.json (one entry per claim id, `holds` computed from measured numbers: a DVC
metric), reports/report.md with its own figures in reports/figures/, and reports/report.html: the
same document in one file, every image embedded. Its own MLflow run id goes to reports/run.json,
outside `tracking/`, which it reads.
"""

import pandas as pd

from dlcourse import params, registry, tracking
from dlcourse.claims import Results, evaluate_claims, pct, slight_corruption_verdict, supported_claims
from dlcourse.document import document, unlisted_figures, write_report
from dlcourse.environment import environment, pipeline_stages
from dlcourse.figures import plot_columns, plot_curves
from dlcourse.files import write_json
from dlcourse.paths import PLOTS, REPORTS

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
    plot_columns(results.curve("gan/losses"), "step", ["generator", "discriminator"], "DCGAN training losses",
                 REPORTS / "figures" / "gan_losses.png", "step (batch)", ylabel="loss", scale=1)


def cnn_entries(results: Results) -> dict[str, list[str]]:
    """The train-cnn entries by dataset."""
    entries = {}
    for path in sorted((results.metrics_dir / "cnn").glob("*.json")):
        entries.setdefault(results.metrics(f"cnn/{path.stem}")["dataset"], []).append(path.stem)
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
    for path in sorted((results.metrics_dir / "fooling").glob("*.json")):
        m = results.metrics(f"fooling/{path.stem}")
        parts.append(f"### Fooling images, {path.stem} (`{m['model']}`, bar {m['confidence_bar']}; transfer to "
                     f"`{m['transfer_model']}`)\n\n"
                     f"![gradient ascent](../plots/fooling/{path.stem}/gradient.png)\n\n"
                     f"![evolution](../plots/fooling/{path.stem}/evolution.png)\n")
    return "\n".join(parts)


def gan_section(results: Results) -> str:
    epochs = sorted((results.plots_dir / "gan" / "samples").glob("epoch_*.png"))
    progression = "\n".join(f"| epoch {int(path.stem.split('_')[1])} | ![](../plots/gan/samples/{path.name}) |"
                             for path in epochs)
    scores = results.curve("gan/scores")
    return (
        "## GANs: from noise to digits, epoch after epoch\n\n"
        "The slides show generated images improving from 2014 to 2019; here the same DCGAN's samples "
        "from one fixed noise batch improve from epoch to epoch.\n\n"
        "| after | samples |\n| --- | --- |\n" + progression + "\n\n"
        "![interpolation](../plots/gan/interpolation.png)\n\n"
        "![losses](figures/gan_losses.png)\n\n" + scores.to_markdown(index=False) + "\n\n"
        "| confident samples | Fréchet distance |\n| --- | --- |\n"
        "| ![](../plots/gan/confident_fraction.png) | ![](../plots/gan/frechet_distance.png) |\n"
    )


def other_figures_section(figures) -> str:
    """Figures a stage writes that no section above shows yet, so that the report never leaves one out."""
    return "## Other figures of the stages\n\n" + "\n\n".join(
        f"![{path.relative_to(PLOTS).as_posix()}](../{path.as_posix()})" for path in figures) + "\n"


def main() -> None:
    all_params = params.load()
    with tracking.stage_run("report", tracking.declared_params("report", all_params),
                            record=REPORTS / "run.json") as run:
        results = Results()
        claims = evaluate_claims(results)
        draw_figures(results)
        sections = [linear_section(results), cnn_section(results), evaluation_section(results),
                    robustness_section(results), gan_section(results)]
        unlisted = unlisted_figures("\n".join(sections), REPORTS, PLOTS)
        if unlisted:
            sections.append(other_figures_section(unlisted))
        stages = [stage for stage in pipeline_stages() if stage != "report"]
        markdown = document(claims, sections, environment(stages, results))

        write_json(REPORTS / "claims.json", claims, sort_keys=False)  # in the course's order
        write_report(markdown, REPORTS)
        held = sum(claim["holds"] for claim in claims.values())
        run.log_metrics({"claims_held": held, "claims_total": len(claims)})
        for path in [REPORTS / "claims.json", REPORTS / "report.md", REPORTS / "report.html",
                     *sorted((REPORTS / "figures").glob("*.png"))]:
            run.log_artifact(path)
        champions = registry.promote(results, supported_claims(claims))
        run.set_tags({f"champion.{dataset}": model for dataset, model in champions.items()})


if __name__ == "__main__":
    main()
