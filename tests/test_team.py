"""Working as a team: a shared MLflow tracking server backed by PostgreSQL, and a DVC remote.

Both run end to end in one tiny copy of the repository (see test_pipeline.py), cut down to the
stages that cover every kind of output: cached files and folders, uncached metrics, plots and
run records, and train-gan's `persist` outputs (the cached models/gan folder, the uncached
plots/gan/samples).
"""

import copy
import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from test_pipeline import ROOT, Workspace, copy_repository, tiny_params

SCRIPT = ROOT / "scripts" / "tracking_server.py"
KEPT_STAGES = ("download", "preprocess", "train-linear", "train-gan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tracking_server(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), command], env=env, capture_output=True, text=True,
                          timeout=300)


def postgres_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, or where Debian's packages put them."""
    on_path = shutil.which("pg_ctl")
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0, reverse=True)
    folders = ([Path(on_path).resolve().parent] if on_path else []) + debian
    return next((f for f in folders if (f / "initdb").is_file() and (f / "pg_ctl").is_file()), None)


def postgres_user_exists() -> bool:
    try:
        pwd.getpwnam("postgres")
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on loopback. Its URL names a database that does not exist yet:
    the tracking server's script creates it."""
    binaries = postgres_binaries()
    as_root = os.geteuid() == 0
    if binaries is None or (as_root and not postgres_user_exists()):
        reason = "PostgreSQL's server (initdb, pg_ctl and, as root, the postgres user) is not installed: apt-get install postgresql"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs it")
        pytest.skip(reason)
    as_postgres = ["runuser", "-u", "postgres", "--"] if as_root else []  # PostgreSQL refuses to run as root
    # Not under pytest's tmp_path: the postgres user cannot enter root's private folders.
    folder = Path(tempfile.mkdtemp(prefix="dlcourse-postgres-"))
    try:
        (folder / "password").write_text("s3cret\n")
        if as_root:
            shutil.chown(folder, "postgres")
            shutil.chown(folder / "password", "postgres")
        data, port = folder / "data", free_port()

        def pg(program: str, *args: str) -> None:
            result = subprocess.run([*as_postgres, str(binaries / program), *args], capture_output=True, text=True,
                                    timeout=120)
            assert result.returncode == 0, f"{program} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"

        pg("initdb", "-D", str(data), "-U", "mlflow", f"--pwfile={folder / 'password'}", "--auth=scram-sha-256",
           "--locale=C", "--encoding=UTF8", "--no-sync")
        pg("pg_ctl", "-D", str(data), "-l", str(folder / "server.log"), "-o", f"-h 127.0.0.1 -p {port} -k {folder}",
           "-w", "start")
        try:
            yield f"postgresql+psycopg2://mlflow:s3cret@127.0.0.1:{port}/mlflow"
        finally:
            pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder)


@dataclass
class Server:
    url: str
    artifacts: Path


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """The README's `scripts/tracking_server.py start`, against the throwaway PostgreSQL."""
    folder = tmp_path_factory.mktemp("tracking-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": postgres, "MLFLOW_SERVER_PORT": str(port),
           "MLFLOW_ARTIFACTS_DESTINATION": str(folder / "artifacts"), "MLFLOW_SERVER_DIR": str(folder / "state"),
           "MLFLOW_SERVER_WORKERS": "1",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # MLflow's GenAI job runner: a dozen idle processes
    started = tracking_server("start", env)
    assert started.returncode == 0, f"tracking_server.py start failed:\n{started.stdout}\n{started.stderr}"
    assert "created database 'mlflow'" in started.stdout and "s3cret" not in started.stdout
    try:
        yield Server(f"http://127.0.0.1:{port}", folder / "artifacts")
    finally:
        stopped = tracking_server("stop", env)
        assert stopped.returncode == 0, f"tracking_server.py stop failed:\n{stopped.stdout}\n{stopped.stderr}"
        assert tracking_server("status", env).returncode == 1  # nothing left running


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, mirror) -> Workspace:
    """A git repository where `dvc repro` has built the kept stages with the local MLflow store."""
    ws = Workspace(tmp_path_factory.mktemp("team"), mirror)
    copy_repository(ws.path)
    ws.edit_params(tiny_params)
    pipeline = yaml.safe_load((ws.path / "dvc.yaml").read_text())
    kept = {"stages": {name: pipeline["stages"][name] for name in KEPT_STAGES}}
    (ws.path / "dvc.yaml").write_text(yaml.safe_dump(kept, sort_keys=False))
    ws.run("git", "init", "-q")
    commit(ws, "tiny")
    assert ws.repro()
    return ws


def commit(ws: Workspace, message: str) -> None:
    ws.run("git", "add", "-A")
    ws.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


@pytest.mark.slow
def test_a_stage_logs_to_the_tracking_server(workspace, server, postgres, tmp_path):
    import mlflow
    import psycopg2
    from mlflow.tracking import MlflowClient

    stage = "train-linear@one_epoch"
    on_server = copy.copy(workspace)
    on_server.env = {**workspace.env, "MLFLOW_TRACKING_URI": server.url}
    assert on_server.repro("--force", "--single-item", stage) == [stage]

    record = json.loads((workspace.path / "tracking" / f"{stage}.json").read_text())
    assert record["tracking_uri"] == server.url
    run = MlflowClient(server.url).get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == stage
    assert run.data.tags["dvc.stage"] == stage
    assert run.data.tags["git.commit"] == workspace.run("git", "rev-parse", "HEAD").strip()
    params = yaml.safe_load((workspace.path / "params.yaml").read_text())["train_linear"]["one_epoch"]
    assert run.data.params["lr"] == str(params["lr"]) and run.data.params["iterations"] == str(params["iterations"])
    metrics = json.loads((workspace.path / "metrics/linear/one_epoch.json").read_text())
    assert run.data.metrics["test_accuracy"] == metrics["test_accuracy"]
    curve = pd.read_csv(workspace.path / "plots/linear/one_epoch.csv")
    history = MlflowClient(server.url).get_metric_history(run.info.run_id, "curve.test_accuracy")
    assert sorted((m.step, m.value) for m in history) == list(zip(curve["step"], curve["test_accuracy"]))

    # The artifact went through the server into its destination, and comes back through it.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = server.artifacts / run.info.experiment_id / run.info.run_id / "artifacts" / "one_epoch.pt"
    downloaded = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="one_epoch.pt",
                                                     dst_path=str(tmp_path), tracking_uri=server.url)
    weights = (workspace.path / "models/linear/one_epoch.pt").read_bytes()
    assert Path(downloaded).read_bytes() == stored.read_bytes() == weights

    with psycopg2.connect(postgres.replace("+psycopg2", "")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT name, status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cursor.fetchall() == [(stage, "FINISHED")]


@pytest.mark.slow
def test_a_wrong_password_is_a_clear_error(postgres, tmp_path):
    wrong = postgres.replace(":s3cret@", ":wrong@")
    result = tracking_server("start", {**os.environ, "MLFLOW_BACKEND_STORE_URI": wrong,
                                       "MLFLOW_SERVER_DIR": str(tmp_path / "state")})
    assert result.returncode == 1
    assert "cannot connect to PostgreSQL at 127.0.0.1:" in result.stderr
    assert 'password authentication failed for user "mlflow"' in result.stderr
    assert "wrong" not in result.stderr and not (tmp_path / "state").exists()


@pytest.mark.parametrize("uri, error", [
    (None, "no backend store: set MLFLOW_BACKEND_STORE_URI"),
    ("sqlite:///mlflow.db", "'sqlite:///mlflow.db' must be a PostgreSQL URL"),
    ("postgresql+psycopg2://mlflow:pw@127.0.0.1:{port}/mlflow", "cannot connect to PostgreSQL at 127.0.0.1:{port} as 'mlflow'"),
])
def test_bad_backend_store_is_a_clear_error(uri, error, tmp_path):
    port = free_port()  # nothing listens there
    env = {**os.environ, "MLFLOW_SERVER_DIR": str(tmp_path / "state")}
    env.pop("MLFLOW_BACKEND_STORE_URI", None)
    if uri:
        env["MLFLOW_BACKEND_STORE_URI"] = uri.format(port=port)
    result = tracking_server("start", env)
    assert result.returncode == 1 and error.format(port=port) in result.stderr, result.stderr
    assert not (tmp_path / "state").exists()


def test_stop_and_status_without_a_server(tmp_path):
    env = {**os.environ, "MLFLOW_SERVER_DIR": str(tmp_path / "state")}
    stopped = tracking_server("stop", env)
    assert stopped.returncode == 0 and "no tracking server" in stopped.stdout
    status = tracking_server("status", env)
    assert status.returncode == 1 and "no tracking server" in status.stderr


def outputs(lock_path: Path) -> list[str]:
    """Every output of every stage that dvc.lock records: cached or not, files or folders."""
    lock = yaml.safe_load(lock_path.read_text())
    return [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]


def digest(path: Path) -> str | dict[str, str]:
    """The sha256 of a file, or of each file in a folder by its relative path."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return {str(file.relative_to(path)): digest(file) for file in sorted(path.rglob("*")) if file.is_file()}


@pytest.mark.slow
def test_a_clone_pulls_every_output_from_the_remote(workspace, mirror, tmp_path):
    workspace.repro()  # brings back up to date whatever an earlier test reran
    workspace.run("dvc", "remote", "add", "--default", "storage", str(tmp_path / "remote"))
    workspace.run("dvc", "push")
    commit(workspace, "results")

    clone = Workspace(tmp_path / "clone", mirror)
    workspace.run("git", "clone", "-q", str(workspace.path), str(clone.path))
    clone.run("dvc", "pull")

    outs = outputs(workspace.path / "dvc.lock")
    assert {"data/prepared/mnist", "models/linear/one_epoch.pt", "models/gan", "plots/gan/samples",
            "metrics/linear/one_epoch.json", "tracking/train-gan.json"} <= set(outs)
    for out in outs:
        assert (clone.path / out).exists(), f"{out} is missing from the clone after dvc pull"
        assert digest(clone.path / out) == digest(workspace.path / out), f"{out} differs in the clone"
    assert "Data and pipelines are up to date." in clone.run("dvc", "status")
