"""End to end: the tiny workspace's `dvc repro` (built once per test run, see conftest.py), what it
wrote, what it logged, and that a forced rerun of a stage writes the same bytes."""

import json

import pytest
import yaml

pytestmark = pytest.mark.slow

CLAIM_IDS = ["mnist-size", "linear-init", "linear-one-epoch", "linear-plateau", "cnn-mnist", "cnn-slower",
             "cifar10-50", "hard-errors", "slight-corruption", "fooling", "robust-training", "gan-digits",
             "gan-progress", "gan-slides"]
GAN_ENTRIES = ["conditional", "gan-2014", "dcgan-2015", "cogan-2016", "wgan-gp-2017", "progan-2017", "sngan-2018",
               "stylegan-2019"]


def test_repro_runs_every_stage_once(built):
    stages = list(yaml.safe_load((built.path / "dvc.lock").read_text())["stages"])
    assert sorted(built.first_run) == sorted(stages) and len(set(built.first_run)) == len(built.first_run)
    assert built.first_run[:3] == ["check-params", "download", "preprocess"] and built.first_run[-1] == "report"
    assert {"train-linear@one_epoch", "train-linear@long", "evaluate@cnn/mnist", "train-gan@stylegan-2019"} <= set(stages)


def test_outputs_and_claims(built):
    claims = json.loads((built.path / "reports/claims.json").read_text())
    assert list(claims) == CLAIM_IDS
    for claim in claims.values():
        assert set(claim) >= {"claim", "course", "measured", "holds", "values"} and isinstance(claim["holds"], bool)
    size = claims["mnist-size"]
    assert size["values"] == {"train": 600, "test": 200} and size["holds"] is False  # tiny data: honestly false
    report = (built.path / "reports/report.md").read_text()
    assert "mnist-size" in report and "figures/linear_curves.png" in report
    assert (built.path / "reports/figures/linear_curves.png").stat().st_size > 1000
    for entry in GAN_ENTRIES:
        assert sorted(p.name for p in (built.path / "models/gan" / entry).iterdir()) == ["epoch_01.pt", "epoch_02.pt"]
        assert f"../plots/gan/{entry}/samples/epoch_02.png" in report
        assert (built.path / f"metrics/timing/train-gan@{entry}.json").exists()
        assert (built.path / f"metrics/timing/score-gan@{entry}.json").exists()
    assert "figures/gan_timeline.png" in report and "figures/gan_frechet_curves.png" in report
    progress = claims["gan-progress"]["values"]
    assert [row["year"] for row in progress["eras"]] == [2014, 2015, 2016, 2017, 2017, 2018, 2019] and progress["same_budget"]
    assert "../plots/fooling/cifar10/evolution.png" in report
    assert "../plots/fooling/mnist/cppn.png" in report and "PNG bytes per image" in report
    cifar = claims["cifar10-50"]
    assert set(cifar["values"]) == {"cifar10-linear", "cifar10-mlp", "cifar10-cnn", "cifar10-airnet"}
    for model in ("linear/one_epoch", "cnn/mnist", "cnn/cifar10-airnet"):
        for figure in ("confusion.png", "reliability.png", "hardest_errors.png", "predictions.csv"):
            assert (built.path / "plots/evaluate" / model / figure).stat().st_size > 100
        assert f"../plots/evaluate/{model}/hardest_errors.png" in report


def test_mlflow_holds_one_finished_run_per_stage(built):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{built.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dl-course")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["dvc.stage"] for r in runs) == sorted(set(built.first_run) - {"check-params"})
    commit = built.run("git", "rev-parse", "HEAD~1").strip()  # the commit the pipeline ran at
    for run in runs:
        stage = run.data.tags["dvc.stage"]
        record_path = "reports/run.json" if stage == "report" else f"tracking/{stage}.json"
        record = json.loads((built.path / record_path).read_text())
        assert record["run_id"] == run.info.run_id, stage
        assert run.info.status == "FINISHED" and run.data.tags["git.commit"] == commit
    linear = next(r for r in runs if r.data.tags["dvc.stage"] == "train-linear@one_epoch")
    assert linear.data.params["train_linear.one_epoch.lr"] == "0.001"
    metrics = json.loads((built.path / "metrics/linear/one_epoch.json").read_text())
    assert linear.data.metrics["test_accuracy"] == metrics["test_accuracy"]
    history = client.get_metric_history(linear.info.run_id, "curve.test_accuracy")
    assert sorted(m.step for m in history) == [0, 5, 10]


def test_mlflow_opens_on_the_runs_and_each_run_names_the_datasets_it_read(built):
    """MLflow 3's UI opens an experiment of this kind on its runs, not on its GenAI overview; each
    run's Dataset column names the prepared split and its digest, the file's md5."""
    import hashlib

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{built.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dl-course")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    md5 = {f"{d}/{s}": hashlib.md5((built.path / f"data/prepared/{d}/{s}.pt").read_bytes()).hexdigest()
           for d in ("mnist", "cifar10") for s in ("train", "test")}
    read = {run.data.tags["dvc.stage"]: sorted((i.dataset.name, i.dataset.digest, i.tags[0].value)
                                               for i in run.inputs.dataset_inputs)
            for run in client.search_runs([experiment.experiment_id])}
    assert read["train-cnn@cifar10-cnn"] == [("cifar10/test", md5["cifar10/test"], "evaluation"),
                                             ("cifar10/train", md5["cifar10/train"], "training")]
    assert read["evaluate@linear/one_epoch"] == [("mnist/test", md5["mnist/test"], "evaluation")]
    assert [name for name, _, _ in read["train-gan@dcgan-2015"]] == ["mnist/train"]
    reading = [stage for stage in read if stage.split("@")[0] in
               {"train-linear", "train-cnn", "train-gan", "evaluate", "attack", "score-gan"}]
    p = yaml.safe_load((built.path / "params.yaml").read_text())
    expected = sum(len(p[section]) for section in ("train_linear", "train_cnn")) + 2 * len(p["train_gan"]) + sum(
        len(p[section]["models"]) for section in ("evaluate", "attack"))  # train-gan and score-gan: one each
    assert len(reading) == expected == 37 and all(read[stage] for stage in reading)


def test_a_second_repro_runs_nothing(workspace):
    assert workspace.out_of_date() == []
    assert workspace.repro() == []


def cached_outputs(lock: dict) -> dict[str, str]:
    """Every output's md5 in dvc.lock but the run records, the timings and the report, which shows
    the MLflow run ids of the stages (new ones after a forced rerun, by design)."""
    shown_run_ids = ("tracking/", "metrics/timing/", "reports/")  # the report shows timings and run ids
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])
            + stage.get("metrics", []) + stage.get("plots", []) if not out["path"].startswith(shown_run_ids)}


# One entry of every stage script, and the CNN whose code path is its own (whitening, airbench's batch
# norm, look-ahead, translated test-time views; bf16 off in the tiny workspace). The GAN eras differ in
# their training loops, whose bit-for-bit determinism test_gan_eras checks era by era in-process; the
# StyleGAN era here (per-pixel noise, moving average) writes its outputs as every era does.
FORCED = ["download", "preprocess", "train-linear@one_epoch", "train-cnn@mnist", "train-cnn@cifar10-airnet",
          "evaluate@cnn/mnist", "attack@cnn/mnist", "fooling@mnist", "train-gan@stylegan-2019",
          "score-gan@stylegan-2019"]


def test_forced_reruns_write_the_same_bytes(workspace):
    """CPU, same machine: every output is a function of the declared inputs, wall times kept out of them.
    A forced rerun of each stage in FORCED, alone, rewrites its outputs byte for byte."""
    before = cached_outputs(yaml.safe_load((workspace.path / "dvc.lock").read_text()))
    assert set(FORCED) <= set(workspace.first_run)
    assert sorted(workspace.repro("--force", "--single-item", *FORCED)) == sorted(FORCED)
    after = cached_outputs(yaml.safe_load((workspace.path / "dvc.lock").read_text()))
    changed = sorted(path for path in before if after.get(path) != before[path])
    assert changed == [] and len(before) > 60


def test_each_run_logs_exactly_the_params_dvc_yaml_declares_for_its_stage(built, monkeypatch):
    from mlflow.tracking import MlflowClient

    from dlcourse.pipeline import dvc_params, params

    monkeypatch.chdir(built.path)  # DVC's view of the built workspace's dvc.yaml
    values = params.load(built.path / "params.yaml")
    client = MlflowClient(f"sqlite:///{built.path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("dl-course").experiment_id])
    assert len(runs) == len(built.first_run) - 1  # check-params logs no run
    for run in runs:
        stage = run.data.tags["dvc.stage"]
        declared = {key: str(value) for key, value in dvc_params.declared_params(stage, values).items()}
        if stage.startswith(("train-cnn@", "train-gan@")):  # how many processes trained it (README: several processes)
            declared["world_size"] = "1"
        assert run.data.params == declared, stage
    by_stage = {run.data.tags["dvc.stage"]: run.data.params for run in runs}
    assert set(by_stage["attack@cnn/mnist"]) >= {"seed", "device", "attack.models.cnn/mnist.eps", "attack.subset"}
    assert set(by_stage["score-gan@conditional"]) >= {"train_gan.conditional.width", "score_gan.samples", "device"}
    assert by_stage["preprocess"] == {} and "seed" not in by_stage["report"]
