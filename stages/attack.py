"""Stage `attack@<model>`: "a very slight corruption of still recognisable images can wreck the
predictions" (the exercise). FGSM and PGD over an L-inf sweep, random noise of the same L-inf and
L2 sizes as controls, and natural corruptions in the style of CIFAR-10-C."""

import sys

import torch

from dlcourse import attacks, data, params, tracking
from dlcourse.figures import image_grid, plot_columns
from dlcourse.files import atomic_path, write_json
from dlcourse.models import load_classifier
from dlcourse.paths import METRICS, MODELS, PLOTS, PREPARED
from dlcourse.training import predict_proba, resolve_device, seed_everything


def main(name: str) -> None:
    all_params = params.load()
    p = all_params.attack
    if name not in p.models:
        raise SystemExit(f"params.yaml: attack.models has no entry {name!r} (entries: {sorted(p.models)})")
    settings = p.models[name]
    stage = f"attack@{name}"
    logged = {"model": name, **p.model_dump(exclude={"models"}), **settings.model_dump()}
    with tracking.stage_run(stage, logged) as run:
        generator = seed_everything(all_params.seed)
        device = resolve_device(all_params.device)
        model, checkpoint = load_classifier(MODELS / f"{name}.pt", device)
        test = data.load_split(PREPARED, checkpoint["dataset"], "test")
        subset = torch.randperm(len(test), generator=generator)[: p.subset]
        x, y = test.images[subset].to(device).float().div_(255), test.labels[subset].to(device)

        methods = attacks.standard_methods(model, generator, p.pgd_steps, p.pgd_step_factor, p.pgd_random_start)
        eps_table = attacks.sweep(model, x, y, sorted(set(settings.eps) | {0.0, settings.claim_eps}), methods)
        corruption_table = attacks.sweep_corruptions(model, x, y, generator)

        accuracy = eps_table.pivot(index="eps", columns="method", values="accuracy")
        clean = float(accuracy.loc[0.0, "fgsm"])
        at_claim = accuracy.loc[settings.claim_eps]
        metrics = {
            "dataset": checkpoint["dataset"],
            "clean_accuracy": clean,
            "claim_eps": settings.claim_eps,
            "at_claim_eps": {method: float(at_claim[method]) for method in methods},
            "drop_at_claim_eps": {method: clean - float(at_claim[method]) for method in methods},
            "corruptions_severity_5": corruption_table[corruption_table.severity == 5]
            .set_index("corruption")["accuracy"].to_dict(),
        }

        out = PLOTS / "attack" / name
        with atomic_path(out / "eps.csv") as tmp:
            accuracy.reset_index().to_csv(tmp, index=False)
        with atomic_path(out / "corruptions.csv") as tmp:
            corruption_table.to_csv(tmp, index=False)
        plot_columns(accuracy.reset_index(), "eps", list(methods), f"{name}: accuracy under L-inf perturbations",
                     out / "accuracy_vs_eps.png", "eps (pixel units)")
        severities = corruption_table.pivot(index="severity", columns="corruption", values="accuracy").reset_index()
        plot_columns(severities, "severity", list(attacks.CORRUPTIONS), f"{name}: accuracy under corruptions",
                     out / "corruptions.png", "severity (CIFAR-10-C style)")

        # The evidence: clean images, their PGD version at the claim's eps, and the perturbation amplified.
        clean_x, clean_y = x[: p.examples], y[: p.examples]
        attacked = methods["pgd"](clean_x, clean_y, settings.claim_eps)
        amplified = (attacked - clean_x) / (2 * settings.claim_eps) + 0.5
        classes = test.classes

        def captions(images):
            confidence, predicted = predict_proba(model, images).max(1)
            return [f"{classes[k]} ({c:.2f})" for k, c in zip(predicted.tolist(), confidence.tolist())]

        image_grid(torch.cat([clean_x, attacked, amplified]).cpu(),
                   captions(clean_x) + captions(attacked) + ["perturbation x" + f"{0.5 / settings.claim_eps:.0f}"] * len(clean_x),
                   out / "examples.png", f"{name}: clean (top), PGD eps = {settings.claim_eps} (middle), "
                   "perturbation amplified (bottom)", columns=len(clean_x))
        write_json(METRICS / "attack" / f"{name}.json", metrics)

        run.log_metrics({"clean_accuracy": clean, **{f"at_claim_eps.{k}": v for k, v in metrics["at_claim_eps"].items()}})
        for step, (eps, row) in enumerate(accuracy.iterrows()):
            run.log_metrics({f"curve.{method}": float(row[method]) for method in methods}, step=step)
        for figure in ("accuracy_vs_eps.png", "corruptions.png", "examples.png"):
            run.log_artifact(out / figure)


if __name__ == "__main__":
    main(sys.argv[1])
