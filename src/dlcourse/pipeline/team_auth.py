"""The team tracking server's authorization function: MLflow's basic auth, plus the project's password
policy for every user and a lockout after repeated wrong passwords.

scripts/tracking_server.py names `authenticate` as the `authorization_function` of the auth.ini it
writes, MLflow's hook for a check of its own. MLflow calls it before every request but /health: on its
Flask routes (the REST API, the UI) and, in a Flask request context it builds, on its FastAPI ones
(artifact downloads and uploads). For a request with a user name and password, it

- answers 429 (Too Many Requests, with Retry-After) without checking the password while the user, or
  the client's address, has had too many wrong passwords within the current window (auth.ini's
  [lockout] per_user and per_address, in the `limits` library's notation: "5 per 15 minutes"): a right
  password is refused too until that window ends;
- else checks the password with MLflow's own basic auth, and counts a wrong one for both;
- refuses (400, the reason in the JSON body's `message`) a user created, or a password changed, through
  MLflow's API with a password against the policy (`password_problem`). MLflow itself checks the length
  alone, and only inside the store.

The counts live in a SQLite file of the server's state folder (auth.ini's [lockout] database), which
every worker process of the server opens: `limits` counts, in fixed windows that start at a user's
(or address's) first wrong password; `SQLiteStorage` keeps the counters where all workers see them.
"""

from __future__ import annotations

import configparser
import math
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from limits import RateLimitItem, parse_many
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter

PASSWORD_MIN_LENGTH = 12  # MLflow's own minimum too
DEFAULT_PER_USER = "5 per 15 minutes"
DEFAULT_PER_ADDRESS = "20 per 15 minutes"  # a client guessing the passwords of many users


def password_problem(username: str, password: str) -> str | None:
    """Why a password breaks the policy (12 characters or more, not the user name), or None."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return (f"the password of {username!r} has {len(password)} characters; "
                f"{PASSWORD_MIN_LENGTH} or more are needed")
    if password.strip().casefold() == username.strip().casefold():
        return f"the password of {username!r} is its user name; choose another"
    return None


def parse_limit(text: str) -> RateLimitItem:
    """A number of wrong passwords per window, in `limits`' notation: "5 per 15 minutes", "5/15minutes"."""
    try:
        limits = parse_many(text)
    except ValueError:
        limits = []
    if len(limits) != 1 or limits[0].amount < 1:
        raise ValueError(f"{text!r} is not a limit: write it as '5 per 15 minutes' "
                         "(N per [M] second|minute|hour|day, N at least 1, one limit)")
    return limits[0]


class SQLiteStorage(Storage):
    """A `limits` storage (its fixed-window counters) in one SQLite file, which every process that opens
    it shares: `limits` ships an in-memory storage, which each server worker would keep to itself, and
    storages on Redis, Memcached or MongoDB, which the team server does not have. SQLite's own file
    lock orders the workers' writes; each counter changes in one statement, a transaction of its own."""

    STORAGE_SCHEME = None  # built from a path, not registered with limits under a URI scheme

    def __init__(self, path: str | os.PathLike, wrap_exceptions: bool = False):
        super().__init__(wrap_exceptions=wrap_exceptions)
        self.path = Path(path)
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))  # its owner's alone, whatever the umask
        self._run("CREATE TABLE IF NOT EXISTS counters "
                  "(key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires REAL NOT NULL)")

    @property
    def base_exceptions(self) -> type[Exception]:
        return sqlite3.Error

    def _run(self, statement: str, parameters: tuple | dict = ()) -> list[tuple]:
        # A connection per call, in autocommit mode (each statement its own transaction), waiting up to
        # 10 s for another worker's write; it serves any thread of the worker.
        with closing(sqlite3.connect(self.path, timeout=10, isolation_level=None)) as db:
            return db.execute(statement, parameters).fetchall()

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = time.time()
        self._run("DELETE FROM counters WHERE expires <= ?", (now,))  # others' windows that ended
        # A window that ended is started afresh; in DO UPDATE, `count` and `expires` are the stored row's.
        [(count,)] = self._run(
            "INSERT INTO counters (key, count, expires) VALUES (:key, :amount, :expires) "
            "ON CONFLICT (key) DO UPDATE SET "
            "count = CASE WHEN expires > :now THEN count + excluded.count ELSE excluded.count END, "
            "expires = CASE WHEN expires > :now THEN expires ELSE excluded.expires END "
            "RETURNING count",
            {"key": key, "amount": amount, "expires": now + expiry, "now": now})
        return count

    def get(self, key: str) -> int:
        rows = self._run("SELECT count FROM counters WHERE key = ? AND expires > ?", (key, time.time()))
        return rows[0][0] if rows else 0

    def get_expiry(self, key: str) -> float:
        now = time.time()
        rows = self._run("SELECT expires FROM counters WHERE key = ? AND expires > ?", (key, now))
        return rows[0][0] if rows else now

    def check(self) -> bool:
        try:
            return self._run("SELECT 1") == [(1,)]
        except sqlite3.Error:
            return False

    def reset(self) -> int:
        return len(self._run("DELETE FROM counters RETURNING key"))

    def clear(self, key: str) -> None:
        self._run("DELETE FROM counters WHERE key = ?", (key,))


@dataclass(frozen=True)
class Lockout:
    """Wrong passwords counted per user and per client address; past either limit, every request of that
    user (or from that address) is refused until the window ends. A right password resets nothing:
    otherwise a user's own stage, which authenticates at every call, would reopen the guessing."""

    per_user: RateLimitItem
    per_address: RateLimitItem
    limiter: FixedWindowRateLimiter

    @classmethod
    def in_file(cls, path: str | os.PathLike, per_user: str = DEFAULT_PER_USER,
                per_address: str = DEFAULT_PER_ADDRESS) -> Lockout:
        return cls(parse_limit(per_user), parse_limit(per_address), FixedWindowRateLimiter(SQLiteStorage(path)))

    def _counters(self, username: str, address: str | None) -> list[tuple[str, RateLimitItem, str, str]]:
        counters = [(f"the user {username!r}", self.per_user, "user", username)]
        if address:  # unknown in the request context MLflow builds for its FastAPI routes
            counters.append((f"the address {address}", self.per_address, "address", address))
        return counters

    def locked(self, username: str, address: str | None) -> tuple[int, str] | None:
        """(seconds to wait, for whom) while `username` or `address` has used up its wrong passwords, else None."""
        waits = []
        for whom, limit, *identifiers in self._counters(username, address):
            if not self.limiter.test(limit, *identifiers):
                reset = self.limiter.get_window_stats(limit, *identifiers).reset_time
                waits.append((max(1, math.ceil(reset - time.time())), whom))
        return max(waits, default=None)

    def failed(self, username: str, address: str | None) -> None:
        """Count a wrong password (or an unknown user) against both."""
        for _, limit, *identifiers in self._counters(username, address):
            self.limiter.hit(limit, *identifiers)


@cache
def server_lockout() -> Lockout:
    """This server's lockout, from the [lockout] section of its auth.ini (MLFLOW_AUTH_CONFIG_PATH)."""
    path = os.environ.get("MLFLOW_AUTH_CONFIG_PATH", "")
    config = configparser.ConfigParser()
    config.read(path)
    if not config.has_option("lockout", "database"):
        raise RuntimeError(f"the auth config {path or '(MLFLOW_AUTH_CONFIG_PATH is not set)'} has no [lockout] "
                           "section naming its database: start the server with scripts/tracking_server.py")
    section = config["lockout"]
    return Lockout.in_file(section["database"], section.get("per_user", DEFAULT_PER_USER),
                           section.get("per_address", DEFAULT_PER_ADDRESS))


def _error(message: str, code: int):
    """A Flask response in the form of MLflow's REST errors: {"error_code": ..., "message": ...}."""
    from flask import Response
    from mlflow.exceptions import MlflowException

    error = MlflowException(message, code)
    return Response(error.serialize_as_json(), status=error.get_http_status_code(), mimetype="application/json")


def _policy_refusal():
    """A 400 response for a request that creates a user, or sets a password, against the policy; else None."""
    from flask import request
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    from mlflow.server.auth import routes

    json_routes = {(routes.CREATE_USER, "POST"), (routes.AJAX_CREATE_USER, "POST"),
                   (routes.UPDATE_USER_PASSWORD, "PATCH"), (routes.AJAX_UPDATE_USER_PASSWORD, "PATCH")}
    if (request.path, request.method) == (routes.CREATE_USER_UI, "POST"):
        fields = request.form  # the UI's sign-up form
    elif (request.path, request.method) in json_routes:
        body = request.get_json(silent=True)  # as MLflow's handlers read it
        fields = body if isinstance(body, dict) else {}
    else:
        return None
    username, password = fields.get("username"), fields.get("password")
    if not (isinstance(username, str) and isinstance(password, str)):
        return None  # MLflow's handler refuses it with its own message
    problem = password_problem(username, password)
    return None if problem is None else _error(problem, INVALID_PARAMETER_VALUE)


def authenticate():
    """MLflow's `authorization_function` for the team server: the request's Authorization, or the
    Response that refuses it (401 wrong password, 429 locked out, 400 a password against the policy)."""
    from flask import Response, g, request
    from mlflow.protos.databricks_pb2 import REQUEST_LIMIT_EXCEEDED
    from mlflow.server.auth import authenticate_request_basic_auth

    if "team_auth" in g:  # MLflow's handlers ask again within the request (who sends it)
        return g.team_auth
    lockout = server_lockout()  # first, so that a bad config fails every request but /health at once
    credentials = request.authorization
    if credentials is None or credentials.type != "basic" or credentials.username is None:
        return authenticate_request_basic_auth()  # 401: no password was tried
    username, address = credentials.username, request.remote_addr
    if (locked := lockout.locked(username, address)) is not None:
        wait, whom = locked
        response = _error(f"too many wrong passwords for {whom}: try again in {wait} s", REQUEST_LIMIT_EXCEEDED)
        response.headers["Retry-After"] = str(wait)
        return response
    authorization = authenticate_request_basic_auth()
    if isinstance(authorization, Response):  # MLflow's 401
        lockout.failed(username, address)
        return authorization
    # Before MLflow's permission check: a user who may not create users is told the policy, not 403.
    if (refusal := _policy_refusal()) is not None:
        return refusal
    g.team_auth = authorization
    return authorization
