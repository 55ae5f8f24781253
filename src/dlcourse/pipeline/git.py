"""The commit a stage ran from, for its MLflow run's tags and the report."""

from __future__ import annotations

import subprocess


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str | None:
    """The checked-out commit, or None outside a git repository (or without git)."""
    return _git("rev-parse", "HEAD")


def git_tags() -> dict[str, str]:
    """The run's tags: its commit, and whether tracked files other than dvc.lock and params.yaml differ from it."""
    commit = git_commit()
    if commit is None:
        return {}
    status = _git("status", "--porcelain", "--untracked-files=no") or ""
    changed = [line[3:] for line in status.splitlines() if line[3:] not in {"dvc.lock", "params.yaml"}]
    return {"git.commit": commit, "git.dirty": str(bool(changed)).lower()}
