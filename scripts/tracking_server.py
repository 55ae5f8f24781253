"""Start, stop or check a shared MLflow tracking server: runs in PostgreSQL, artifacts served by it.

    MLFLOW_BACKEND_STORE_URI=postgresql+psycopg2://mlflow:secret@db-host:5432/mlflow \\
    MLFLOW_ARTIFACTS_DESTINATION=s3://bucket/mlflow \\
        python scripts/tracking_server.py start      # then: export MLFLOW_TRACKING_URI=http://HOST:PORT
    python scripts/tracking_server.py status
    python scripts/tracking_server.py stop

Every option also reads the environment variable named in its help. `start` checks that PostgreSQL
answers, creates the database when it does not exist yet, starts `mlflow server` in the
background and returns once its /health answers. The server's pid and log live in --state-dir.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:
    raise SystemExit("tracking_server.py needs psycopg2: run `make setup`, or pip install psycopg2-binary") from None


class ServerError(RuntimeError):
    pass


def postgres_url(uri: str | None) -> URL:
    if not uri:
        raise ServerError("no backend store: set MLFLOW_BACKEND_STORE_URI (or --backend-store-uri) to "
                          "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE")
    try:
        url = make_url(uri)
    except ArgumentError:
        raise ServerError(f"backend store URI {uri!r} is not a database URL "
                          "(expected postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE)") from None
    if url.get_backend_name() != "postgresql" or not url.database:
        raise ServerError(f"backend store URI {url.render_as_string(hide_password=True)!r} must be a PostgreSQL URL "
                          "with a database name: postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE")
    return url


def connect(url: URL, database: str):
    arguments = url.translate_connect_args(username="user", database="dbname")
    return psycopg2.connect(**{**arguments, **url.query, "dbname": database, "connect_timeout": 5})


def ensure_database(url: URL) -> None:
    """Connect to the database, or create it through the `postgres` maintenance database."""
    try:
        connect(url, url.database).close()
        return
    except psycopg2.OperationalError as error:
        database_error = error
    where = f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432} as {url.username!r}"
    try:
        maintenance = connect(url, "postgres")
    except psycopg2.OperationalError:
        raise ServerError(f"cannot connect to {where}, database {url.database!r}: "
                          f"{str(database_error).strip()}") from None
    try:
        maintenance.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with maintenance.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,))
            if cursor.fetchone():
                raise ServerError(f"cannot connect to database {url.database!r} on {where}: "
                                  f"{str(database_error).strip()}")
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
            print(f"created database {url.database!r} on {where}")
    except psycopg2.Error as error:
        raise ServerError(f"cannot create database {url.database!r} on {where}: {str(error).strip()}") from None
    finally:
        maintenance.close()


def server_address(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def running_pid(state_dir: Path) -> int | None:
    """The pid recorded by `start`, when that process still runs."""
    try:
        pid = int((state_dir / "server.pid").read_text())
        leads_its_group = os.getpgid(pid) == pid  # as `start` made it; a reused pid would not
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if leads_its_group else None


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ServerError(f"cannot listen on {host}:{port} ({error.strerror}): "
                              "choose another port with MLFLOW_SERVER_PORT") from None


def start(args: argparse.Namespace) -> None:
    url = postgres_url(args.backend_store_uri)
    if (pid := running_pid(args.state_dir)) is not None:
        raise ServerError(f"a tracking server from {args.state_dir} already runs (pid {pid}): stop it first")
    check_port_free(args.host, args.port)
    ensure_database(url)

    artifacts = args.artifacts_destination
    if "://" not in artifacts:
        artifacts = str(Path(artifacts).resolve())
    args.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.state_dir / "server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts", "--artifacts-destination", artifacts,
               "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    # The URL goes by environment, where `ps` does not show its password.
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": url.render_as_string(hide_password=False)}
    with open(log_path, "ab") as log:
        # A session of its own, so that `stop` ends the server and all its workers together.
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    (args.state_dir / "server.pid").write_text(str(server.pid))

    address = server_address(args.host, args.port)
    deadline = time.monotonic() + args.timeout
    while not healthy(address):
        if server.poll() is not None or time.monotonic() > deadline:
            reason = (f"exited with code {server.returncode}" if server.returncode is not None
                      else f"did not answer on {address}/health within {args.timeout:g} s")
            stop_session(server.pid)
            server.wait()
            (args.state_dir / "server.pid").unlink()
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise ServerError(f"the MLflow server {reason}; the end of {log_path}:\n{tail}")
        time.sleep(0.5)
    print(f"MLflow tracking server on {address} (pid {server.pid})\n"
          f"  runs in      {url.render_as_string(hide_password=True)}\n"
          f"  artifacts in {artifacts}\n"
          f"  log          {log_path}\n"
          f"export MLFLOW_TRACKING_URI={address}")


def stop_session(pid: int, grace_s: float = 20.0) -> None:
    """SIGTERM to every process of the server's session, SIGKILL to those left after grace_s."""
    try:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            os.killpg(pid, 0)  # raises ProcessLookupError once all are gone
            time.sleep(0.2)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(args: argparse.Namespace) -> None:
    pid = running_pid(args.state_dir)
    if pid is None:
        (args.state_dir / "server.pid").unlink(missing_ok=True)
        print(f"no tracking server from {args.state_dir} is running")
        return
    stop_session(pid)
    (args.state_dir / "server.pid").unlink()
    print(f"stopped the tracking server (pid {pid})")


def status(args: argparse.Namespace) -> None:
    pid = running_pid(args.state_dir)
    address = server_address(args.host, args.port)
    if pid is None:
        raise ServerError(f"no tracking server from {args.state_dir} is running")
    if not healthy(address):
        raise ServerError(f"the tracking server (pid {pid}) does not answer on {address}/health; "
                          f"see {args.state_dir / 'server.log'}")
    print(f"MLflow tracking server on {address} (pid {pid}) is healthy")


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--backend-store-uri", default=env("MLFLOW_BACKEND_STORE_URI"),
                        help="PostgreSQL URL of the runs' database [MLFLOW_BACKEND_STORE_URI]")
    parser.add_argument("--artifacts-destination", default=env("MLFLOW_ARTIFACTS_DESTINATION", "mlflow-server/artifacts"),
                        help="where the server stores artifacts: a folder, s3://bucket/path, ... "
                             "[MLFLOW_ARTIFACTS_DESTINATION, default mlflow-server/artifacts]")
    parser.add_argument("--host", default=env("MLFLOW_SERVER_HOST", "127.0.0.1"),
                        help="interface to listen on; 0.0.0.0 for the whole network [MLFLOW_SERVER_HOST, default 127.0.0.1]")
    parser.add_argument("--port", type=int, default=env("MLFLOW_SERVER_PORT", "5000"),
                        help="[MLFLOW_SERVER_PORT, default 5000]")
    parser.add_argument("--workers", type=int, default=env("MLFLOW_SERVER_WORKERS", "2"),
                        help="server worker processes [MLFLOW_SERVER_WORKERS, default 2]")
    parser.add_argument("--state-dir", type=Path, default=Path(env("MLFLOW_SERVER_DIR", "mlflow-server")),
                        help="where the server's pid and log go [MLFLOW_SERVER_DIR, default mlflow-server]")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the server to answer (it creates its tables on first start)")
    args = parser.parse_args(argv)
    try:
        {"start": start, "stop": stop, "status": status}[args.command](args)
    except ServerError as error:
        raise SystemExit(f"tracking_server.py {args.command}: {error}") from None


if __name__ == "__main__":
    main()
