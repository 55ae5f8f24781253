import json
import os
import sys
from pathlib import Path

import pytest
from filelock import FileLock

sys.path.insert(0, str(Path(__file__).parent))

from fakedata import make_mirror  # noqa: E402
from workspace import Workspace, built_workspace  # noqa: E402

# One thread per test process: pytest-xdist runs two of them on this project's 2-core machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def shared_folder(tmp_path_factory, name: str) -> Path:
    """A folder shared by every pytest-xdist worker of this run (each worker has its own basetemp)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return base / name


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> Path:
    folder = shared_folder(tmp_path_factory, "mirror")
    with FileLock(f"{folder}.lock"):
        if not (folder / "SHA256SUMS").exists():
            make_mirror(folder)
    return folder


@pytest.fixture(scope="session")
def built(tmp_path_factory, mirror) -> Workspace:
    """The tiny workspace after one full `dvc repro`, built once per test run, whichever worker asks
    first. Read its files, never change them: a test that runs DVC in it takes `workspace`."""
    folder = shared_folder(tmp_path_factory, "built")
    with FileLock(f"{folder}.lock"):
        if not (folder / "first_run.json").exists():
            built_workspace(folder / "repo", mirror)
    ws = Workspace(folder / "repo", mirror)
    ws.first_run = json.loads((folder / "first_run.json").read_text())
    return ws


@pytest.fixture
def workspace(built, tmp_path) -> Workspace:
    """A copy of the built tiny workspace, the test's own to change."""
    copy = built.copy_to(tmp_path / "repo")
    copy.first_run = built.first_run
    return copy
