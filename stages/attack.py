"""Stage `attack@<model>`: "a very slight corruption of still recognisable images can wreck the
predictions" (the exercise). FGSM and PGD over an L-inf sweep, random noise of the same L-inf and
L2 sizes as controls, and natural corruptions in the style of CIFAR-10-C."""

import sys
from dataclasses import dataclass

import pandas as pd
import torch

from dlcourse import progress
from dlcourse.course import attacks, corruptions, data, robust
from dlcourse.pipeline import layout, params
from dlcourse.report.figures import image_grid, plot_columns
from dlcourse.files import write_csv, write_json
from dlcourse.course.models import Classifier, load_classifier
from dlcourse.course.training import predict_proba, resolve_device, seed_everything
from dlcourse.pipeline.stage import stage


def accuracy_by_eps(table) -> dict[float, dict[str, float]]:
    return {float(eps): row.to_dict() for eps, row in table.pivot(index="eps", columns="method", values="accuracy")
            .iterrows()}


@dataclass
class Attacked:
    methods: dict[str, attacks.Method]
    images: dict[str, int]  # per half
    tables: dict[str, pd.DataFrame]  # per half: one row per (method, eps)
    chosen_eps: float
    corruptions: pd.DataFrame  # one row per (corruption, severity)
    examples: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # clean, PGD at the chosen eps, perturbation amplified


def attack(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: list[float], p: params.AttackParams,
           rng: torch.Generator, label: str | None = None) -> Attacked:
    """The sweep on two halves of the attacked images: the claim's eps is chosen on the first
    (selection) and judged on the second (evaluation); the corruptions on all of them."""
    half = len(y) // 2
    halves = {"selection": (x[:half], y[:half]), "evaluation": (x[half:], y[half:])}
    methods = attacks.standard_methods(model, rng, p.pgd_steps, p.pgd_step_factor, p.pgd_random_start, p.bf16)
    eps_grid = sorted(set(eps) | {0.0})
    tables = {part: attacks.sweep(model, xs, ys, eps_grid, methods, label=label and f"{label} {part}")
              for part, (xs, ys) in halves.items()}
    chosen_eps = attacks.choose_slight_eps(accuracy_by_eps(tables["selection"]))
    corruption_table = corruptions.sweep_corruptions(model, x, y, rng)
    clean_x, clean_y = halves["evaluation"][0][: p.examples], halves["evaluation"][1][: p.examples]
    attacked = methods["pgd"](clean_x, clean_y, chosen_eps)
    amplified = (attacked - clean_x) / (2 * chosen_eps) + 0.5
    return Attacked(methods, {part: len(ys) for part, (_, ys) in halves.items()}, tables, chosen_eps,
                    corruption_table, (clean_x, attacked, amplified))


def summary(result: Attacked, dataset: str) -> dict:
    return {
        "dataset": dataset,
        "images": result.images,
        "chosen_eps": result.chosen_eps,
        **{part: {"accuracy": {f"{eps:g}": row for eps, row in accuracy_by_eps(table).items()},
                  "psnr_db": {f"{eps:g}": {method: attacks.psnr(mse) for method, mse in row.items()}
                              for eps, row in table.pivot(index="eps", columns="method", values="mse")
                              .iterrows() if eps > 0}}
           for part, table in result.tables.items()},
        "corruptions_severity_5": result.corruptions[result.corruptions.severity == 5]
        .set_index("corruption")["accuracy"].to_dict(),
    }


def robustness(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, p: params.AttackParams,
               rng: torch.Generator, seed: int) -> dict:
    """Beyond the course: the robust accuracy at `eps` under PGD with random restarts, under an independent
    implementation (torchattacks' APGD), and under both (an image counts only if neither fools the network)."""
    pgd = robust.robust_correct(model, x, y, eps, p.strong_pgd_steps, p.strong_pgd_step, p.strong_pgd_restarts, rng)
    apgd = robust.apgd_correct(model, x, y, eps, p.apgd_steps, seed)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    return {"eps": eps, "images": len(y), "clean": clean, "pgd": pgd.float().mean().item(),
            "apgd": apgd.float().mean().item(), "worst_case": (pgd & apgd).float().mean().item(),
            "pgd_steps": p.strong_pgd_steps, "pgd_step": p.strong_pgd_step, "pgd_restarts": p.strong_pgd_restarts,
            "apgd_steps": p.apgd_steps}


def eps_grid(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps_list: list[float], classes: list[str],
             steps: int, name: str, path) -> None:
    """The same test digits under PGD at growing eps, one row per digit. Every attack entry of a dataset
    attacks the same images (one seed, one draw), so two models' grids show the same digits: where a
    standard network's attacks are noise, a robust one's draw strokes of another digit (Tsipras et al. 2019)."""
    images, captions = [], []
    for i in range(len(y)):
        for eps in eps_list:
            xi, yi = x[i : i + 1], y[i : i + 1]
            attacked = xi if eps == 0 else attacks.pgd(model, xi, yi, eps, steps, 2.5 * eps / steps)
            confidence, predicted = predict_proba(model, attacked).max(1)
            images.append(attacked.cpu())
            captions.append(f"eps {eps:g}: {classes[predicted.item()]} ({confidence.item():.2f})")
    image_grid(torch.cat(images), captions, path, f"{name}: PGD at growing eps", columns=len(eps_list))


def main(name: str) -> None:
    with stage("attack", name, entry="attack.models", seed=seed_everything, device=resolve_device) as job:
        p, settings, run, rng, device = job.params.attack, job.entry, job.run, job.rng, job.device
        model, checkpoint = load_classifier(layout.model(name), device)
        test = data.load_split(layout.PREPARED, checkpoint["dataset"], "test")
        run.log_dataset(layout.prepared_split(checkpoint["dataset"], "test"), "evaluation")
        subset = torch.randperm(len(test), generator=rng)[: p.subset]
        x, y = data.to_float(test.images[subset], device), test.labels[subset].to(device)
        result = attack(model, x, y, settings.eps, p, rng, label=job.name)
        if still := [f"{what} ({part})" for part, table in result.tables.items() for what in attacks.unmoved(table)]:
            clean = accuracy_by_eps(result.tables["evaluation"])[0.0]["pgd"]
            raise SystemExit(f"{job.name}: {', '.join(still[:3])}{' ...' if len(still) > 3 else ''} moved no pixel of "
                             f"any image: the network's input gradient is zero everywhere ({100 * clean:.1f} % clean "
                             f"accuracy: its units dead, or its loss flat); nothing written. Retrain {name} (its "
                             f"train entry's epochs or learning rate) before attacking it")
        metrics = summary(result, checkpoint["dataset"])

        out = layout.attack(name)
        methods = list(result.methods)
        accuracy = pd.concat(result.tables.values()).groupby(["eps", "method"])["accuracy"].mean().unstack()
        write_csv(accuracy.reset_index(), out / "eps.csv")
        write_csv(result.corruptions, out / "corruptions.csv")
        plot_columns(accuracy.reset_index(), "eps", methods, f"{name}: accuracy under L-inf perturbations",
                     out / "accuracy_vs_eps.png", "eps (pixel units)")
        severities = result.corruptions.pivot(index="severity", columns="corruption", values="accuracy").reset_index()
        plot_columns(severities, "severity", list(corruptions.CORRUPTIONS), f"{name}: accuracy under corruptions",
                     out / "corruptions.png", "severity (CIFAR-10-C style)")
        clean_x, attacked, amplified = result.examples
        eps = result.chosen_eps

        def captions(images):
            confidence, predicted = predict_proba(model, images).max(1)
            return [f"{test.classes[k]} ({c:.2f})" for k, c in zip(predicted.tolist(), confidence.tolist())]

        image_grid(torch.cat([clean_x, attacked, amplified]).cpu(),
                   captions(clean_x) + captions(attacked) + [f"perturbation x{0.5 / eps:.0f}"] * len(clean_x),
                   out / "examples.png", f"{name}: clean (top), PGD eps = {eps:g} (middle), "
                   "perturbation amplified (bottom)", columns=len(clean_x))
        if settings.robust_eps is not None:
            metrics["robust"] = robustness(model, x, y, settings.robust_eps, p, rng, job.params.seed)
        shown = slice(result.images["selection"], result.images["selection"] + p.examples // 2)  # evaluation half
        eps_grid(model, x[shown], y[shown], [0.0, *(settings.grid_eps or settings.eps)], test.classes,
                 p.strong_pgd_steps, name, out / "eps_grid.png")
        write_json(layout.attack_metrics(name), metrics)

        run.log_metrics({"chosen_eps": eps, **{f"evaluation.{method}": acc for method, acc in
                                                metrics["evaluation"]["accuracy"][f"{eps:g}"].items()}})
        for step, (_, row) in enumerate(accuracy.iterrows()):
            run.log_metrics({f"curve.{method}": float(row[method]) for method in methods}, step=step)
        if "robust" in metrics:
            run.log_metrics({f"robust.{key}": metrics["robust"][key] for key in ("clean", "pgd", "apgd", "worst_case")})
        for figure in ("accuracy_vs_eps.png", "corruptions.png", "examples.png", "eps_grid.png"):
            run.log_artifact(out / figure)
    clean, attacked = (metrics["evaluation"]["accuracy"][key]["pgd"] for key in ("0", f"{eps:g}"))
    progress.summary(job.name, f"{100 * clean:.1f} % accuracy clean, {100 * attacked:.1f} % under PGD at eps {eps:g} "
                            f"({result.images['evaluation']} images judged)")


if __name__ == "__main__":
    main(sys.argv[1])
