"""Working as a team: a shared MLflow tracking server backed by PostgreSQL, and a DVC remote.

Both run end to end in a copy of the tiny workspace (see conftest.py), whose outputs cover every
kind: cached files and folders, uncached metrics, plots and run records, and train-gan's `persist`
outputs (the cached models/gan folder, the uncached plots/gan/samples).
"""

import copy
import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import requests
import torch
import yaml
from sqlalchemy.engine import make_url

from dlcourse.pipeline import registry
from dlcourse.course.models import load_classifier
from workspace import ROOT, Workspace, free_port

SCRIPT = ROOT / "scripts" / "tracking_server.py"
ADMIN = ("admin", "admin-password-0123")  # MLflow wants 12 characters or more
# The server's lockout, small enough for a test to reach and to wait out: wrong passwords per window.
LOCKOUT_PER_USER, LOCKOUT_PER_ADDRESS, LOCKOUT_WINDOW_S = 3, 8, 10


def tracking_server(command: str, env: dict[str, str], *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), command, *options], env=env, capture_output=True, text=True,
                          timeout=300)


def script_env(state: Path, **variables: str) -> dict[str, str]:
    """The environment of `tracking_server.py`, with none of the caller's MLflow settings."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    return {**env, "MLFLOW_SERVER_DIR": str(state), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], **variables}


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


# One worker for the module: its PostgreSQL and tracking server, module fixtures, then start once
# (tests of several modules interleaved on a worker would tear them down and start them again).
pytestmark = pytest.mark.xdist_group("tracking-server")


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on loopback. Its URL names a database that does not exist yet:
    the tracking server's script creates it."""
    binaries = postgres_binaries()
    as_root = os.geteuid() == 0
    if binaries is None or (as_root and not postgres_user_exists()):
        reason = ("PostgreSQL's server (initdb, pg_ctl and, as root, the postgres user) is not installed: "
                  "apt-get install postgresql")
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
    state: Path
    env: dict[str, str]  # tracking_server.py's


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """The README's `scripts/tracking_server.py start`, against the throwaway PostgreSQL, with basic auth:
    the admin's password in a file only its owner can read."""
    folder = tmp_path_factory.mktemp("tracking-server")
    (folder / "admin-password").write_text(ADMIN[1] + "\n")
    (folder / "admin-password").chmod(0o600)
    port = free_port()
    env = script_env(folder / "state", MLFLOW_BACKEND_STORE_URI=postgres, MLFLOW_SERVER_PORT=str(port),
                     MLFLOW_ARTIFACTS_DESTINATION=str(folder / "artifacts"), MLFLOW_SERVER_WORKERS="1",
                     MLFLOW_AUTH_ADMIN_PASSWORD_FILE=str(folder / "admin-password"),
                     MLFLOW_AUTH_LOCKOUT_PER_USER=f"{LOCKOUT_PER_USER} per {LOCKOUT_WINDOW_S} seconds",
                     MLFLOW_AUTH_LOCKOUT_PER_ADDRESS=f"{LOCKOUT_PER_ADDRESS} per {LOCKOUT_WINDOW_S} seconds",
                     MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # MLflow's GenAI job runner: a dozen idle processes
    del env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    started = tracking_server("start", env)
    assert started.returncode == 0, f"tracking_server.py start failed:\n{started.stdout}\n{started.stderr}"
    assert "created database 'mlflow'" in started.stdout and "s3cret" not in started.stdout
    try:
        yield Server(f"http://127.0.0.1:{port}", folder / "artifacts", folder / "state", env)
    finally:
        stopped = tracking_server("stop", env)
        assert stopped.returncode == 0, f"tracking_server.py stop failed:\n{stopped.stdout}\n{stopped.stderr}"
        assert tracking_server("status", env).returncode == 1  # nothing left running



@pytest.fixture(scope="module")
def workspace(built, tmp_path_factory) -> Workspace:
    """A copy of the built tiny workspace (see conftest.py), shared by this module's tests."""
    return built.copy_to(tmp_path_factory.mktemp("team") / "repo")


def commit(ws: Workspace, message: str) -> None:
    ws.run("git", "add", "-A")
    ws.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


@pytest.mark.slow
@pytest.mark.system
def test_a_stage_logs_to_the_tracking_server(workspace, server, postgres, tmp_path, monkeypatch):
    import mlflow
    import psycopg2
    from mlflow.tracking import MlflowClient

    stage = "train-linear@one_epoch"
    credentials = {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}
    on_server = copy.copy(workspace)
    on_server.env = {**workspace.env, "MLFLOW_TRACKING_URI": server.url, **credentials}
    for name, value in credentials.items():  # for this test's own MLflow client
        monkeypatch.setenv(name, value)
    assert on_server.repro("--force", "--single-item", stage) == [stage]

    record = json.loads((workspace.path / "tracking" / f"{stage}.json").read_text())
    assert record["tracking_uri"] == server.url
    run = MlflowClient(server.url).get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == stage
    assert run.data.tags["dvc.stage"] == stage
    assert run.data.tags["git.commit"] == workspace.run("git", "rev-parse", "HEAD").strip()
    params = yaml.safe_load((workspace.path / "params.yaml").read_text())["train_linear"]["one_epoch"]
    for name in ("lr", "iterations"):  # logged as declared in dvc.yaml: train_linear.one_epoch
        assert run.data.params[f"train_linear.one_epoch.{name}"] == str(params[name])
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

    # The MLflow model built from the same weights: registered on the server, loaded through it.
    version = registry.version_of_run(MlflowClient(server.url), stage, run.info.run_id)
    assert version is not None and version.name == "dl-course-linear-one_epoch"
    assert version.tags["dvc.output.md5"] == run.data.tags["dvc.output.md5"] == hashlib.md5(weights).hexdigest()
    images = torch.rand(3, 1, 28, 28)
    classifier, _ = load_classifier(workspace.path / "models/linear/one_epoch.pt")
    mlflow.set_tracking_uri(server.url)  # `models:/` URIs name the registry of the tracking server
    try:
        probabilities = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}").predict(images.numpy())
    finally:
        mlflow.set_tracking_uri(None)
    assert torch.allclose(torch.from_numpy(probabilities), torch.softmax(classifier(images), 1).detach(), atol=1e-5)

    with psycopg2.connect(postgres.replace("+psycopg2", "")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT name, status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cursor.fetchall() == [(stage, "FINISHED")]
        cursor.execute("SELECT name, run_id FROM model_versions WHERE run_id = %s", (run.info.run_id,))
        assert cursor.fetchall() == [(version.name, run.info.run_id)]


def api(server: Server, method: str, path: str, auth: tuple[str, str] | None, session=requests, **body) -> requests.Response:
    """One call of MLflow's REST API (GET: body as the query) as the user `auth`, or anonymously."""
    url = f"{server.url}/api/{path if path[0].isdigit() else '2.0/mlflow/' + path}"
    query = {"params": body} if method == "GET" else {"json": body}
    return session.request(method, url, auth=auth, timeout=60, **query)


class FromAddress(requests.adapters.HTTPAdapter):
    """Connections from another address of the loopback range (127.0.0.0/8), a client of its own to the server."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, source_address=(self.address, 0), **kwargs)


def session_from(address: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", FromAddress(address))
    return session


@pytest.mark.slow
@pytest.mark.system
def test_the_api_needs_a_password(server):
    from dlcourse.pipeline.store import check_reachable

    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200  # open, for load balancers
    check_reachable(server.url)  # what every stage polls, without credentials, before any compute
    assert api(server, "POST", "experiments/search", None, max_results=1).status_code == 401
    assert api(server, "POST", "experiments/search", (ADMIN[0], "not-the-password"), max_results=1).status_code == 401
    assert requests.get(f"{server.url}/api/2.0/mlflow-artifacts/artifacts", timeout=10).status_code == 401
    assert api(server, "POST", "experiments/search", ADMIN, max_results=1).status_code == 200


@pytest.mark.system
def test_a_stage_without_credentials_is_told_which_variables_to_set(server, monkeypatch, tmp_path):
    from dlcourse.pipeline import store, tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(store.TrackingError, match="set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"):
        with tracking.stage_run("train-linear@x", {"lr": 0.1}):
            pytest.fail("the stage body must not run")
    assert not (tmp_path / "tracking").exists()


@pytest.mark.slow
@pytest.mark.system
def test_a_user_without_permission_cannot_write(server):
    reader = ("reader", "reader-password-0123")
    assert api(server, "POST", "users/create", ADMIN, username=reader[0], password=reader[1]).status_code == 200
    experiment = api(server, "POST", "experiments/create", ADMIN, name="permissions").json()["experiment_id"]
    granted = api(server, "POST", "3.0/mlflow/users/permissions/grant", ADMIN, username=reader[0],
                  resource_type="experiment", resource_id=experiment, permission="READ")
    assert granted.status_code == 200, granted.text

    assert api(server, "GET", "experiments/get", reader, experiment_id=experiment).status_code == 200
    assert api(server, "POST", "runs/create", reader, experiment_id=experiment).status_code == 403
    run = api(server, "POST", "runs/create", ADMIN, experiment_id=experiment)
    assert run.status_code == 200
    run_id = run.json()["run"]["info"]["run_id"]
    assert api(server, "POST", "runs/log-parameter", reader, run_id=run_id, key="lr", value="1").status_code == 403
    assert api(server, "POST", "runs/log-parameter", ADMIN, run_id=run_id, key="lr", value="2").status_code == 200
    artifact = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run_id}/artifacts/note.txt"
    assert requests.put(artifact, data=b"reader", auth=reader, timeout=60).status_code == 403
    assert requests.put(artifact, data=b"admin", auth=ADMIN, timeout=60).status_code == 200
    assert api(server, "POST", "users/create", reader, username="intruder", password="intruder-0123").status_code == 403

    run = api(server, "GET", "runs/get", reader, run_id=run_id).json()["run"]
    assert run["data"]["params"] == [{"key": "lr", "value": "2"}]
    assert requests.get(artifact, auth=reader, timeout=60).content == b"admin"


POLICY_REFUSALS = {  # for the user teammate-dan
    "short-pw": "the password of 'teammate-dan' has 8 characters; 12 or more are needed",
    "Teammate-Dan": "the password of 'teammate-dan' is its user name; choose another",
}


@pytest.mark.slow
@pytest.mark.system
def test_every_password_follows_the_policy(server, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    dan = ("teammate-dan", "dan-password-0123")
    for password, reason in POLICY_REFUSALS.items():
        refused = api(server, "POST", "users/create", ADMIN, username=dan[0], password=password)
        body = refused.json()
        assert (refused.status_code, body["error_code"], body["message"]) == (400, "INVALID_PARAMETER_VALUE", reason)
    assert api(server, "GET", "users/get", ADMIN, username=dan[0]).status_code == 404  # not created
    assert api(server, "POST", "users/create", ADMIN, username=dan[0], password=dan[1]).status_code == 200

    for password, reason in POLICY_REFUSALS.items():  # a new password: set by the admin, or by dan himself
        by_admin = api(server, "PATCH", "users/update-password", ADMIN, username=dan[0], password=password)
        by_dan = api(server, "PATCH", "users/update-password", dan, username=dan[0], password=password,
                     current_password=dan[1])
        for refused in (by_admin, by_dan):
            assert (refused.status_code, refused.json()["message"]) == (400, reason)
    assert api(server, "POST", "experiments/search", dan, max_results=1).status_code == 200  # still his password

    # What the client of docs/team.md says.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    auth = get_app_client("basic-auth", tracking_uri=server.url)
    with pytest.raises(MlflowException, match="the password of 'teammate-erin' has 8 characters; 12 or more"):
        auth.create_user("teammate-erin", "short-pw")
    with pytest.raises(MlflowException, match="the password of 'teammate-dan' is its user name"):
        auth.update_user_password(dan[0], "TEAMMATE-DAN")
    auth.update_user_password(dan[0], "dan-new-password-0123")
    assert api(server, "POST", "experiments/search", (dan[0], "dan-new-password-0123"), max_results=1).status_code == 200


@pytest.mark.slow
@pytest.mark.system
def test_wrong_passwords_lock_out_a_user_then_an_address_until_the_window_ends(server):
    """The fixture's lockout: LOCKOUT_PER_USER wrong passwords for a user, LOCKOUT_PER_ADDRESS from an
    address, per LOCKOUT_WINDOW_S seconds."""
    frank = ("teammate-frank", "frank-password-0123")
    assert api(server, "POST", "users/create", ADMIN, username=frank[0], password=frank[1]).status_code == 200

    def search(auth, session=requests):
        return api(server, "POST", "experiments/search", auth, session, max_results=1)

    for _ in range(LOCKOUT_PER_USER):
        assert search((frank[0], "not-his-password")).status_code == 401
        last_counted = time.monotonic()
    locked = search(frank)  # his right password: refused, unchecked
    wait = int(locked.headers.get("Retry-After", 0))
    assert locked.status_code == 429 and 1 <= wait <= LOCKOUT_WINDOW_S, (locked.status_code, locked.headers)
    body = locked.json()
    assert (body["error_code"], body["message"]) == (
        "REQUEST_LIMIT_EXCEEDED", f"too many wrong passwords for the user 'teammate-frank': try again in {wait} s")
    artifact = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/0/run/artifacts/note.txt"  # a route FastAPI serves
    assert requests.get(artifact, auth=frank, timeout=60).status_code == 429
    assert search(ADMIN).status_code == 200  # the other users are not locked out

    # Guesses at the passwords of several users from one address (not 127.0.0.1, where the other tests
    # ask from): past its limit, nobody gets in from there, and everybody still does from elsewhere.
    guesser = session_from("127.0.0.3")
    statuses = [search((f"nobody-{attempt}", "a-guessed-password"), guesser).status_code
                for attempt in range(LOCKOUT_PER_ADDRESS + 1)]
    last_counted = time.monotonic()
    assert statuses == [401] * LOCKOUT_PER_ADDRESS + [429], statuses
    locked = search(ADMIN, guesser)
    assert locked.status_code == 429
    assert locked.json()["message"].startswith("too many wrong passwords for the address 127.0.0.3: try again in ")
    assert search(ADMIN).status_code == 200

    # Every window started at a counted wrong password; once the last has ended, all get in again.
    time.sleep(max(0.0, last_counted + LOCKOUT_WINDOW_S + 0.5 - time.monotonic()))
    assert search(ADMIN, guesser).status_code == 200
    assert search(frank).status_code == 200


def session_of(pid: int) -> list[str]:
    """The command lines of every process in the process group that pid leads."""
    commands = []
    for process in Path("/proc").iterdir():
        try:
            if process.name.isdigit() and os.getpgid(int(process.name)) == pid:
                commands.append((process / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (ProcessLookupError, FileNotFoundError):
            pass  # gone meanwhile
    return commands


@pytest.mark.slow
@pytest.mark.system
def test_the_server_keeps_its_files_private_and_passwords_out_of_argv(server, postgres):
    assert stat.S_IMODE(server.state.stat().st_mode) == 0o700
    for name in ("server.log", "server.pid", "auth.ini", "secret-key", "auth.db", "lockout.db"):
        assert stat.S_IMODE((server.state / name).stat().st_mode) == 0o600, name

    commands = session_of(int((server.state / "server.pid").read_text()))
    assert any(" -m mlflow server " in command and "--app-name basic-auth" in command for command in commands)
    assert len(commands) >= 2, commands  # `mlflow server` and its uvicorn, at least
    for command in commands:  # `ps` shows every user these
        assert make_url(postgres).password not in command and ADMIN[1] not in command, command
    assert make_url(postgres).password not in (server.state / "auth.ini").read_text()


@pytest.mark.slow
@pytest.mark.system
def test_a_restart_needs_no_admin_password_and_reads_pgpass(server, postgres, tmp_path):
    """Stop, and start at once again: the admin exists already, PostgreSQL's password is in a pgpass file."""
    url = make_url(postgres)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{url.host}:{url.port}:*:{url.username}:{url.password}\n")
    pgpass.chmod(0o600)
    env = {**server.env, "MLFLOW_BACKEND_STORE_URI": url.set(password=None).render_as_string(hide_password=False),
           "PGPASSFILE": str(pgpass)}
    del env["MLFLOW_AUTH_ADMIN_PASSWORD_FILE"]
    assert tracking_server("stop", server.env).returncode == 0
    restarted = tracking_server("start", env)
    assert restarted.returncode == 0, f"the restart failed:\n{restarted.stdout}\n{restarted.stderr}"
    assert api(server, "POST", "experiments/search", None, max_results=1).status_code == 401
    assert api(server, "POST", "experiments/search", ADMIN, max_results=1).status_code == 200


@pytest.mark.parametrize("host, refused", [("0.0.0.0", True), ("::", True), ("192.0.2.7", True), ("", True),
                                           ("mlflow.example.org", True), ("127.0.0.1", False), ("127.0.0.2", False),
                                           ("::1", False), ("localhost", False)])
def test_without_auth_only_on_loopback(host, refused, tmp_path):
    env = script_env(tmp_path / "state", MLFLOW_SERVER_HOST=host)  # and no backend store: the next check
    result = tracking_server("start", env, "--no-auth")
    assert result.returncode == 1
    assert ("without authentication" in result.stderr and "Drop --no-auth" in result.stderr) == refused, result.stderr
    assert ("no backend store" in result.stderr) != refused, result.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("password_file, error", [
    (None, "the first start with auth creates the admin user 'admin' and needs its password"),
    (0o644, "is open to other users (mode -rw-r--r--): chmod 600"),
    (0o600, None),  # then the next check: PostgreSQL, where nothing listens
])
def test_the_first_start_needs_the_admin_password(password_file, error, tmp_path):
    env = script_env(tmp_path / "state", MLFLOW_BACKEND_STORE_URI=f"postgresql://mlflow@127.0.0.1:{free_port()}/mlflow")
    del env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    if password_file is not None:
        (tmp_path / "password").write_text(ADMIN[1])
        (tmp_path / "password").chmod(password_file)
        env["MLFLOW_AUTH_ADMIN_PASSWORD_FILE"] = str(tmp_path / "password")
    result = tracking_server("start", env)
    assert result.returncode == 1 and (error or "cannot connect to PostgreSQL") in result.stderr, result.stderr
    assert not (tmp_path / "state").exists()


def test_a_password_on_the_command_line_is_refused(tmp_path):
    uri = f"postgresql://mlflow:pw@127.0.0.1:{free_port()}/mlflow"
    result = tracking_server("start", script_env(tmp_path / "state"), "--backend-store-uri", uri)
    assert result.returncode == 1 and "every user of this machine sees in `ps`" in result.stderr, result.stderr


@pytest.mark.slow
@pytest.mark.system
def test_a_wrong_password_is_a_clear_error(postgres, tmp_path):
    wrong = postgres.replace(":s3cret@", ":wrong@")
    result = tracking_server("start", script_env(tmp_path / "state", MLFLOW_BACKEND_STORE_URI=wrong))
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
    env = script_env(tmp_path / "state")
    if uri:
        env["MLFLOW_BACKEND_STORE_URI"] = uri.format(port=port)
    result = tracking_server("start", env)
    assert result.returncode == 1 and error.format(port=port) in result.stderr, result.stderr
    assert not (tmp_path / "state").exists()


def test_stop_and_status_without_a_server(tmp_path):
    env = script_env(tmp_path / "state")
    stopped = tracking_server("stop", env)
    assert stopped.returncode == 0 and "no tracking server" in stopped.stdout
    status = tracking_server("status", env)
    assert status.returncode == 1 and "no tracking server" in status.stderr


def test_stop_with_a_stale_pid_file_kills_nothing(tmp_path):
    (tmp_path / "state").mkdir()
    env = script_env(tmp_path / "state")
    # Leading a process group of its own, as the server did: what tells them apart is the command line.
    unrelated = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (tmp_path / "state" / "server.pid").write_text(str(unrelated.pid))
        status = tracking_server("status", env)
        assert status.returncode == 1 and "its pid file is stale" in status.stderr, status.stderr
        stopped = tracking_server("stop", env)
        assert stopped.returncode == 0 and "removed the stale" in stopped.stdout and "killed nothing" in stopped.stdout
        assert unrelated.poll() is None, "stop killed a process that is not the tracking server"
        assert not (tmp_path / "state" / "server.pid").exists()
    finally:
        unrelated.kill()
        unrelated.wait()


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
@pytest.mark.system
def test_a_clone_pulls_every_output_from_the_remote(workspace, mirror, tmp_path):
    workspace.repro()  # brings back up to date whatever an earlier test reran
    workspace.run("dvc", "remote", "add", "--default", "storage", str(tmp_path / "remote"))
    workspace.run("dvc", "push")
    commit(workspace, "results")

    clone = Workspace(tmp_path / "clone", mirror)
    workspace.run("git", "clone", "-q", str(workspace.path), str(clone.path))
    clone.run("dvc", "pull")

    outs = outputs(workspace.path / "dvc.lock")
    assert {"data/prepared/mnist", "models/linear/one_epoch.pt", "models/gan/conditional", "plots/gan/conditional/samples",
            "metrics/linear/one_epoch.json", "tracking/train-gan@conditional.json"} <= set(outs)
    for out in outs:
        assert (clone.path / out).exists(), f"{out} is missing from the clone after dvc pull"
        assert digest(clone.path / out) == digest(workspace.path / out), f"{out} differs in the clone"
    assert "Data and pipelines are up to date." in clone.run("dvc", "status")
