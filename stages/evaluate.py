"""Stage `evaluate@<kind>/<name>`: one trained model on its test set: accuracy, per-class accuracy,
confusion matrix, calibration, and the exercise's "images on which the network is very wrong"."""

import sys

import pandas as pd

from dlcourse import data, params, tracking
from dlcourse.evaluation import calibration, confusion_matrix, hardest_errors, per_class_accuracy
from dlcourse.figures import image_grid, plot_confusion, plot_reliability
from dlcourse.files import write_csv, write_json
from dlcourse.models import load_classifier
from dlcourse.paths import METRICS, MODELS, PLOTS, PREPARED
from dlcourse.training import predict_proba, resolve_device, seed_everything, to_float


def main(name: str) -> None:
    all_params = params.load()
    p = all_params.evaluate
    stage = f"evaluate@{name}"
    with tracking.stage_run(stage, tracking.declared_params(stage, all_params)) as run:
        seed_everything(all_params.seed)
        device = resolve_device(all_params.device)
        model, checkpoint = load_classifier(MODELS / f"{name}.pt", device)
        test = data.load_split(PREPARED, checkpoint["dataset"], "test")
        classes = test.classes
        images, actual = to_float(test.images, device), test.labels.to(device)

        probabilities = predict_proba(model, images).cpu()
        actual = actual.cpu()
        confidence, predicted = probabilities.max(1)
        correct = predicted == actual
        confusion = confusion_matrix(actual, predicted, len(classes))
        calib = calibration(confidence, correct, p.ece_bins)
        confidently_wrong = int(((~correct) & (confidence >= p.confident)).sum())
        metrics = {
            "dataset": checkpoint["dataset"],
            "test_accuracy": float(correct.double().mean()),
            "per_class_accuracy": dict(zip(classes, per_class_accuracy(confusion).tolist())),
            "ece": calib.ece,
            "mean_confidence": float(confidence.double().mean()),
            "confidently_wrong": confidently_wrong,
            "confident_threshold": p.confident,
            "errors": int((~correct).sum()),
        }

        out = PLOTS / "evaluate" / name
        write_csv(pd.DataFrame({"actual": [classes[i] for i in actual], "predicted": [classes[i] for i in predicted]}),
                  out / "predictions.csv")  # for `dvc plots show` (confusion template)
        plot_confusion(confusion, classes, f"{name}: confusion matrix", out / "confusion.png")
        plot_reliability(calib.bin_edges, calib.bin_confidence, calib.bin_accuracy, calib.ece,
                         f"{name}: reliability", out / "reliability.png")
        hardest = hardest_errors(probabilities, actual, p.hardest)
        captions = [f"true {classes[actual[i]]}\npred {classes[predicted[i]]} ({confidence[i]:.3f})" for i in hardest]
        image_grid(images[hardest.to(device)].cpu(), captions, out / "hardest_errors.png",
                   f"{name}: the most confidently wrong test images")
        write_json(METRICS / "evaluate" / f"{name}.json", metrics)

        run.log_metrics({"test_accuracy": metrics["test_accuracy"], "ece": calib.ece,
                         "confidently_wrong": confidently_wrong})
        for figure in ("confusion.png", "reliability.png", "hardest_errors.png"):
            run.log_artifact(out / figure)


if __name__ == "__main__":
    main(sys.argv[1])
