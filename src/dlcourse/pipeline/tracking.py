"""One MLflow run per stage run, opened the same way by every stage.

The store is `mlflow.db` (SQLite) at the repository root unless MLFLOW_TRACKING_URI says
otherwise (`store`). The run id goes to `tracking/<stage>.json`, a small output of its own, so that
no output whose bytes must be reproducible carries it.

A stage stopped by SIGTERM or SIGINT ends its run as KILLED (`signals`). One killed outright (SIGKILL,
a crash) leaves its run RUNNING: the next run of the same stage marks it KILLED, once its process,
recorded in the tags `process.pid` and `process.host`, is gone.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..files import read_json, write_json
from .dvc_params import flatten
from .git import git_tags
from .process import alive, cpu_description, freeze_objects, process_start_time
from .signals import StageKilled, killed_on_signals
from .store import (check_reachable, check_tracking_uri, locked_store_explained, project_root, recorded_tracking_uri,
                    refused_explained, store_lock, tracking_uri, with_sqlite_wait)
from .versions import environment_versions

EXPERIMENT = "dl-course"
# MLflow 3's UI opens an experiment on its GenAI overview (traces) unless told its kind: this one
# holds trained models, so it opens on its runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
TRACKING_DIR = Path("tracking")


class StageRun:
    """What a stage logs: params, metrics, curves (step metrics) and artifacts."""

    def __init__(self, mlflow_module, run, stage: str):
        self._mlflow = mlflow_module
        self.run = run
        self.run_id = run.info.run_id
        self.stage = stage

    def log_params(self, params: dict) -> None:
        self._mlflow.log_params(flatten(params))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        numbers = {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._mlflow.log_metrics(numbers, step=step)

    def log_curve(self, name: str, steps, values) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, float(v), now, int(s)) for s, v in zip(steps, values)]
        client = self._mlflow.tracking.MlflowClient()
        for start in range(0, len(metrics), 1000):
            client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=folder)

    def log_text(self, text: str, name: str) -> None:
        """`text` as the run's artifact `name`, written by MLflow (no file of the stage's own)."""
        self._mlflow.log_text(text, name)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._mlflow.set_tags(tags)

    def log_dataset(self, path: str | Path, context: str) -> None:
        """The prepared split the stage read (`data/prepared/mnist/train.pt`), as MLflow's Dataset
        column shows it: its name (`mnist/train`) and its digest, the file's md5 (DVC's own hash of
        a file); `context` is `training` or `evaluation`."""
        import hashlib

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        path = Path(path).resolve()
        with path.open("rb") as file:
            digest = hashlib.file_digest(file, "md5").hexdigest()
        with warnings.catch_warnings():  # MLflow registers its local-file source twice, and says so
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(path))
        dataset = MetaDataset(source, name=f"{path.parent.name}/{path.stem}", digest=digest)
        self._mlflow.log_input(dataset, context=context)


def end_dead_runs(client, experiment_id: str, stage: str) -> None:
    """Mark KILLED the runs of `stage` left RUNNING by a process of this host that is gone (SIGKILL,
    a crash): never the run of a live process, nor of another host."""
    host = socket.gethostname()
    running = client.search_runs([experiment_id], max_results=1000,
                                 filter_string=f"tags.`dvc.stage` = '{stage}' and attributes.status = 'RUNNING'")
    for run in running:
        pid, run_host = run.data.tags.get("process.pid", ""), run.data.tags.get("process.host")
        if run_host == host and pid.isdigit() and not alive(int(pid)):
            client.set_terminated(run.info.run_id, "KILLED")
            print(f"{stage}: MLflow run {run.info.run_id} was left RUNNING by process {pid}, which is gone; "
                  "marked it KILLED", file=sys.stderr)


def dvc_invocation() -> str | None:
    """The `dvc repro` (or `dvc exp run`) that runs this stage, the same for all the stages it runs,
    each a process of its own: the DVC process's start time, pid and host (`20261204T191500Z-4242@host`),
    found among this process's ancestors. None for a stage run by hand."""
    import psutil

    for process in psutil.Process().parents():
        try:
            command = process.cmdline()
            if "dvc" in {Path(part).name for part in command[:3]}:  # dvc, python .../dvc, python -m dvc
                started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(process.create_time()))
                return f"{started}-{process.pid}@{socket.gethostname()}"
        except psutil.Error:  # an ancestor gone or hidden: look further up
            continue
    return None


def open_experiment(mlflow, uri: str) -> tuple[str, object]:
    """The experiment the stages log to (MLFLOW_EXPERIMENT_NAME, default `dl-course`), created if it is
    not there yet, with its artifacts in `mlartifacts/` of a local store, and tagged as an experiment
    of trained models (`EXPERIMENT_KIND`): its name and the experiment."""
    experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    with store_lock(uri), refused_explained(uri, experiment_name), locked_store_explained(uri):
        if mlflow.get_experiment_by_name(experiment_name) is None:
            location = None if uri.startswith(("http://", "https://")) else (project_root() / "mlartifacts").as_uri()
            try:
                mlflow.create_experiment(experiment_name, artifact_location=location)
            except mlflow.exceptions.MlflowException as exc:
                if "401" in str(exc) or "403" in str(exc):
                    raise
                # else: created meanwhile by a stage logging to the same tracking server
        experiment = mlflow.set_experiment(experiment_name)
        if any(experiment.tags.get(tag) != kind for tag, kind in EXPERIMENT_KIND.items()):
            for tag, kind in EXPERIMENT_KIND.items():  # also an experiment created before, or by hand
                mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, tag, kind)
    return experiment_name, experiment


def run_tags(stage: str, cpu: str, tags: dict[str, str] | None = None) -> dict[str, str]:
    """A stage run's tags: `tags` (facts that are not params), the stage, its process, processor and
    commit, and what ran it: a DVC experiment, a `dvc repro` (`dvc.repro`, the same for all the stages it
    runs), a task of a Slurm sweep."""
    tags = {**(tags or {}), "dvc.stage": stage, "process.pid": str(os.getpid()), "process.host": socket.gethostname(),
            "process.cpu": cpu, **git_tags()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if (repro := dvc_invocation()) is not None:
        tags["dvc.repro"] = repro
    for variable in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        if os.environ.get(variable):
            tags[variable.lower().replace("_", ".", 1)] = os.environ[variable]
    return tags


@contextmanager
def stage_run(stage: str, params: dict, record: Path | None = None,
              tags: dict[str, str] | None = None) -> Iterator[StageRun]:
    """Open the MLflow run of one DVC stage (or matrix entry), log `params` (see `declared_params`)
    and `tags` (`run_tags`), and write its id to `record` (default `tracking/<stage>.json`) when it
    ends well, with the run's wall time (`seconds`), the process's start-up before it
    (`startup_seconds`), the processor they were measured on (`cpu`), the versions that made its bytes
    (`environment`, also the run's `env.*` tags; see `versions.environment_versions`) and the store,
    relative to the repository (`recorded_tracking_uri`): kept out of every cached output.

    SIGTERM or SIGINT while it is open ends the run as KILLED and exits with 128 + the signal number.
    """
    uri = tracking_uri()
    check_tracking_uri(uri)
    check_reachable(uri)
    freeze_objects()  # what the stage imported
    import mlflow  # imported here: slow, and only needed once the store is known to answer

    mlflow.set_tracking_uri(with_sqlite_wait(uri))
    experiment_name, experiment = open_experiment(mlflow, uri)
    with locked_store_explained(uri):
        end_dead_runs(mlflow.MlflowClient(), experiment.experiment_id, stage)
    cpu = cpu_description()
    with locked_store_explained(uri):
        tracked = StageRun(mlflow, mlflow.start_run(run_name=stage, tags=run_tags(stage, cpu, tags)), stage)
    freeze_objects()  # and MLflow's
    started = time.perf_counter()
    startup_seconds = time.time() - process_start_time()
    try:
        with killed_on_signals(), locked_store_explained(uri):  # the stage's own logging too
            tracked.log_params(params)
            yield tracked
    except StageKilled as killed:
        mlflow.end_run("KILLED")
        print(f"{stage}: stopped by {killed}; MLflow run {tracked.run_id} marked KILLED", file=sys.stderr)
        raise SystemExit(128 + killed.signum) from None
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    seconds = {"seconds": round(time.perf_counter() - started, 3), "startup_seconds": round(startup_seconds, 3)}
    tracked.log_metrics({f"stage.{name}": value for name, value in seconds.items()})
    versions = environment_versions(project_root())
    tracked.set_tags({f"env.{name}": str(value) for name, value in versions.items() if value is not None})
    mlflow.end_run("FINISHED")
    write_json(
        record or TRACKING_DIR / f"{stage}.json",
        {"stage": stage, "run_id": tracked.run_id, "experiment": experiment_name,
         "tracking_uri": recorded_tracking_uri(uri), **seconds, "cpu": cpu, "environment": versions},
    )


def read_run_record(stage: str) -> dict:
    """The run id and store of a stage's last successful run, from `tracking/<stage>.json`."""
    return read_json(TRACKING_DIR / f"{stage}.json")
