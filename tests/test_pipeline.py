"""End to end: `dvc repro` in a temporary copy of the repository, on a tiny generated mirror."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def tiny_params(params: dict) -> dict:
    for run in params["train_linear"].values():
        run.update(iterations=30 if run["iterations"] > 1000 else 10, eval_every=5, init_trials=3, init_eval_size=100)
    for entry in params["train_cnn"].values():
        entry.update(epochs=1, batch_size=64)
    params["attack"].update(subset=40, pgd_steps=2, examples=4)
    for fooling in params["fooling"].values():
        fooling.update(gradient_steps_max=5, evolution_generations_max=3, evolution_population=4)
    params["train_gan"].update(epochs=2, width=8, grid_size=16, interpolation_steps=4, interpolation_rows=2)
    params["score_gan"].update(samples=200)
    params["download"].update(retries=0, backoff_s=0.0)
    return params


class Workspace:
    def __init__(self, path: Path, mirror: Path):
        self.path = path
        self.env = {**os.environ, "DATA_MIRROR": str(mirror),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        self.env.pop("MLFLOW_TRACKING_URI", None)

    def run(self, *args: str) -> str:
        result = subprocess.run(args, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def repro(self, *args: str) -> list[str]:
        """The stages that `dvc repro` ran."""
        return re.findall(r"Running stage '([^']+)'", self.run("dvc", "repro", *args))

    def edit_params(self, edit) -> None:
        path = self.path / "params.yaml"
        path.write_text(yaml.safe_dump(edit(yaml.safe_load(path.read_text())), sort_keys=False))

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def copy_repository(destination: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file() and not name.startswith(("dvc.lock", "metrics/", "plots/", "reports/", "tracking/")):
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def tiny_workspace(path: Path, mirror: Path, edit=tiny_params) -> Workspace:
    """A copy of the repository with tiny params (`edit`), committed to a fresh git repository."""
    copy_repository(path)
    ws = Workspace(path, mirror)
    ws.edit_params(edit)
    ws.run("git", "init", "-q")
    ws.commit("tiny")
    return ws


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, mirror) -> Workspace:
    ws = tiny_workspace(tmp_path_factory.mktemp("repo"), mirror)
    ws.first_run = ws.repro()
    return ws


def stage_names(ws: Workspace) -> list[str]:
    return [line.split()[0] for line in ws.run("dvc", "stage", "list").splitlines() if line.strip()]


def test_repro_runs_every_stage_once(workspace):
    assert sorted(workspace.first_run) == sorted(stage_names(workspace))
    assert {"download", "preprocess", "train-linear@one_epoch", "train-linear@long", "report"} <= set(workspace.first_run)


def test_outputs_and_claims(workspace):
    claims = yaml.safe_load((workspace.path / "reports/claims.json").read_text())
    ids = [c["id"] for c in claims]
    assert ids == ["mnist-size", "linear-init", "linear-one-epoch", "linear-plateau", "cnn-mnist", "cnn-slower",
                   "cifar10-50", "hard-errors", "slight-corruption", "fooling", "gan-digits"]
    for claim in claims:
        assert set(claim) >= {"id", "claim", "course", "measured", "holds"} and isinstance(claim["holds"], bool)
    size = next(c for c in claims if c["id"] == "mnist-size")
    assert size["values"] == {"train": 600, "test": 200} and size["holds"] is False  # tiny data: honestly false
    report = (workspace.path / "reports/report.md").read_text()
    assert "mnist-size" in report and "figures/linear_curves.png" in report
    assert (workspace.path / "reports/figures/linear_curves.png").stat().st_size > 1000
    assert (workspace.path / "models/linear/one_epoch.pt").exists()
    assert sorted(p.name for p in (workspace.path / "models/gan").iterdir()) == ["epoch_01.pt", "epoch_02.pt"]
    assert "../plots/gan/samples/epoch_02.png" in report and "../plots/fooling/cifar10/evolution.png" in report
    gan = next(c for c in claims if c["id"] == "gan-digits")
    assert set(gan["values"]["real_test"]) >= {"inception_score", "frechet_distance_half_vs_half"}
    cifar = next(c for c in claims if c["id"] == "cifar10-50")
    assert set(cifar["values"]) == {"cifar10-linear", "cifar10-mlp", "cifar10-cnn", "cifar10-airnet"}
    for model in ("linear/one_epoch", "cnn/mnist", "cnn/cifar10-airnet"):
        for figure in ("confusion.png", "reliability.png", "hardest_errors.png", "predictions.csv"):
            assert (workspace.path / "plots/evaluate" / model / figure).stat().st_size > 100
        assert f"../plots/evaluate/{model}/hardest_errors.png" in report


def test_mlflow_holds_one_run_per_stage(workspace):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workspace.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dl-course")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["dvc.stage"] for r in runs) == sorted(stage_names(workspace))
    for run in runs:
        record = yaml.safe_load((workspace.path / "tracking" / f"{run.data.tags['dvc.stage']}.json").read_text())
        assert record["run_id"] == run.info.run_id
        assert run.info.status == "FINISHED" and len(run.data.tags["git.commit"]) == 40
    linear = next(r for r in runs if r.data.tags["dvc.stage"] == "train-linear@one_epoch")
    assert linear.data.params["lr"] == "0.001" and "test_accuracy" in linear.data.metrics
    assert len(client.get_metric_history(linear.info.run_id, "curve.test_accuracy")) == 3  # steps 0, 5, 10


def test_second_repro_runs_nothing(workspace):
    assert workspace.repro() == []


@pytest.mark.parametrize("stage, outputs", [
    ("train-linear@one_epoch", ["models/linear/one_epoch.pt", "metrics/linear/one_epoch.json", "plots/linear/one_epoch.csv"]),
    # the CNN loop: BatchNorm, one-cycle schedule, channels-last, shuffled batches
    ("train-cnn@mnist", ["models/cnn/mnist.pt", "metrics/cnn/mnist.json", "plots/cnn/mnist.csv"]),
])
def test_training_is_byte_reproducible(workspace, stage, outputs):
    before = [(workspace.path / o).read_bytes() for o in outputs]
    assert workspace.repro("--force", "--single-item", stage) == [stage]
    assert [(workspace.path / o).read_bytes() for o in outputs] == before
    assert workspace.repro() == ["report"]  # only the wall time changed, and the report shows it


def test_param_edit_reruns_only_what_depends_on_it(workspace):
    def faster(params):
        params["train_linear"]["one_epoch"]["lr"] = 0.002
        return params

    workspace.edit_params(faster)
    status = workspace.run("dvc", "status")
    changed = re.findall(r"^(\S+):\s*$", status, flags=re.M)
    assert changed == ["train-linear@one_epoch"], status
    assert workspace.repro() == ["train-linear@one_epoch", "evaluate@linear/one_epoch", "attack@linear/one_epoch", "report"]
    assert workspace.repro() == []


def test_editing_one_cnn_entry_retrains_it_alone(workspace):
    def wider(params):
        params["train_cnn"]["cifar10-cnn"]["lr"] = 0.02
        return params

    workspace.edit_params(wider)
    # cifar10-cnn is also the second network of fooling@cifar10 (transfer)
    assert workspace.repro() == ["train-cnn@cifar10-cnn", "evaluate@cnn/cifar10-cnn", "fooling@cifar10", "report"]
