"""Stage `evaluate@<kind>/<name>`: one trained model on its test set: accuracy, per-class accuracy,
confusion matrix, calibration, and the exercise's "images on which the network is very wrong"."""

import sys
from dataclasses import dataclass

import pandas as pd
import torch

from dlcourse import progress
from dlcourse.course import data
from dlcourse.pipeline import layout, params
from dlcourse.course.evaluation import Calibration, calibration, confusion_matrix, hardest_errors, per_class_accuracy
from dlcourse.report.figures import image_grid, plot_confusion, plot_reliability
from dlcourse.files import write_csv, write_json
from dlcourse.course.models import Classifier, load_classifier
from dlcourse.course.training import predict_proba, resolve_device, seed_everything
from dlcourse.pipeline.stage import stage


@dataclass
class Evaluation:
    metrics: dict
    predicted: torch.Tensor
    confidence: torch.Tensor
    confusion: torch.Tensor
    calibration: Calibration
    hardest: torch.Tensor  # indices of the most confidently wrong test images


def evaluate(model: Classifier, images: torch.Tensor, actual: torch.Tensor, classes: list[str],
             p: params.EvaluateParams) -> Evaluation:
    probabilities = predict_proba(model, images).cpu()
    confidence, predicted = probabilities.max(1)
    correct = predicted == actual
    confusion = confusion_matrix(actual, predicted, len(classes))
    calib = calibration(confidence, correct, p.ece_bins)
    metrics = {
        "test_accuracy": float(correct.double().mean()),
        "per_class_accuracy": dict(zip(classes, per_class_accuracy(confusion).tolist())),
        "ece": calib.ece,
        "mean_confidence": float(confidence.double().mean()),
        "confidently_wrong": int(((~correct) & (confidence >= p.confident)).sum()),
        "confident_threshold": p.confident,
        "errors": int((~correct).sum()),
    }
    hardest = hardest_errors(probabilities, actual, p.hardest)
    return Evaluation(metrics, predicted, confidence, confusion, calib, hardest)


def main(name: str) -> None:
    with stage("evaluate", name, entry="evaluate.models", seed=seed_everything, device=resolve_device) as job:
        p, run, device = job.params.evaluate, job.run, job.device
        model, checkpoint = load_classifier(layout.model(name), device)
        test = data.load_split(layout.PREPARED, checkpoint["dataset"], "test")
        run.log_dataset(layout.prepared_split(checkpoint["dataset"], "test"), "evaluation")
        classes, images = test.classes, data.to_float(test.images, device)
        result = evaluate(model, images, test.labels, classes, p)
        metrics = {"dataset": checkpoint["dataset"], **result.metrics}

        out = layout.evaluation(name)
        write_csv(pd.DataFrame({"actual": [classes[i] for i in test.labels],
                                "predicted": [classes[i] for i in result.predicted]}),
                  out / "predictions.csv")  # for `dvc plots show` (confusion template)
        plot_confusion(result.confusion, classes, f"{name}: confusion matrix", out / "confusion.png")
        calib = result.calibration
        plot_reliability(calib.bin_edges, calib.bin_confidence, calib.bin_accuracy, calib.ece,
                         f"{name}: reliability", out / "reliability.png")
        captions = [f"true {classes[test.labels[i]]}\npred {classes[result.predicted[i]]} ({result.confidence[i]:.3f})"
                    for i in result.hardest]
        image_grid(images[result.hardest.to(device)].cpu(), captions, out / "hardest_errors.png",
                   f"{name}: the most confidently wrong test images")
        write_json(layout.evaluation_metrics(name), metrics)

        run.log_metrics({key: metrics[key] for key in ("test_accuracy", "ece", "confidently_wrong")})
        for figure in ("confusion.png", "reliability.png", "hardest_errors.png"):
            run.log_artifact(out / figure)
    progress.summary(job.name, f"{100 * metrics['test_accuracy']:.2f} % test accuracy, ECE {metrics['ece']:.3f}, "
                            f"{metrics['confidently_wrong']} confidently wrong")


if __name__ == "__main__":
    main(sys.argv[1])
