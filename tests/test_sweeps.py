"""Sweeps: experiments queued with `dvc exp run --queue` and run side by side, all logged to one
MLflow store, none lost."""

import json
import multiprocessing
import os
import re
import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient

from dlcourse.pipeline import store, tracking

WRITERS = 6
SWEPT = "train-linear@one_epoch"
# None of them is the baseline's (0.001, 60): an experiment with nothing to rerun would log no MLflow run.
GRID = {(lr, batch_size) for lr in (0.002, 0.003) for batch_size in (40,)}  # 2 side by side (-j 2)
SWEEP_TIMEOUT_S = 600


def log_one_run(workdir: str, root: str, index: int) -> None:
    """One stage run, as a stage process logs it (in a forked child: nothing to import again)."""
    os.chdir(workdir)
    os.environ.update(DVC_ROOT=root, DVC_EXP_NAME=f"exp-{index}")
    with tracking.stage_run(f"train-linear@run{index}", {"lr": index / 10, "batch_size": 60}) as run:
        for step in range(5):
            run.log_metrics({"loss": 1 / (step + 1)}, step=step)
        run.log_curve("curve.test_accuracy", range(100), [index / 100] * 100)
        run.log_metrics({"test_accuracy": index / 100})


def test_processes_logging_at_once_into_a_new_sqlite_store_all_land(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    import mlflow  # noqa: F401  imported before forking, so that the writers start together

    context = multiprocessing.get_context("fork")
    writers = []
    for index in range(WRITERS):
        (tmp_path / f"w{index}").mkdir()
        writers.append(context.Process(target=log_one_run, args=(str(tmp_path / f"w{index}"), str(tmp_path), index)))
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=300)
    assert [writer.exitcode for writer in writers] == [0] * WRITERS

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id])
    logged = sorted((r.data.tags["dvc.exp_name"], r.data.params["lr"], r.data.metrics["test_accuracy"], r.info.status)
                    for r in runs)
    assert logged == [(f"exp-{i}", str(i / 10), i / 100, "FINISHED") for i in range(WRITERS)]
    for run in runs:
        assert len(client.get_metric_history(run.info.run_id, "curve.test_accuracy")) == 100


def test_a_store_locked_too_long_stops_the_stage_naming_the_lock(monkeypatch, tmp_path):
    from filelock import FileLock

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setattr(store, "STORE_LOCK_TIMEOUT_S", 0.5)
    with FileLock(tmp_path / "mlflow.db.lock"):  # another process opening the store, stuck
        with pytest.raises(store.TrackingError, match=r"mlflow\.db\.lock stayed locked for 0.5 s"):
            with tracking.stage_run("train-linear@x", {"lr": 0.1}):
                pytest.fail("the stage body must not run")
    assert not (tmp_path / "tracking").exists()


def queue_states(ws) -> list[str]:
    """The status column of `dvc queue status`, one entry per queued experiment."""
    return re.findall(r"\b(Queued|Running|Success|Failed)\b", ws.run("dvc", "queue", "status"))


def experiments(ws) -> dict[str, tuple[float, int]]:
    """Each experiment of `dvc exp show --json`, by name: the swept (lr, batch_size)."""
    shown = {}
    for baseline in json.loads(ws.run("dvc", "exp", "show", "--json")):
        for experiment in baseline.get("experiments") or []:
            run = experiment["revs"][0]["data"]["params"]["params.yaml"]["data"]["train_linear"]["one_epoch"]
            shown[experiment["name"]] = (run["lr"], run["batch_size"])
    return shown


def worker_logs(ws) -> str:
    """The last lines of what DVC's queue workers wrote, for a sweep that does not end."""
    logs = sorted((ws.path / ".dvc" / "tmp" / "exps").rglob("*.out"))
    return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                     for log in logs) or "(none)"


@pytest.mark.slow
@pytest.mark.system
def test_a_queued_sweep_lands_whole_in_dvc_and_mlflow(workspace):
    ws = workspace
    ws.run("git", "config", "user.name", "t")
    ws.run("git", "config", "user.email", "t@t")
    ws.run("dvc", "exp", "run", "--queue", SWEPT, "-S", "train_linear.one_epoch.lr=0.002,0.003",
           "-S", "train_linear.one_epoch.batch_size=40")
    assert queue_states(ws) == ["Queued"] * len(GRID)
    try:
        # The workers are forks of `dvc queue start` and keep its standard streams open until they
        # end: into a file, not a pipe, or the call would wait for the whole sweep, with no deadline of ours.
        with open(ws.path.parent / "queue-start.log", "w") as log:
            subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=ws.path, env=ws.env, check=True,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=120)
        deadline = time.monotonic() + SWEEP_TIMEOUT_S
        while {"Queued", "Running"} & set(states := queue_states(ws)):
            assert time.monotonic() < deadline, (f"the sweep is still {states} after {SWEEP_TIMEOUT_S} s; "
                                                 f"its workers' logs:\n{worker_logs(ws)}")
            time.sleep(1)
    finally:
        ws.run("dvc", "queue", "stop", "--kill", check=False)
    assert states == ["Success"] * len(GRID), ws.run("dvc", "queue", "status")

    shown = experiments(ws)
    assert sorted(shown.values()) == sorted(GRID)

    client = MlflowClient(f"sqlite:///{ws.path / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    runs = client.search_runs([experiment_id], f"tags.`dvc.stage` = '{SWEPT}'")
    swept = [run for run in runs if "dvc.exp_name" in run.data.tags]
    assert len(runs) == 1 + len(swept)  # the baseline's run, from the first repro, carries no experiment name
    logged = {run.data.tags["dvc.exp_name"]: (float(run.data.params["train_linear.one_epoch.lr"]),
                                              int(run.data.params["train_linear.one_epoch.batch_size"]))
              for run in swept}
    assert len(logged) == len(swept) and logged == shown
    assert {run.info.status for run in runs} == {"FINISHED"}
