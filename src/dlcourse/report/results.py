"""The stages' results as the report reads them: metrics (JSON) and curves (CSV), each missing one
named with the stage that writes it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..files import read_json
from ..pipeline.layout import METRICS, PLOTS


class Results:
    """Read access to the stages' metrics and curves, with a clear error for a missing one."""

    def __init__(self, metrics_dir: Path = METRICS, plots_dir: Path = PLOTS):
        self.metrics_dir, self.plots_dir = Path(metrics_dir), Path(plots_dir)

    def metrics(self, name: str) -> dict:
        path = self.metrics_dir / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; the stage that writes it has not run (see dvc.yaml)")
        return read_json(path)

    def optional_metrics(self, name: str) -> dict | None:
        """The metrics file, or None where the stage that would write it never does (or has not run)."""
        path = self.metrics_dir / f"{name}.json"
        return read_json(path) if path.exists() else None

    def per_model(self, stage: str) -> dict[str, dict]:
        """The metrics a per-model stage wrote, by model name ("cnn/mnist", "linear/one_epoch", ...)."""
        folder = self.metrics_dir / stage
        return {path.relative_to(folder).with_suffix("").as_posix(): read_json(path)
                for path in sorted(folder.rglob("*.json"))}

    def curve(self, name: str) -> pd.DataFrame:
        path = self.plots_dir / f"{name}.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; the stage that writes it has not run (see dvc.yaml)")
        return pd.read_csv(path)
