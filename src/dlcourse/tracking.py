"""One MLflow run per stage run, opened the same way by every stage.

The store is `mlflow.db` (SQLite) at the repository root unless MLFLOW_TRACKING_URI says
otherwise. The run id goes to `tracking/<stage>.json`, a small output of its own, so that
no output whose bytes must be reproducible carries it.

Several stages may log at once (`dvc queue start -j N` runs experiments side by side). SQLite
lets one writer in at a time and MLflow waits up to 20 s for its turn, which is plenty for the
few short writes of a stage. What is not safe is two processes creating the store at once: both
would run its schema migrations, and both fail. So a file lock beside the database makes the
first use of the store, and the creation of the experiment, one process at a time.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .files import write_json

EXPERIMENT = "dl-course"
TRACKING_DIR = Path("tracking")
STORE_LOCK_TIMEOUT_S = 120.0


class TrackingError(RuntimeError):
    pass


def project_root() -> Path:
    """The repository the stage runs for, also from inside `dvc exp run --queue`'s temporary copies,
    which live under `<repo>/.dvc/tmp/exps/`, so that all runs land in one store."""
    root = Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Held while a process opens a SQLite store (creating it if needed) and its experiment; a
    tracking server serialises its clients itself."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock, Timeout

    lock = FileLock(uri.removeprefix("sqlite:///") + ".lock")
    try:
        lock.acquire(timeout=STORE_LOCK_TIMEOUT_S)
    except Timeout:
        raise TrackingError(f"{lock.lock_file} stayed locked for {STORE_LOCK_TIMEOUT_S:g} s: another process "
                            f"is stuck opening the MLflow store {uri}") from None
    try:
        yield
    finally:
        lock.release()


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any compute, when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow tracking server {uri} answered {response.status} on /health")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({exc}); start it or unset MLFLOW_TRACKING_URI "
            "to use the local mlflow.db"
        ) from None


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str | None:
    """The checked-out commit, or None outside a git repository (or without git)."""
    return _git("rev-parse", "HEAD")


def _git_tags() -> dict[str, str]:
    commit = git_commit()
    if commit is None:
        return {}
    status = _git("status", "--porcelain", "--untracked-files=no") or ""
    changed = [line[3:] for line in status.splitlines() if line[3:] not in {"dvc.lock", "params.yaml"}]
    return {"git.commit": commit, "git.dirty": str(bool(changed)).lower()}


def flatten(params: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class StageRun:
    """What a stage logs: params, metrics, curves (step metrics) and artifacts."""

    def __init__(self, mlflow_module, run):
        self._mlflow = mlflow_module
        self.run = run
        self.run_id = run.info.run_id

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


@contextmanager
def stage_run(stage: str, params: dict) -> Iterator[StageRun]:
    """Open the MLflow run of one DVC stage (or matrix entry) and record its id when it ends well."""
    uri = tracking_uri()
    check_reachable(uri)
    import mlflow  # imported here: slow, and only needed once the store is known to answer

    mlflow.set_tracking_uri(uri)
    experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    with store_lock(uri):
        if mlflow.get_experiment_by_name(experiment_name) is None:
            location = None if uri.startswith(("http://", "https://")) else (project_root() / "mlartifacts").as_uri()
            try:
                mlflow.create_experiment(experiment_name, artifact_location=location)
            except mlflow.exceptions.MlflowException:
                pass  # created meanwhile by a stage logging to the same tracking server
        mlflow.set_experiment(experiment_name)

    tags = {"dvc.stage": stage, **_git_tags()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    with mlflow.start_run(run_name=stage, tags=tags) as run:
        tracked = StageRun(mlflow, run)
        tracked.log_params(params)
        yield tracked
    write_json(
        TRACKING_DIR / f"{stage}.json",
        {"stage": stage, "run_id": tracked.run_id, "experiment": experiment_name, "tracking_uri": uri},
    )


def read_run_record(stage: str) -> dict:
    """The run id and store of a stage's last successful run, from `tracking/<stage>.json`."""
    from .files import read_json

    return read_json(TRACKING_DIR / f"{stage}.json")
