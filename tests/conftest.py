import json
import os
import sys
import threading
from pathlib import Path

import pytest
from filelock import FileLock

sys.path.insert(0, str(Path(__file__).parent))

from fakedata import make_mirror
from workspace import Workspace, built_workspace

# One thread per test process: pytest-xdist runs two of them on this project's 2-core machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def shared_folder(tmp_path_factory, name: str) -> Path:
    """A folder shared by every pytest-xdist worker of this run (each worker has its own basetemp)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return base / name


def make_shared_mirror(tmp_path_factory) -> Path:
    folder = shared_folder(tmp_path_factory, "mirror")
    with FileLock(f"{folder}.lock"):
        if not (folder / "SHA256SUMS").exists():
            make_mirror(folder)
    return folder


def build_shared_workspace(tmp_path_factory) -> Path:
    """Build the tiny workspace unless a worker already did; its folder."""
    mirror = make_shared_mirror(tmp_path_factory)
    folder = shared_folder(tmp_path_factory, "built")
    with FileLock(f"{folder}.lock"):
        if not (folder / "first_run.json").exists():
            built_workspace(folder / "repo", mirror)
    return folder


def pytest_collection_modifyitems(config, items):
    """Unit tests first, then the end-to-end ones, the longest first (the same order on every worker)."""
    longest = ("test_forced_reruns", "test_a_killed_stage", "test_compare_two_learning_rates")
    def rank(item):
        if item.get_closest_marker("slow") is None:
            return 0
        return 1 if item.name.startswith(longest) else 2
    items.sort(key=rank)


def pytest_collection_finish(session):
    """When end-to-end tests will run, the first worker builds their workspace in the background
    from the start, while the unit tests run."""
    if not any(item.get_closest_marker("slow") for item in session.items):
        return
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0" or session.config.option.collectonly:
        return
    factory = session.config._tmp_path_factory
    threading.Thread(target=build_shared_workspace, args=(factory,), daemon=True, name="build-workspace").start()


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> Path:
    return make_shared_mirror(tmp_path_factory)


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Workspace:
    """The tiny workspace after one full `dvc repro`, built once per test run, whichever worker asks
    first. Read its files, never change them: a test that runs DVC in it takes `workspace`."""
    folder = build_shared_workspace(tmp_path_factory)
    ws = Workspace(folder / "repo", make_shared_mirror(tmp_path_factory))
    ws.first_run = json.loads((folder / "first_run.json").read_text())
    return ws


@pytest.fixture
def workspace(built, tmp_path) -> Workspace:
    """A copy of the built tiny workspace, the test's own to change."""
    copy = built.copy_to(tmp_path / "repo")
    copy.first_run = built.first_run
    return copy
