"""The team tracking server's machinery, beside `scripts/tracking_server.py` (its command line): the
PostgreSQL database of its runs (checked, created when missing), files only their owner reads, and the
server process: its address and health, found again from its pid file, stopped with its workers."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from . import store


class ServerError(RuntimeError):
    pass


def postgres_url(uri: str | None, on_command_line: bool) -> URL:
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
    if on_command_line and url.password:
        raise ServerError("--backend-store-uri holds a password, which every user of this machine sees in `ps`: "
                          "pass the URL in MLFLOW_BACKEND_STORE_URI, or leave the password out and put it in ~/.pgpass")
    return url


def connect(url: URL, database: str):
    import psycopg2

    arguments = url.translate_connect_args(username="user", database="dbname")
    return psycopg2.connect(**{**arguments, **url.query, "dbname": database, "connect_timeout": 5})


def ensure_database(url: URL) -> None:
    """Connect to the database, or create it through the `postgres` maintenance database."""
    import psycopg2
    from psycopg2 import sql

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


def private_file(path: Path, mode: str = "w"):
    """Open a file only its owner can read or write (0600), also when it already existed."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    os.fchmod(descriptor, 0o600)
    return os.fdopen(descriptor, mode)


def write_private(path: Path, text: str) -> None:
    with private_file(path) as file:
        file.write(text)


def server_address(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def healthy(url: str) -> bool:
    return store.health(url, timeout_s=2) is None


def auth_problem(url: str) -> str | None:
    """None when the API asks a request without a password for one (401), as the auth app, its
    authorization function (team_auth.authenticate) and its config loaded; else what it answered.
    /health, open to all, says none of this."""
    try:
        urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30).close()
        return "answered a request without a password (200), instead of asking for one (401)"
    except urllib.error.HTTPError as error:
        return None if error.code == 401 else f"answered {error.code} to a request without a password, not 401"
    except (urllib.error.URLError, OSError) as error:
        return f"did not answer a request to its API ({error})"


def is_tracking_server(pid: int) -> bool:
    """Whether pid still is what `start` ran: `... mlflow server ...`, leading its own process group."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        leads_its_group = os.getpgid(pid) == pid
    except (FileNotFoundError, ProcessLookupError):
        return False
    runs_mlflow_server = any(Path(arg).name == "mlflow" and then == "server" for arg, then in zip(args, args[1:]))
    return leads_its_group and runs_mlflow_server


def recorded_pid(state_dir: Path) -> int | None:
    try:
        return int((state_dir / "server.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def running_pid(state_dir: Path) -> int | None:
    """The pid recorded by `start`, when that process still is the tracking server."""
    pid = recorded_pid(state_dir)
    return pid if pid is not None and is_tracking_server(pid) else None


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server: a restart may follow a stop
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ServerError(f"cannot listen on {host}:{port} ({error.strerror}): "
                              "choose another port with MLFLOW_SERVER_PORT") from None


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
