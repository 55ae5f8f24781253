"""The team server's password policy, checked before the server starts: 12 characters or more, not
the user name; nothing is started or written for a password that breaks it. The same policy for the
users the server creates, and its lockout after wrong passwords (dlcourse.pipeline.team_auth), without
a server: tests/test_team.py checks them through a running one."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlcourse.pipeline import team_auth

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "tracking_server.py"


@pytest.mark.parametrize("user, password, error", [
    ("admin", "short-pw", "the password of 'admin' has 8 characters; 12 or more are needed"),
    ("admin", "admin-pw-11", "the password of 'admin' has 11 characters; 12 or more are needed"),
    ("course-admin", "Course-Admin", "the password of 'course-admin' is its user name; choose another"),
])
@pytest.mark.parametrize("source", ["file", "environment"])
def test_a_password_against_the_policy_stops_the_first_start(tmp_path, user, password, error, source):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"),
           "MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow@127.0.0.1:1/mlflow", "MLFLOW_AUTH_ADMIN_USERNAME": user}
    if source == "file":
        (tmp_path / "password").write_text(password + "\n")
        (tmp_path / "password").chmod(0o600)
        env["MLFLOW_AUTH_ADMIN_PASSWORD_FILE"] = str(tmp_path / "password")
        where = f"the admin password file {tmp_path / 'password'}"
    else:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
        where = "MLFLOW_AUTH_ADMIN_PASSWORD"
    result = subprocess.run([sys.executable, str(SCRIPT), "start", "--state-dir", str(tmp_path / "state")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"{where}: {error}" in result.stderr, result.stderr
    assert not (tmp_path / "state").exists()


def start_against_no_database(tmp_path, **variables) -> subprocess.CompletedProcess:
    """`tracking_server.py start` with a good admin password and `variables`, its database unreachable:
    it stops at the first check that fails."""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"),
           "MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow@127.0.0.1:1/mlflow",
           "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-enough-password", **variables}
    return subprocess.run([sys.executable, str(SCRIPT), "start", "--state-dir", str(tmp_path / "state")],
                          env=env, capture_output=True, text=True, timeout=120)


def test_a_password_within_the_policy_goes_on_to_the_next_check(tmp_path):
    result = start_against_no_database(tmp_path)
    assert result.returncode == 1 and "password" not in result.stderr.lower(), result.stderr


@pytest.mark.parametrize("user, password, problem", [
    ("alice", "short-pw", "the password of 'alice' has 8 characters; 12 or more are needed"),
    ("alice", "", "the password of 'alice' has 0 characters; 12 or more are needed"),
    ("teammate-bob", "Teammate-Bob", "the password of 'teammate-bob' is its user name; choose another"),
    ("teammate-bob", " TEAMMATE-BOB ", "the password of 'teammate-bob' is its user name; choose another"),
    ("teammate-bob", "teammate-bob-0123", None),
    ("alice", "alice-password-0123", None),
])
def test_the_password_policy(user, password, problem):
    assert team_auth.password_problem(user, password) == problem


@pytest.mark.parametrize("text", ["5", "lots", "0 per minute", "5 per fortnight", "", "5 per minute; 50 per day"])
def test_a_lockout_limit_must_read_as_one(text):
    with pytest.raises(ValueError, match="is not a limit: write it as '5 per 15 minutes'"):
        team_auth.parse_limit(text)
    assert team_auth.parse_limit("5 per 15 minutes").get_expiry() == 900


@pytest.mark.parametrize("variable", ["MLFLOW_AUTH_LOCKOUT_PER_USER", "MLFLOW_AUTH_LOCKOUT_PER_ADDRESS"])
def test_a_bad_lockout_limit_stops_the_start(tmp_path, variable):
    result = start_against_no_database(tmp_path, **{variable: "lots"})
    assert result.returncode == 1
    assert f"({variable}): 'lots' is not a limit" in result.stderr, result.stderr
    assert not (tmp_path / "state").exists()


def test_wrong_passwords_lock_a_user_out_until_the_window_ends(tmp_path):
    lockout = team_auth.Lockout.in_file(tmp_path / "lockout.db", per_user="3 per 2 seconds",
                                        per_address="100 per 2 seconds")
    for _ in range(2):
        lockout.failed("alice", "192.0.2.1")
    assert lockout.locked("alice", "192.0.2.1") is None  # 2 of 3
    lockout.failed("alice", "192.0.2.1")
    assert lockout.locked("alice", "192.0.2.1") == (2, "the user 'alice'")
    assert lockout.locked("alice", "192.0.2.99") == (2, "the user 'alice'")  # wherever she asks from
    assert lockout.locked("alice", None) == (2, "the user 'alice'")
    assert lockout.locked("bob", "192.0.2.1") is None  # others are not
    time.sleep(2.1)
    assert lockout.locked("alice", "192.0.2.1") is None


def test_wrong_passwords_lock_an_address_out_whatever_the_user(tmp_path):
    lockout = team_auth.Lockout.in_file(tmp_path / "lockout.db", per_user="100 per 2 seconds",
                                        per_address="3 per 2 seconds")
    for user in ("alice", "bob", "carol"):
        lockout.failed(user, "192.0.2.1")
    assert lockout.locked("dave", "192.0.2.1") == (2, "the address 192.0.2.1")
    assert lockout.locked("dave", "192.0.2.2") is None
    assert lockout.locked("dave", None) is None  # an unknown address (MLflow's FastAPI routes): the user's count alone
    time.sleep(2.1)
    assert lockout.locked("dave", "192.0.2.1") is None


COUNT_IN_ANOTHER_PROCESS = """
import sys
from dlcourse.pipeline import team_auth
lockout = team_auth.Lockout.in_file(sys.argv[1], per_user="75 per 1 minute", per_address="1000 per 1 minute")
for _ in range(int(sys.argv[2])):
    lockout.failed("alice", "192.0.2.1")
"""


def test_the_counts_are_shared_by_processes(tmp_path):
    """What the server's workers do: each counts in the same file; no count is lost when they write at once."""
    path = tmp_path / "lockout.db"
    team_auth.SQLiteStorage(path)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")}
    workers = [subprocess.Popen([sys.executable, "-c", COUNT_IN_ANOTHER_PROCESS, str(path), "25"], env=env)
               for _ in range(3)]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0]
    lockout = team_auth.Lockout.in_file(path, per_user="75 per 1 minute", per_address="1000 per 1 minute")
    assert lockout.limiter.storage.get(lockout.per_user.key_for("user", "alice")) == 75
    assert lockout.locked("alice", "192.0.2.1")[1] == "the user 'alice'"
    assert lockout.locked("bob", "192.0.2.1") is None  # 75 of 1000 for the address
