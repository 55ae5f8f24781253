"""The installed versions of the project's distributions: the models logged to MLflow name them as
their requirements, each stage's run record holds those that made its bytes, and the report's
environment section shows them."""

from __future__ import annotations

import hashlib
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def installed_version(*distributions: str) -> str | None:
    """The version of the first of these distributions that is installed (MLflow comes as `mlflow`
    or as its lighter `mlflow-skinny`)."""
    for distribution in distributions:
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return None


LOCK_FILE = "uv.lock"  # the whole environment's lock (make setup installs it)


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _distribution_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# The packages whose version moves outputs' bytes: the numerics (torch, torchvision, numpy, scipy)
# and the images (Pillow writes the PNGs, matplotlib draws the figures: a minor release of it
# redraws every figure). Asking each its version takes milliseconds; the whole environment's
# would take a third of a second per stage.
COMPUTING_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pillow", "matplotlib")


def environment_versions(root: Path) -> dict[str, str | None]:
    """The versions that matter to a stage's bytes: Python, the COMPUTING_PACKAGES, the sha256 of
    the lock (`uv.lock`) the environment was installed from, and CUDA, cuDNN and the GPU when the
    stage used CUDA (asked once the stage's work is done; a stage that never imported torch never
    used it)."""
    versions = {"python": platform.python_version(),
                **{name: _distribution_version(name) for name in COMPUTING_PACKAGES},
                "lock_sha256": file_sha256(root / LOCK_FILE)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        versions.update(cuda=torch.version.cuda, cudnn=str(torch.backends.cudnn.version()),
                        gpu=torch.cuda.get_device_name())
    return versions
