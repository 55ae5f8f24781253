"""A sweep on a Slurm cluster (scripts/sweep_slurm.py), for real: the single-node cluster of
scripts/slurm_local.sh, a bare git repository and a local-folder DVC remote as the shared stores, the
PostgreSQL-backed MLflow server of test_team.py. A grid of 2 points runs as an array of 2 tasks, one of
which fails once; rerunning the failed tasks is one command; a fresh clone then sees the 2 experiments.
How several `-S` keys make a grid is DVC's own parser's work, checked without Slurm below."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from test_team import ADMIN, postgres, server  # noqa: F401  (fixtures)
from workspace import ROOT, Workspace

SWEEP = ROOT / "scripts" / "sweep_slurm.py"
STAGE = "train-cnn@mnist"
# Neither value is the baseline's (lr 0.1, momentum 0.9): an experiment with nothing to rerun logs no run.
GRID = {(lr, momentum) for lr in (0.05, 0.2) for momentum in (0.85,)}
FAILING_TASK = "1"
# `python`, as DVC runs the stage, for the tasks: task 1's first run of train-cnn has its data unreadable
# (a node's disk failing); every other command passes through to the workspace's `python`.
SHIM = """#!/bin/sh
if [ "$SLURM_ARRAY_TASK_ID" = {task} ] && [ "$1" = stages/train_cnn.py ] && [ ! -e {marker} ]; then
    touch {marker}
    exec {python} -c '
import runpy, sys
from dlcourse.course import data
def unreadable(*args, **kwargs):
    raise OSError("the node cannot read its data (a fault the test injects)")
data.load_split = unreadable
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")' "$@"
fi
exec {passthrough} "$@"
"""


@pytest.fixture(scope="module")
def slurm():
    if shutil.which("sbatch") is None or subprocess.run(["scontrol", "ping"], capture_output=True).returncode:
        if os.geteuid() != 0 and shutil.which("sudo") is None:
            (pytest.fail if os.environ.get("CI") else pytest.skip)(
                "no Slurm cluster, and scripts/slurm_local.sh needs root to start one")
        started = subprocess.run([str(ROOT / "scripts" / "slurm_local.sh")], capture_output=True, text=True,
                                 timeout=600)
        assert started.returncode == 0, f"slurm_local.sh failed:\n{started.stdout}\n{started.stderr}"


def wait_for(job_id: str, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, f"job {job_id} still queued or running after {timeout_s} s"
        time.sleep(2)


def sweep(ws: Workspace, *args: str) -> str:
    result = subprocess.run([sys.executable, str(SWEEP), *args], cwd=ws.path, env=ws.env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"sweep_slurm.py {args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def statuses(ws: Workspace, job_id: str) -> dict[str, str]:
    return dict(line.split("\t") for line in sweep(ws, "--status", job_id).splitlines())


def completion_log() -> list[str]:
    """`JobID|JobName|State` of every job in Slurm's job-completion log."""
    return subprocess.run(["sacct", "--completion", "-n", "-P", "-o", "JobID,JobName,State"], capture_output=True,
                          text=True).stdout.splitlines()


def test_the_grid_is_every_combination_of_the_swept_values():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_slurm", SWEEP)
    sweep_slurm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep_slurm)
    points = sweep_slurm.grid(["train_cnn.mnist.lr=0.05,0.2", "train_cnn.mnist.momentum=0.8,0.85", "seed=3"])
    assert sorted(map(sorted, points)) == sorted(
        sorted([f"train_cnn.mnist.lr={lr}", f"train_cnn.mnist.momentum={m}", "seed=3"])
        for lr in ("0.05", "0.2") for m in ("0.8", "0.85"))
    assert sweep_slurm.grid(["train_cnn.mnist.lr=0.05,0.2", "train_cnn.mnist.momentum=0.85"]) == [
        ["train_cnn.mnist.lr=0.05", "train_cnn.mnist.momentum=0.85"],
        ["train_cnn.mnist.lr=0.2", "train_cnn.mnist.momentum=0.85"]]


@pytest.mark.slow
@pytest.mark.system
def test_a_grid_runs_as_a_job_array_and_lands_in_git_dvc_and_mlflow(slurm, server, built, tmp_path):
    from mlflow.tracking import MlflowClient

    # The shared stores: a bare git repository and a DVC remote folder, holding the built workspace.
    ws = built.copy_to(tmp_path / "repo")
    ws.run("dvc", "remote", "add", "--default", "shared", str(tmp_path / "dvc-remote"))
    ws.run("dvc", "push", "--quiet")
    ws.commit("the shared DVC remote")
    ws.run("git", "clone", "--quiet", "--bare", str(ws.path), str(tmp_path / "origin.git"))

    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").write_text(SHIM.format(task=FAILING_TASK, marker=tmp_path / "fault-injected",
                                             python=sys.executable, passthrough=shutil.which("python", path=ws.env["PATH"])))
    (shim / "python").chmod(0o755)
    credentials = {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}
    ws.env = {**ws.env, **credentials, "MLFLOW_TRACKING_URI": server.url, "DLCOURSE_SWEEP_DIR": str(tmp_path / "sweeps"),
              "PATH": f"{shim}{os.pathsep}{ws.env['PATH']}"}

    accounted_before = {line.split("|")[0] for line in completion_log()}
    submitted = sweep(ws, "--remote", str(tmp_path / "origin.git"), "--name", "grid", STAGE,
                      "-S", "train_cnn.mnist.lr=0.05,0.2", "-S", "train_cnn.mnist.momentum=0.85")
    job = submitted.split()[-1]
    wait_for(job)
    states = statuses(ws, job)
    logs = {path.name: path.read_text() for path in (tmp_path / "sweeps" / "grid").glob("*.out")}
    assert states == {f"{job}_{t}": "FAILED" if str(t) == FAILING_TASK else "COMPLETED" for t in range(2)}, logs
    assert "the node cannot read its data" in logs[f"{job}_{FAILING_TASK}.out"]
    # Slurm's own accounting (here its job-completion log; `sacct` without -c on a cluster with slurmdbd).
    # The log keeps every job this machine ever ran: this sweep's are the ones it did not hold before.
    ours = [line.split("|", 1)[1] for line in completion_log() if line.split("|")[0] not in accounted_before]
    assert ours.count("grid|FAILED") == 1 and ours.count("grid|COMPLETED") >= 1, ours

    client = MlflowClient(server.url)
    for name, value in credentials.items():
        os.environ[name] = value  # for this test's client; restored below
    try:
        experiment = client.get_experiment_by_name("dl-course").experiment_id
        failed = client.search_runs([experiment], f"tags.`slurm.array_job_id` = '{job}' and attributes.status = 'FAILED'")
        assert [run.data.tags["slurm.array_task_id"] for run in failed] == [FAILING_TASK]
        assert failed[0].data.tags["dvc.stage"] == STAGE  # the stage's own run, ended FAILED

        rerun = sweep(ws, "--rerun-failed", job).split()[-1]
        wait_for(rerun)
        assert statuses(ws, rerun) == {f"{rerun}_{FAILING_TASK}": "COMPLETED"}
        assert "no failed task" in sweep(ws, "--rerun-failed", rerun)

        runs = [run for j in (job, rerun)
                for run in client.search_runs([experiment], f"tags.`slurm.array_job_id` = '{j}' and "
                                              f"tags.`dvc.stage` = '{STAGE}' and attributes.status = 'FINISHED'")]
    finally:
        for name in credentials:
            os.environ.pop(name, None)
    logged = {run.data.tags["dvc.exp_name"]: (float(run.data.params["train_cnn.mnist.lr"]),
                                              float(run.data.params["train_cnn.mnist.momentum"])) for run in runs}
    assert len(runs) == 2 and set(logged.values()) == GRID

    # A fresh clone of the shared remote sees the 2 experiments, with their own outputs.
    clone = Workspace(tmp_path / "clone", ws.mirror)
    clone.env = {**clone.env, **credentials}
    subprocess.run(["git", "clone", "--quiet", str(tmp_path / "origin.git"), str(clone.path)], check=True)
    clone.run("dvc", "exp", "pull", "origin", "--all-commits")
    shown = {}
    for baseline in json.loads(clone.run("dvc", "exp", "show", "--json")):
        for exp in baseline.get("experiments") or []:
            data = exp["revs"][0]["data"]
            entry = data["params"]["params.yaml"]["data"]["train_cnn"]["mnist"]
            model = next(out for out in data["outs"].items() if out[0].endswith("models/cnn/mnist.pt"))[1]
            shown[exp["name"]] = ((entry["lr"], entry["momentum"]), model["hash"])
    assert {name: grid_point for name, (grid_point, _) in shown.items()} == logged
    models = {model_hash for _, model_hash in shown.values()}
    assert len(models) == 2  # neither overwrote the other
    for model_hash in models:  # pulled: in the clone's cache
        assert (clone.path / ".dvc/cache/files/md5" / model_hash[:2] / model_hash[2:]).exists()
