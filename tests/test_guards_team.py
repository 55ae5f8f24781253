"""The team server's password policy, checked before the server starts: 12 characters or more, not
the user name; nothing is started or written for a password that breaks it."""

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_a_password_within_the_policy_goes_on_to_the_next_check(tmp_path):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"),
           "MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow@127.0.0.1:1/mlflow",
           "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-enough-password"}
    result = subprocess.run([sys.executable, str(SCRIPT), "start", "--state-dir", str(tmp_path / "state")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "password" not in result.stderr.lower(), result.stderr
