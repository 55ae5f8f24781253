"""The report's word in the Model Registry: each classifier's registered version tagged with the
claims it supports, and the alias `champion` on the best classifier of each dataset."""

from __future__ import annotations

import sys

from ..pipeline.registry import CHAMPION, classifier_stage, registered_name, version_of_run
from ..pipeline.tracking import TRACKING_DIR, read_run_record


def best_by_dataset(classifiers: dict[str, dict]) -> dict[str, str]:
    """The classifier with the highest test accuracy of each dataset (ties: the first name)."""
    best: dict[str, str] = {}
    for model in sorted(classifiers):
        m = classifiers[model]
        if m["dataset"] not in best or m["test_accuracy"] > classifiers[best[m["dataset"]]]["test_accuracy"]:
            best[m["dataset"]] = model
    return best


def trained_classifiers(results) -> dict[str, dict]:
    """Every classifier the train stages wrote metrics for (a `claims.Results`), by model name
    (`linear/one_epoch`, `cnn/mnist`): {"dataset", "test_accuracy"}."""
    found = {f"linear/{name}": {"dataset": "mnist", "test_accuracy": m["test_accuracy"]}
             for name, m in results.per_model("linear").items()}
    found.update({f"cnn/{name}": {"dataset": m["dataset"], "test_accuracy": m["test_accuracy"]}
                  for name, m in results.per_model("cnn").items()})
    return found


def promote(results, supported: dict[str, list[str]]) -> dict[str, str]:
    """Tag the registered version that each classifier's last run (`tracking/<stage>.json`) logged
    with the claims it supports (`claims.supported_claims`), and move the alias `champion` to the
    classifier of each dataset with the best test accuracy (off the other classifiers of that
    dataset). {dataset: "name@champion"}."""
    import mlflow

    classifiers = trained_classifiers(results)
    client = mlflow.MlflowClient()
    versions = {}
    for model in sorted(classifiers):
        stage = classifier_stage(model)
        run_id = read_run_record(stage)["run_id"] if (TRACKING_DIR / f"{stage}.json").exists() else None
        version = version_of_run(client, stage, run_id) if run_id else None
        if version is None:
            print(f"report: no registered version of {registered_name(stage)} from the last run of {stage} "
                  f"in {mlflow.get_tracking_uri()}; `dvc repro --force {stage}` registers one", file=sys.stderr)
            continue
        versions[model] = version
        claims = supported.get(model, [])
        for key, value in {"claims": ", ".join(claims) or "none", **{f"claim.{c}": "holds" for c in claims}}.items():
            client.set_model_version_tag(version.name, version.version, key, value)
    champions = {}
    for dataset, best in best_by_dataset(classifiers).items():
        for model in sorted(m for m in versions if classifiers[m]["dataset"] == dataset and m != best):
            if CHAMPION in client.get_registered_model(versions[model].name).aliases:
                client.delete_registered_model_alias(versions[model].name, CHAMPION)
        if best in versions:
            client.set_registered_model_alias(versions[best].name, CHAMPION, versions[best].version)
            champions[dataset] = f"{versions[best].name}@{CHAMPION}"
    return champions
