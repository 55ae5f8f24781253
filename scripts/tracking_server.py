"""Start, stop or check a shared MLflow tracking server: runs in PostgreSQL, artifacts served by it,
every request authenticated (MLflow's basic-auth app).

    export MLFLOW_BACKEND_STORE_URI=postgresql+psycopg2://mlflow@db-host:5432/mlflow  # password: ~/.pgpass
    export MLFLOW_AUTH_ADMIN_PASSWORD_FILE=~/.config/mlflow/admin-password           # chmod 600; first start only
    python scripts/tracking_server.py start      # then: export MLFLOW_TRACKING_URI=http://HOST:PORT
    python scripts/tracking_server.py status
    python scripts/tracking_server.py stop

Every option also reads the environment variable named in its help. `start` checks that PostgreSQL
answers, creates the database when it does not exist yet, starts `mlflow server --app-name basic-auth`
in the background and returns once its /health answers. The state folder (mode 0700) holds the
server's pid, log, auth config, Flask secret key, its users' database (auth.db, SQLite) and the counts
of wrong passwords (lockout.db, SQLite), all 0600. Every user's password must have 12 characters or
more and differ from the user name; past too many wrong passwords, a user or a client address is
refused (429) until the window ends (dlcourse.pipeline.team_auth). Without auth (--no-auth) it listens
on loopback only.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

from dlcourse.pipeline import store, team_auth
from dlcourse.pipeline.team_server import (ServerError, auth_problem, check_port_free, ensure_database, healthy,
                                           is_tracking_server, postgres_url, private_file, recorded_pid, running_pid,
                                           server_address, stop_session, write_private)

try:
    import psycopg2  # noqa: F401 - needed by team_server's database functions: said here, before anything starts
except ImportError:
    raise SystemExit("tracking_server.py needs psycopg2: run `make setup`, or pip install psycopg2-binary") from None

PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost, or "" (every interface)


def check_auth(args: argparse.Namespace) -> None:
    if not args.auth and not is_loopback(args.host):
        raise ServerError(f"refusing to listen on {args.host or 'every interface'} without authentication: anyone "
                          "who reaches the port could read, change and delete every run and artifact. Drop --no-auth "
                          "(and unset MLFLOW_SERVER_AUTH=false) to require a password, or listen on 127.0.0.1")
    if args.auth and importlib.util.find_spec("flask_wtf") is None:
        raise ServerError("MLflow's basic auth needs its `auth` extra: .venv/bin/pip install 'mlflow[auth]'")


def check_password_policy(username: str, password: str, where: str) -> None:
    """The policy that the server applies to every user (team_auth.password_problem): 12 characters or
    more, and not the user name."""
    if (problem := team_auth.password_problem(username, password)) is not None:
        raise ServerError(f"{where}: {problem}")


def check_lockout(args: argparse.Namespace) -> None:
    for option, variable, value in (("--lockout-per-user", "MLFLOW_AUTH_LOCKOUT_PER_USER", args.lockout_per_user),
                                    ("--lockout-per-address", "MLFLOW_AUTH_LOCKOUT_PER_ADDRESS",
                                     args.lockout_per_address)):
        try:
            team_auth.parse_limit(value)
        except ValueError as error:
            raise ServerError(f"{option} ({variable}): {error}") from None


def admin_password(args: argparse.Namespace) -> str | None:
    """MLFLOW_AUTH_ADMIN_PASSWORD, or the first line of --admin-password-file, which only its owner may
    read; either checked against the password policy (check_password_policy)."""
    if os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        password = os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]
        check_password_policy(args.admin_username, password, "MLFLOW_AUTH_ADMIN_PASSWORD")
        return password
    if not args.admin_password_file:
        return None
    path = Path(args.admin_password_file).expanduser()
    try:
        mode = path.stat().st_mode
        password = (path.read_text().splitlines() or [""])[0].strip()
    except OSError as error:
        raise ServerError(f"cannot read the admin password file {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServerError(f"the admin password file {path} is open to other users (mode {stat.filemode(mode)}): "
                          f"chmod 600 {path}")
    if not password:
        raise ServerError(f"the admin password file {path} is empty")
    check_password_policy(args.admin_username, password, f"the admin password file {path}")
    return password


def auth_environment(args: argparse.Namespace, password: str | None) -> dict[str, str]:
    """Write the basic-auth app's config (its users in <state>/auth.db; each request checked by
    team_auth.authenticate, its counts of wrong passwords in <state>/lockout.db) and return the
    variables that hand it, the admin's name and password and a stable Flask secret key to `mlflow server`."""
    state = args.state_dir.resolve()
    config = state / "auth.ini"
    lockout = state / "lockout.db"
    team_auth.SQLiteStorage(lockout)  # created now, 0600, rather than by the first worker that needs it
    write_private(config, "[mlflow]\n"
                          f"default_permission = {args.default_permission}\n"
                          f"database_uri = sqlite:///{state / 'auth.db'}\n"
                          f"admin_username = {args.admin_username}\n"
                          f"authorization_function = {team_auth.__name__}:{team_auth.authenticate.__name__}\n"
                          "\n[lockout]\n"
                          f"per_user = {args.lockout_per_user}\n"
                          f"per_address = {args.lockout_per_address}\n"
                          f"database = {lockout}\n")
    key_file = state / "secret-key"  # signs the UI's CSRF tokens; must stay the same across workers and restarts
    if not key_file.exists():
        write_private(key_file, secrets.token_urlsafe(32))
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_USERNAME": args.admin_username,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or key_file.read_text()}
    if password:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
    return env


def start(args: argparse.Namespace) -> None:
    check_auth(args)
    if args.auth:
        check_lockout(args)
    url = postgres_url(args.backend_store_uri or os.environ.get("MLFLOW_BACKEND_STORE_URI"),
                       on_command_line=bool(args.backend_store_uri))
    password = admin_password(args) if args.auth else None
    if args.auth and not password and not (args.state_dir / "auth.db").exists():
        raise ServerError(f"the first start with auth creates the admin user {args.admin_username!r} and needs its "
                          "password (12 characters or more): put it in a file only you can read (chmod 600) named by "
                          "MLFLOW_AUTH_ADMIN_PASSWORD_FILE, or in MLFLOW_AUTH_ADMIN_PASSWORD")
    if (pid := running_pid(args.state_dir)) is not None:
        raise ServerError(f"a tracking server from {args.state_dir} already runs (pid {pid}): stop it first")
    check_port_free(args.host, args.port)
    ensure_database(url)

    artifacts = args.artifacts_destination
    if "://" not in artifacts:
        artifacts = str(Path(artifacts).resolve())
    os.umask(0o077)  # whatever the server writes (auth.db, local artifacts) is its owner's alone
    args.state_dir.mkdir(parents=True, exist_ok=True)
    args.state_dir.chmod(0o700)
    log_path = args.state_dir / "server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts", "--artifacts-destination", artifacts,
               "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    # Secrets go by environment, which only this user can read (/proc/PID/environ), never by argv, which `ps` shows.
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": url.render_as_string(hide_password=False)}
    if args.auth:
        command += ["--app-name", "basic-auth"]
        env.update(auth_environment(args, password))
    with private_file(log_path, "ab") as log:
        # A session of its own, so that `stop` ends the server and all its workers together.
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    write_private(args.state_dir / "server.pid", str(server.pid))

    address = server_address(args.host, args.port)
    reason = store.wait_until_healthy(address, args.timeout, server)
    if reason is None and args.auth:
        reason = auth_problem(address)
    if reason is not None:
        stop_session(server.pid)
        server.wait()
        (args.state_dir / "server.pid").unlink()
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise ServerError(f"the MLflow server {reason}; the end of {log_path}:\n{tail}")
    print(f"MLflow tracking server on {address} (pid {server.pid})\n"
          f"  runs in      {url.render_as_string(hide_password=True)}\n"
          f"  artifacts in {artifacts}\n"
          f"  log          {log_path}\n"
          + (f"  users in     {args.state_dir / 'auth.db'} (admin: {args.admin_username}, "
             f"default permission: {args.default_permission})\n"
             f"  lockout      past {args.lockout_per_user} wrong passwords for a user, "
             f"{args.lockout_per_address} from an address\n" if args.auth else "  no authentication\n")
          + f"export MLFLOW_TRACKING_URI={address}")


def stop(args: argparse.Namespace) -> None:
    pid_file = args.state_dir / "server.pid"
    pid = recorded_pid(args.state_dir)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        print(f"no tracking server from {args.state_dir} is running")
    elif not is_tracking_server(pid):
        pid_file.unlink()
        print(f"no tracking server from {args.state_dir} is running: removed the stale {pid_file} "
              f"(pid {pid} is not an `mlflow server` any more); killed nothing")
    else:
        stop_session(pid)
        pid_file.unlink()
        print(f"stopped the tracking server (pid {pid})")


def status(args: argparse.Namespace) -> None:
    pid = running_pid(args.state_dir)
    address = server_address(args.host, args.port)
    if pid is None:
        stale = " (its pid file is stale)" if recorded_pid(args.state_dir) is not None else ""
        raise ServerError(f"no tracking server from {args.state_dir} is running{stale}")
    if not healthy(address):
        raise ServerError(f"the tracking server (pid {pid}) does not answer on {address}/health; "
                          f"see {args.state_dir / 'server.log'}")
    print(f"MLflow tracking server on {address} (pid {pid}) is healthy")


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--backend-store-uri",
                        help="PostgreSQL URL of the runs' database, without its password (`ps` shows options: "
                             "put the password in ~/.pgpass) [MLFLOW_BACKEND_STORE_URI, which may hold it]")
    parser.add_argument("--artifacts-destination", default=env("MLFLOW_ARTIFACTS_DESTINATION", "mlflow-server/artifacts"),
                        help="where the server stores artifacts: a folder, s3://bucket/path, ... "
                             "[MLFLOW_ARTIFACTS_DESTINATION, default mlflow-server/artifacts]")
    parser.add_argument("--host", default=env("MLFLOW_SERVER_HOST", "127.0.0.1"),
                        help="interface to listen on; 0.0.0.0 for the whole network, which needs auth "
                             "[MLFLOW_SERVER_HOST, default 127.0.0.1]")
    parser.add_argument("--port", type=int, default=env("MLFLOW_SERVER_PORT", "5000"),
                        help="[MLFLOW_SERVER_PORT, default 5000]")
    parser.add_argument("--workers", type=int, default=env("MLFLOW_SERVER_WORKERS", "2"),
                        help="server worker processes [MLFLOW_SERVER_WORKERS, default 2]")
    parser.add_argument("--auth", action=argparse.BooleanOptionalAction,
                        default=env("MLFLOW_SERVER_AUTH", "true").lower() not in ("false", "0", "no", "off"),
                        help="require a user name and password on every request but /health; --no-auth only on "
                             "loopback [MLFLOW_SERVER_AUTH=false for --no-auth, default on]")
    parser.add_argument("--admin-username", default=env("MLFLOW_AUTH_ADMIN_USERNAME", "admin"),
                        help="the admin user that the first start creates [MLFLOW_AUTH_ADMIN_USERNAME, default admin]")
    parser.add_argument("--admin-password-file", default=env("MLFLOW_AUTH_ADMIN_PASSWORD_FILE"),
                        help="a file only you can read (chmod 600) holding the admin's password, needed at the first "
                             "start only [MLFLOW_AUTH_ADMIN_PASSWORD_FILE, or the password in MLFLOW_AUTH_ADMIN_PASSWORD]")
    parser.add_argument("--default-permission", choices=PERMISSIONS, default=env("MLFLOW_AUTH_DEFAULT_PERMISSION", "READ"),
                        help="what a user may do with an experiment that nobody gave them a permission on "
                             "[MLFLOW_AUTH_DEFAULT_PERMISSION, default READ]")
    parser.add_argument("--lockout-per-user", default=env("MLFLOW_AUTH_LOCKOUT_PER_USER", team_auth.DEFAULT_PER_USER),
                        help="wrong passwords for one user, per window, past which the server refuses (429) every "
                             "request of that user, a right password too, until the window ends "
                             f"[MLFLOW_AUTH_LOCKOUT_PER_USER, default '{team_auth.DEFAULT_PER_USER}']")
    parser.add_argument("--lockout-per-address", default=env("MLFLOW_AUTH_LOCKOUT_PER_ADDRESS",
                                                             team_auth.DEFAULT_PER_ADDRESS),
                        help="the same for the wrong passwords from one client address, whatever the user "
                             f"[MLFLOW_AUTH_LOCKOUT_PER_ADDRESS, default '{team_auth.DEFAULT_PER_ADDRESS}']")
    parser.add_argument("--state-dir", type=Path, default=Path(env("MLFLOW_SERVER_DIR", "mlflow-server")),
                        help="where the server's pid, log and users go [MLFLOW_SERVER_DIR, default mlflow-server]")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the server to answer (it creates its tables on first start)")
    args = parser.parse_args(argv)
    if args.default_permission not in PERMISSIONS:  # argparse checks the choices of the command line only
        parser.error(f"MLFLOW_AUTH_DEFAULT_PERMISSION={args.default_permission!r}: choose one of {', '.join(PERMISSIONS)}")
    try:
        {"start": start, "stop": stop, "status": status}[args.command](args)
    except ServerError as error:
        raise SystemExit(f"tracking_server.py {args.command}: {error}") from None


if __name__ == "__main__":
    main()
