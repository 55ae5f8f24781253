"""Reproduce, with one `dvc repro`, the results of an introductory deep-learning course."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
