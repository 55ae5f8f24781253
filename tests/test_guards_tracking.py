"""The MLflow store: a SQLite store held by another process is waited for as the README says (20 s),
then named in one line; the URI MLflow gets carries that wait."""

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlcourse.pipeline import store

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("uri, given", [
    ("sqlite:////abs/mlflow.db", "sqlite:////abs/mlflow.db?timeout=20"),
    ("sqlite:///rel.db?mode=rw", "sqlite:///rel.db?mode=rw&timeout=20"),
    ("sqlite:///rel.db?timeout=60", "sqlite:///rel.db?timeout=60"),  # the user's own wait is kept
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("./mlruns", "./mlruns"),
])
def test_a_sqlite_store_is_given_the_documented_wait(uri, given):
    assert store.with_sqlite_wait(uri) == given


STAGE = """
from dlcourse.pipeline import tracking
with tracking.stage_run("train-linear@x", {"lr": 0.1}) as run:
    run.log_metrics({"a": 1.0})
"""


def test_a_locked_store_is_waited_for_then_named_in_one_line(tmp_path):
    env = {**os.environ, "DVC_ROOT": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)
    first = subprocess.run([sys.executable, "-c", STAGE], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stderr  # the store exists, with its schema
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process's long transaction
    try:
        start = time.monotonic()
        second = subprocess.run([sys.executable, "-c", STAGE], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=120)
        waited = time.monotonic() - start
    finally:
        holder.rollback()
        holder.close()
    assert second.returncode != 0
    assert waited >= store.SQLITE_WAIT_S  # not sqlite3's default 5 s
    last = second.stderr.strip().splitlines()[-1]
    assert last == (f"dlcourse.pipeline.store.TrackingError: MLflow store sqlite:///{tmp_path / 'mlflow.db'} stayed locked "
                    "for 20 s by another process (a stage, `mlflow ui` or a server on it, a sqlite3 shell in a "
                    "transaction); let it finish or stop it, then rerun")
    assert "sqlalchemy" not in second.stderr.lower()
    assert not (tmp_path / "tracking" / "train-linear@x.json").read_text() == ""  # the first run's record stays
