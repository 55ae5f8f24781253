"""Where the stages' MLflow runs go: the tracking URI (a local SQLite file unless
MLFLOW_TRACKING_URI says otherwise), its checks before any compute, the lock that makes the first
opening of a SQLite store one process at a time, and a tracking server's health.

Several stages may log at once (`dvc queue start -j N` runs experiments side by side). SQLite
lets one writer in at a time and MLflow waits up to 20 s for its turn, which is plenty for the
few short writes of a stage. What is not safe is two processes creating the store at once: both
would run its schema migrations, and both fail. So a file lock beside the database makes the
first use of the store, and the creation of the experiment, one process at a time.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


def recorded_tracking_uri(uri: str, root: Path | None = None) -> str | None:
    """The store as a committed run record names it, with nothing particular to the machine: a local
    store inside the repository relative to it (`sqlite:///mlflow.db`, `mlruns`), a server without
    the user and password of its URL, None for a local store outside the repository."""
    root = (root or project_root()).resolve()
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme.startswith("sqlite"):
        path = _sqlite_path(uri)
        if path is None:  # in memory
            return uri
    elif scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
    elif not scheme:
        path = Path(uri)
    else:
        return parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[-1]).geturl()
    try:
        relative = path.resolve().relative_to(root).as_posix()
    except ValueError:
        return None
    return f"{parsed.scheme}:///{relative}" if scheme.startswith("sqlite") else relative


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


SQLITE_WAIT_S = 20  # MLflow's own busy_timeout for its sessions; the README promises it


def with_sqlite_wait(uri: str) -> str:
    """The URI MLflow is given: a SQLite store with `timeout=20`, so that its first connection, which
    reads the schema before MLflow sets its own 20 s busy_timeout, waits as long (sqlite3's default:
    5 s) for a writer holding the store; other URIs as they are."""
    if not uri.startswith("sqlite") or "timeout=" in uri.partition("?")[2]:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}timeout={SQLITE_WAIT_S}"


@contextmanager
def locked_store_explained(uri: str) -> Iterator[None]:
    """SQLite's 'database is locked' after the wait, as one line naming the store, not a traceback
    of SQLAlchemy's."""
    try:
        yield
    except Exception as exc:
        if "database is locked" not in str(exc):
            raise
        raise TrackingError(f"MLflow store {uri} stayed locked for {SQLITE_WAIT_S} s by another process (a stage, "
                            "`mlflow ui` or a server on it, a sqlite3 shell in a transaction); let it finish or "
                            "stop it, then rerun") from None


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
