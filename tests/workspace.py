"""The tiny workspace: a copy of the repository with tiny params, run on a tiny generated mirror.

`conftest.py` builds one per test session (a full `dvc repro`, its results committed) and gives
each test that changes it a copy of its own (`Workspace.copy_to`): git, DVC cache and MLflow
store included, at the cost of copying a few megabytes instead of rerunning the pipeline.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

import stage_server

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_RESULTS = ("dvc.lock", "metrics/", "plots/", "reports/", "tracking/")  # the real run's: left out
# Where an MLflow store names the folders of its artifacts: the experiment's, each run's, each
# logged model's (MLflow 3) and each registered version's.
ARTIFACT_LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                      ("logged_models", "artifact_location"), ("model_versions", "storage_location"))
TINY_PROFILE = "profiles/tiny.yaml"  # every stage in seconds on the tiny mirror


class Workspace:
    def __init__(self, path: Path, mirror: Path):
        self.path, self.mirror = Path(path), Path(mirror)
        self.env = {**os.environ, "DATA_MIRROR": str(mirror),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                    "PYTHONPATH": str(self.path / "src"),  # its own library, not the checkout's installed one
                    "CUDA_VISIBLE_DEVICES": "",  # `device: auto` is the CPU, where training is byte-reproducible
                    "OMP_NUM_THREADS": "1"}  # tiny data: one thread each, so that test workers do not fight
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "DVC_ROOT", "GAN_RESUME"):
            self.env.pop(name, None)
        server = stage_server.shared(self.env)
        if server is not None:  # stages start as forks of a server that has imported torch and MLflow
            self.env = server.env(self.env)

    def plain_processes(self) -> None:
        """Stages start as plain `python` processes from now on (tests about processes themselves)."""
        self.env.pop(stage_server.SOCKET_VARIABLE, None)

    def run(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(args, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=900)
        assert not check or result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout + ("" if check else result.stderr)

    def repro(self, *args: str) -> list[str]:
        """The stages that `dvc repro` ran."""
        return re.findall(r"Running stage '([^']+)'", self.run("dvc", "repro", *args))

    def out_of_date(self) -> list[str]:
        """The stages `dvc status` names, asked of DVC's API in this process (a `dvc` command would
        spend a second or two starting up)."""
        from dvc.repo import Repo

        with Repo(str(self.path)) as repo:  # named as from elsewhere: `<path>/dvc.yaml:<stage>`
            return sorted(name.rpartition(":")[2] for name in repo.status())

    def stages(self) -> list[str]:
        return [line.split()[0] for line in self.run("dvc", "stage", "list").splitlines() if line.strip()]

    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text())

    def edit_params(self, edit) -> None:
        """Edit params.yaml as a person would: its comments, anchors and layout kept (ruamel's round
        trip), so that a value put back gives back the same file."""
        from ruamel.yaml import YAML

        round_trip = YAML()
        round_trip.width = 4096  # a long line stays one line
        path = self.path / "params.yaml"
        edited = io.StringIO()
        round_trip.dump(edit(round_trip.load(path.read_text())), edited)
        path.write_text(edited.getvalue())

    def set_param(self, key: str, value) -> None:
        """Set one dotted key (`train_linear.one_epoch.lr`); it must exist and change."""
        def edit(params: dict) -> dict:
            *sections, name = key.split(".")
            section = params
            for part in sections:
                section = section[part]
            assert name in section, f"params.yaml has no {key}"
            assert section[name] != value, f"{key} is already {value!r}: no edit"
            section[name] = value
            return params

        self.edit_params(edit)

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)

    def copy_to(self, destination: Path) -> Workspace:
        """A copy of this workspace whose MLflow store keeps its artifacts inside the copy."""
        shutil.copytree(self.path, destination, symlinks=True)
        store = destination / "mlflow.db"
        if store.exists():
            with sqlite3.connect(store) as db:
                for table, column in ARTIFACT_LOCATIONS:
                    db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)",
                               (self.path.as_uri(), Path(destination).as_uri()))
        copy = Workspace(destination, self.mirror)
        copy.env = {**self.env, "PYTHONPATH": copy.env["PYTHONPATH"]}
        return copy


def copy_repository(destination: Path) -> None:
    """The project's files as git sees them (committed or not, ignored ones left out), without the
    committed results of the real run, but with every .gitignore: what the copy commits is what the
    repository would."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file() and (not name.startswith(COMMITTED_RESULTS) or source.name == ".gitignore"):
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def tiny_workspace(path: Path, mirror: Path, profile: str = TINY_PROFILE) -> Workspace:
    """A copy of the repository with tiny params (the profile applied as a user applies one),
    committed to a fresh git repository."""
    copy_repository(path)
    ws = Workspace(path, mirror)
    ws.run("python", "scripts/apply_profile.py", profile)
    ws.run("git", "init", "-q")
    ws.commit("tiny")
    return ws


def built_workspace(path: Path, mirror: Path) -> Workspace:
    """The tiny workspace after a full `dvc repro`, its results committed; the stages that ran, in
    order, in `first_run.json` beside it."""
    ws = tiny_workspace(path, mirror)
    ran = ws.repro()
    ws.commit("tiny results")
    (path.parent / "first_run.json").write_text(json.dumps(ran))
    return ws


def stop_group(server: subprocess.Popen, timeout: float = 30) -> None:
    """End a server started in a process group of its own (`start_new_session=True`): SIGTERM to the
    group (`mlflow ui` and `mlflow models serve` run their server in a child process), SIGKILL if it
    is still there after `timeout` seconds."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
