"""Stage `fooling@<dataset>`: strange images that the network classifies wrongly with very high
confidence (the exercise; Nguyen, Yosinski and Clune 2015, "Deep Neural Networks are Easily
Fooled"): for every class, from noise, by gradient ascent and by evolution with direct pixel
encoding, and as regular patterns, by a CPPN evolved with MAP-Elites over all classes at once (the
images of the slides); how regular each image is (PNG bytes, total variation); then how confident
a second, independently trained network is on them (transfer)."""

import sys
import time

import torch

from dlcourse import progress
from dlcourse.course import cppn, fooling
from dlcourse.pipeline import layout, params
from dlcourse.report.figures import image_grid
from dlcourse.files import write_json
from dlcourse.course.data import IMAGE_SHAPES
from dlcourse.course.models import load_classifier
from dlcourse.course.training import resolve_device, seed_everything
from dlcourse.pipeline.stage import stage



def fooling_by_cppn(model, shape, p: params.FoolingParams, rng: torch.Generator, label: str | None = None):
    """The CPPN images, with each genome's size beside its image."""
    images, confidence, generations, genomes = cppn.fool_cppn(
        model, shape, rng, generations_max=p.cppn_generations_max, population=p.cppn_population,
        confidence=p.confidence, weight_rate=p.cppn_weight_rate, weight_sigma=p.cppn_weight_sigma,
        add_node_rate=p.cppn_add_node_rate, add_connection_rate=p.cppn_add_connection_rate,
        activation_rate=p.cppn_activation_rate, label=label)
    sizes = [{"hidden_nodes": len(g.hidden), "connections": len(g.weights)} for g in genomes]
    return images, confidence, generations, sizes


def main(entry: str) -> None:
    with stage("fooling", entry, entry="fooling", seed=seed_everything, device=resolve_device) as job:
        p, run, rng, device = job.entry, job.run, job.rng, job.device
        dataset = p.dataset or entry
        model, checkpoint = load_classifier(layout.model(p.model), device)
        second, second_checkpoint = load_classifier(layout.model(p.transfer_model), device)
        if not checkpoint["dataset"] == second_checkpoint["dataset"] == dataset:
            raise SystemExit(f"params.yaml: fooling.{entry}: {p.model} and {p.transfer_model} must both be "
                             f"{dataset} models (found {checkpoint['dataset']}, {second_checkpoint['dataset']})")
        classes = checkpoint["classes"]
        targets = torch.arange(len(classes), device=device)
        shape = IMAGE_SHAPES[dataset]
        methods = {
            "gradient": lambda: fooling.fool_gradient_ascent(
                model, targets, shape, steps_max=p.gradient_steps_max, lr=p.gradient_lr, confidence=p.confidence,
                rng=rng, label=f"{job.name} gradient"),
            "evolution": lambda: fooling.fool_evolution(
                model, targets, shape, generations_max=p.evolution_generations_max,
                population=p.evolution_population, mutation_rate=p.evolution_mutation_rate,
                confidence=p.confidence, rng=rng, label=f"{job.name} evolution"),
            "cppn": lambda: fooling_by_cppn(model, shape, p, rng, label=f"{job.name} cppn"),
        }
        metrics, timing = {"model": p.model, "transfer_model": p.transfer_model, "confidence_bar": p.confidence}, {}
        for method, fool in methods.items():
            start = time.perf_counter()
            images, confidence, steps, *details = fool()
            details = details[0] if details else [{}] * len(classes)  # the CPPN's genome sizes
            timing[f"{method}_seconds"] = round(time.perf_counter() - start, 3)
            transfer = fooling.transfer_confidence(second, images, targets)
            png = [fooling.png_bytes(image) for image in images]
            variation = fooling.total_variation(images).tolist()
            metrics[method] = {
                "all_reached": bool((confidence >= p.confidence).all()),
                "png_bytes_mean": sum(png) / len(png),
                "total_variation_mean": sum(variation) / len(variation),
                "transfer_confidence_mean": float(transfer.mean()),
                "per_class": {name: {"confidence": float(c), "steps": int(s), "transfer_confidence": float(t),
                                     "png_bytes": b, "total_variation": v, **d}
                              for name, c, s, t, b, v, d in zip(classes, confidence, steps, transfer, png, variation,
                                                                details)},
            }
            unit = "steps" if method == "gradient" else "generations"
            captions = [f"{name}: {c:.4f}\n{int(s)} {unit}\nother net: {t:.2f}"
                        for name, c, s, t in zip(classes, confidence, steps, transfer)]
            image_grid(images.cpu(), captions, layout.fooling(entry, method),
                       f"{entry}: fooling images for {p.model}, {layout.FOOLING_METHODS[method]}", columns=5, scale=1.8)
            run.log_metrics({f"{method}.reached": float((confidence >= p.confidence).float().mean()),
                             f"{method}.mean_transfer_confidence": float(transfer.mean()),
                             f"{method}.png_bytes_mean": metrics[method]["png_bytes_mean"],
                             f"{method}.total_variation_mean": metrics[method]["total_variation_mean"]})
            run.log_artifact(layout.fooling(entry, method))
        write_json(layout.fooling_metrics(entry), metrics)
        job.write_timing({**timing, "device": str(device)})
    fooled = {method: sum(c["confidence"] >= p.confidence for c in metrics[method]["per_class"].values())
              for method in methods}
    reached = ", ".join(f"{method} {count}/{len(classes)}" for method, count in fooled.items())
    progress.summary(job.name, f"classes fooled at >= {p.confidence:g} confidence: {reached}")


if __name__ == "__main__":
    main(sys.argv[1])
