"""One MLflow run per stage run, opened the same way by every stage.

The store is `mlflow.db` (SQLite) at the repository root unless MLFLOW_TRACKING_URI says
otherwise. The run id goes to `tracking/<stage>.json`, a small output of its own, so that
no output whose bytes must be reproducible carries it.

Several stages may log at once (`dvc queue start -j N` runs experiments side by side). SQLite
lets one writer in at a time and MLflow waits up to 20 s for its turn, which is plenty for the
few short writes of a stage. What is not safe is two processes creating the store at once: both
would run its schema migrations, and both fail. So a file lock beside the database makes the
first use of the store, and the creation of the experiment, one process at a time.

A stage stopped by SIGTERM or SIGINT ends its run as KILLED. One killed outright (SIGKILL, a crash)
leaves its run RUNNING: the next run of the same stage marks it KILLED, once its process, recorded in
the tags `process.pid` and `process.host`, is gone.
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .files import write_json

if TYPE_CHECKING:
    from .params import Params

EXPERIMENT = "dl-course"
# MLflow 3's UI opens an experiment on its GenAI overview (traces) unless told its kind: this one
# holds trained models, so it opens on its runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
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


DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # as MLflow's SQLAlchemy store takes them
ACCEPTED_URIS = ("a local folder written as a path (./mlruns, /abs/mlruns) or file:///abs/mlruns",
                 "sqlite:///<file>.db", "postgresql://...", "mysql://...", "mssql://...",
                 "http(s)://<server>", "databricks")


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a SQLite URI (sqlite:///relative.db, sqlite:////abs.db); None in memory."""
    rest = uri.split("://", 1)[1].split("?", 1)[0] if "://" in uri else ""
    return Path(rest[1:]) if rest.startswith("/") and rest != "/" else None


def check_tracking_uri(uri: str) -> None:
    """Refuse a URI MLflow would not know, or a SQLite store whose folder is missing (creating the
    folder would hide a typo), before any compute."""
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    database = scheme.split("+")[0] in DATABASES  # postgresql+psycopg2://: a SQLAlchemy driver
    local_path = not scheme and "/" in uri  # a bare word is more likely a mistake than a folder
    databricks = scheme in {"databricks", "databricks-uc"} or uri in {"databricks", "databricks-uc"}
    if not (database or local_path or databricks or scheme in {"file", "http", "https"}):
        raise TrackingError(f"MLFLOW_TRACKING_URI={uri!r} is not a tracking URI MLflow knows; use "
                            + ", ".join(ACCEPTED_URIS) + ", or unset it to use the local mlflow.db")
    path = _sqlite_path(uri) if scheme.startswith("sqlite") else None
    if path is not None and not path.parent.is_dir():
        raise TrackingError(f"MLflow store {uri}: its folder {path.parent} does not exist; create it, "
                            "or unset MLFLOW_TRACKING_URI to use the local mlflow.db")


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Held while a process opens a SQLite store (creating it if needed) and its experiment; a
    tracking server serialises its clients itself."""
    path = _sqlite_path(uri) if uri.startswith("sqlite") else None
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=STORE_LOCK_TIMEOUT_S)
    except Timeout:
        raise TrackingError(f"{lock.lock_file} stayed locked for {STORE_LOCK_TIMEOUT_S:g} s: another process "
                            f"is stuck opening the MLflow store {uri}") from None
    try:
        yield
    finally:
        lock.release()


def health(uri: str, timeout_s: float = 5.0) -> str | None:
    """None when an MLflow server's /health answers 200 (open even with auth on); else why not."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            return None if response.status == 200 else f"answered {response.status} on /health"
    except (urllib.error.URLError, OSError) as exc:
        return f"is unreachable ({exc})"


def wait_until_healthy(uri: str, timeout_s: float, server=None, poll_s: float = 1.0) -> str | None:
    """Ask /health every `poll_s` until it answers 200; None, or why it never did (the `server`
    process, a Popen, exited, or `timeout_s` passed)."""
    deadline = time.monotonic() + timeout_s
    while (problem := health(uri, timeout_s=2.0)) is not None:
        if server is not None and server.poll() is not None:
            return f"exited with code {server.returncode}"
        if time.monotonic() > deadline:
            return f"did not answer on {uri.rstrip('/')}/health within {timeout_s:g} s ({problem})"
        time.sleep(poll_s)
    return None


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any compute, when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    problem = health(uri, timeout_s)
    if problem is not None:
        raise TrackingError(f"MLflow tracking server {uri} {problem}; start it or unset MLFLOW_TRACKING_URI "
                            "to use the local mlflow.db")


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


def declared_params(stage: str, all_params: Params) -> dict[str, object]:
    """Exactly the params.yaml keys that dvc.yaml declares for the stage (a `foreach` entry's, resolved
    by DVC), flattened with their values: what the stage's MLflow run logs."""
    values = all_params.model_dump()
    keys = declared_keys(stage, values)
    if keys is None:
        keys = dvc_declared_keys(stage)
    selected = {}
    for key in keys:
        value = values
        for part in key.split("."):
            value = value[part]
        selected.update(flatten({key: value}))
    return selected


def declared_keys(stage: str, values: dict, dvc_yaml: str | Path = "dvc.yaml") -> list[str] | None:
    """The params keys dvc.yaml declares for `stage`, as DVC resolves them, read from the file alone
    (opening DVC's Repo costs about 0.4 s of a stage's start-up). It knows two forms: a plain stage,
    and an entry of a `foreach` over a section of params.yaml (`values`) whose params name `${key}`;
    for any other it returns None, and `dvc_declared_keys` asks DVC. `tests/test_tracking.py` checks
    that both agree on every stage of the project's dvc.yaml."""
    from ruamel.yaml import YAML

    pipeline = YAML(typ="safe").load(Path(dvc_yaml))
    name, at, key = stage.partition("@")
    definition = (pipeline.get("stages") or {}).get(name)
    if "vars" in pipeline or not isinstance(definition, dict) or "matrix" in definition:
        return None
    if at:
        section = re.fullmatch(r"\$\{([\w.-]+)\}", str(definition.get("foreach")))
        if not section or not isinstance(definition.get("do"), dict):
            return None
        entries = values
        for part in section.group(1).split("."):
            entries = entries.get(part) if isinstance(entries, dict) else None
        if not isinstance(entries, dict) or key not in entries:
            return None
        definition = definition["do"]
    elif "foreach" in definition:
        return None
    declared = definition.get("params") or []
    if not all(isinstance(item, str) for item in declared):
        return None  # `- other.yaml: [...]`: keys of another file
    keys = [item.replace("${key}", key) for item in declared] if at else declared
    return None if any(mark in k for k in keys for mark in ("${", ":", ",")) else keys


def dvc_declared_keys(stage: str) -> list[str]:
    """The params keys of `stage` as DVC's own Repo resolves them from dvc.yaml."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo() as repo:
        [definition] = repo.stage.collect(stage)
    return [key for dep in definition.deps if isinstance(dep, ParamsDependency) for key in dep.params]


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


class StageKilled(BaseException):
    """SIGTERM or SIGINT, raised in the stage's code so that its run ends as KILLED."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def killed_on_signals() -> Iterator[None]:
    """While open, SIGTERM and SIGINT raise StageKilled; a second signal meets the previous handler."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    received = []

    def on_signal(signum, frame):
        restore()
        received.append(signum)
        raise StageKilled(signum)

    for signum in previous:
        signal.signal(signum, on_signal)
    try:
        yield
    finally:
        restore()
    if received:  # raised where Python swallows exceptions (a __del__, a weakref callback): the stage went on
        raise StageKilled(received[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def end_dead_runs(client, experiment_id: str, stage: str) -> None:
    """Mark KILLED the runs of `stage` left RUNNING by a process of this host that is gone (SIGKILL,
    a crash): never the run of a live process, nor of another host."""
    host = socket.gethostname()
    running = client.search_runs([experiment_id], max_results=1000,
                                 filter_string=f"tags.`dvc.stage` = '{stage}' and attributes.status = 'RUNNING'")
    for run in running:
        pid, run_host = run.data.tags.get("process.pid", ""), run.data.tags.get("process.host")
        if run_host == host and pid.isdigit() and not _alive(int(pid)):
            client.set_terminated(run.info.run_id, "KILLED")
            print(f"{stage}: MLflow run {run.info.run_id} was left RUNNING by process {pid}, which is gone; "
                  "marked it KILLED", file=sys.stderr)


@contextmanager
def refused_explained(uri: str, experiment_name: str) -> Iterator[None]:
    """A tracking server with authentication that refuses the stage's user: say which variables set it."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if "401" in str(exc):
            raise TrackingError(f"MLflow tracking server {uri} asks for a user: set MLFLOW_TRACKING_USERNAME and "
                                "MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials), or check them") from None
        if "403" in str(exc):
            user = os.environ.get("MLFLOW_TRACKING_USERNAME", "this user")
            raise TrackingError(f"MLflow tracking server {uri} refuses {user} on the experiment {experiment_name}: "
                                "ask its admin for EDIT permission on it") from None
        raise


def process_start_time() -> float:
    """When this process started (seconds since the epoch): a stage's start-up, imports and the MLflow
    store's opening, is the time from then to its run's start. On Linux, its start in clock ticks
    since boot (/proc/self/stat) against the time since boot now: psutil adds the boot time instead,
    which /proc/stat gives in whole seconds, so its answer is early by up to 1 s."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux
        import psutil

        return psutil.Process().create_time()


def cpu_description(cpuinfo: str | None = None, usable: int | None = None) -> str:
    """The processor a stage ran on and how many of its CPUs the process could use, e.g. "AMD EPYC
    (family 26, model 2), 2 CPUs": stage times are only comparable on the same one. From
    /proc/cpuinfo on Linux (the first processor's model name, family and model), else `platform`."""
    import platform

    if usable is None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown processor"
    if fields.get("cpu family") and fields.get("model"):
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return f"{name}, {usable} CPU{'s' if usable != 1 else ''}"


def freeze_objects() -> None:
    """Take every object made so far out of Python's garbage collections for good (gc.freeze), now
    and, once registered, again at exit. The modules that torch, pandas, matplotlib, MLflow and
    SQLAlchemy load are half a million objects, which each full collection walks again: 0.2-0.5 s
    of a stage's start-up and model logging on this project's 2-core CPU, and about 1.3 s at exit,
    where Python tears them all down. They live as long as the process anyway and the OS frees its
    memory; what is lost is the collection of garbage cycles among them, and the destructors that
    the collections at exit would call, which Python does not promise to call. atexit handlers
    still run, and stdout and stderr are still flushed."""
    gc.freeze()
    _freeze_at_exit()


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


@functools.cache
def _freeze_at_exit() -> None:
    atexit.register(gc.freeze)


@contextmanager
def stage_run(stage: str, params: dict, record: Path | None = None,
              tags: dict[str, str] | None = None) -> Iterator[StageRun]:
    """Open the MLflow run of one DVC stage (or matrix entry), log `params` (see `declared_params`)
    and `tags` (facts that are not params), and write its id to `record` (default
    `tracking/<stage>.json`) when it ends well, with the run's wall time (`seconds`), the
    process's start-up before it (`startup_seconds`) and the processor they were measured on (`cpu`):
    kept out of every cached output.

    SIGTERM or SIGINT while it is open ends the run as KILLED and exits with 128 + the signal number.
    """
    uri = tracking_uri()
    check_tracking_uri(uri)
    check_reachable(uri)
    freeze_objects()  # what the stage imported
    import mlflow  # imported here: slow, and only needed once the store is known to answer

    mlflow.set_tracking_uri(uri)
    experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    with store_lock(uri), refused_explained(uri, experiment_name):
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
    end_dead_runs(mlflow.MlflowClient(), experiment.experiment_id, stage)

    cpu = cpu_description()
    tags = {**(tags or {}), "dvc.stage": stage, "process.pid": str(os.getpid()), "process.host": socket.gethostname(),
            "process.cpu": cpu, **_git_tags()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if (repro := dvc_invocation()) is not None:
        tags["dvc.repro"] = repro
    for variable in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):  # a task of a Slurm sweep
        if os.environ.get(variable):
            tags[variable.lower().replace("_", ".", 1)] = os.environ[variable]
    tracked = StageRun(mlflow, mlflow.start_run(run_name=stage, tags=tags), stage)
    freeze_objects()  # and MLflow's
    started = time.perf_counter()
    startup_seconds = time.time() - process_start_time()
    try:
        with killed_on_signals():
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
    mlflow.end_run("FINISHED")
    write_json(
        record or TRACKING_DIR / f"{stage}.json",
        {"stage": stage, "run_id": tracked.run_id, "experiment": experiment_name, "tracking_uri": uri, **seconds,
         "cpu": cpu},
    )


def read_run_record(stage: str) -> dict:
    """The run id and store of a stage's last successful run, from `tracking/<stage>.json`."""
    from .files import read_json

    return read_json(TRACKING_DIR / f"{stage}.json")
