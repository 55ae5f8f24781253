"""The stages' results as the report reads them: metrics (JSON) and curves (CSV), each missing,
empty or non-finite one named with the stage that writes it. Only the entries params.yaml names
are read: the outputs of an entry since removed, which DVC leaves in place, are listed apart
(`Results.leftovers`, `leftover_warning`), never judged."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pandas as pd

from ..files import read_json, rebuild_hint
from ..pipeline import layout
from ..pipeline.layout import METRICS, PLOTS


class ClaimError(ValueError):
    """A measurement a verdict would rest on is missing, empty or not a number (claims.py's error,
    defined here because Results raises it too)."""


def entries_of(p) -> dict[str, list[str]]:
    """The entries a `params.Params` names, by the metrics folder of the stage that runs them."""
    return {"linear": list(p.train_linear), "cnn": list(p.train_cnn), "evaluate": list(p.evaluate.models),
            "attack": list(p.attack.models), "fooling": list(p.fooling), "gan": list(p.train_gan)}


def leftover_warning(paths: list[Path]) -> str | None:
    """One warning for the outputs of removed entries, with the command that removes them."""
    if not paths:
        return None
    return (f"warning: {len(paths)} file(s) under metrics/ or plots/ belong to no entry of params.yaml (an entry "
            f"removed or renamed; DVC leaves its outputs): not read, not reported. Remove them with:\n  "
            f"rm -rf -- {shlex.join(p.as_posix() for p in paths)}")


def _not_empty(metrics, path: Path):
    """A metrics file holds a non-empty mapping: `{}` or `[]` is no measurement."""
    if not isinstance(metrics, dict) or not metrics:
        raise ClaimError(f"{path}: holds no metrics ({json_kind(metrics)}); {rebuild_hint(path)}")
    return metrics


def json_kind(value) -> str:
    return "an empty mapping" if value == {} else f"a {type(value).__name__}, not a mapping"


class Results:
    """Read access to the stages' metrics and curves, with a clear error for a missing one."""

    def __init__(self, metrics_dir: Path = METRICS, plots_dir: Path = PLOTS,
                 entries: dict[str, list[str]] | None = None):
        """`entries`: the names of each per-entry stage's entries (`entries_of`); by default those
        params.yaml names, read when first needed. Only these are read: the outputs of an entry
        removed from params.yaml, which DVC leaves in place, are never judged (see `leftovers`)."""
        self.metrics_dir, self.plots_dir = Path(metrics_dir), Path(plots_dir)
        self._entries = entries

    @property
    def entries(self) -> dict[str, list[str]]:
        if self._entries is None:
            from ..pipeline.params import load

            self._entries = entries_of(load())
        return self._entries

    def expected(self) -> tuple[set[str], set[str]]:
        """What the named entries write: metrics files (relative to metrics_dir), and the files or
        folders of plots_dir (relative), each stage's own; the paths as pipeline/layout.py names them."""
        e = self.entries
        stages = [*(f"train-linear@{r}" for r in e["linear"]), *(f"train-cnn@{n}" for n in e["cnn"]),
                  *(f"evaluate@{m}" for m in e["evaluate"]), *(f"attack@{m}" for m in e["attack"]),
                  *(f"fooling@{d}" for d in e["fooling"]), *(f"train-gan@{g}" for g in e["gan"]),
                  *(f"score-gan@{g}" for g in e["gan"])]
        metrics = [layout.DATA_SUMMARY, *(layout.training_metrics(f"linear/{r}") for r in e["linear"]),
                   *(layout.training_metrics(f"cnn/{n}") for n in e["cnn"]),
                   *(layout.evaluation_metrics(m) for m in e["evaluate"]),
                   *(layout.attack_metrics(m) for m in e["attack"]),
                   *(layout.fooling_metrics(d) for d in e["fooling"]),
                   *(layout.gan_metrics(g, name) for g in e["gan"] for name in ("scores", "train")),
                   *(layout.timing(stage) for stage in stages)]
        plots = [*(layout.training_curve(f"linear/{r}") for r in e["linear"]),
                 *(layout.training_curve(f"cnn/{n}") for n in e["cnn"]),
                 *(layout.evaluation(m) for m in e["evaluate"]), *(layout.attack(m) for m in e["attack"]),
                 *(layout.fooling_plots(d) for d in e["fooling"]), *(layout.gan_plots(g) for g in e["gan"])]
        return ({path.relative_to(METRICS).as_posix() for path in metrics},
                {path.relative_to(PLOTS).as_posix() for path in plots})

    def leftovers(self) -> list[Path]:
        """Files of metrics_dir and plots_dir that no entry of params.yaml writes: the outputs of an
        entry since removed or renamed (DVC leaves them in place), never read, listed for removal."""
        metrics, plots = self.expected()
        found = [path for path in sorted(self.metrics_dir.rglob("*.json"))
                 if path.relative_to(self.metrics_dir).as_posix() not in metrics]
        if self.plots_dir.exists():
            sections = {part.split("/")[0] for part in plots}
            for path in sorted(self.plots_dir.rglob("*")):
                relative = path.relative_to(self.plots_dir).as_posix()
                if not path.is_file() or relative.split("/")[0] not in sections:
                    continue
                if not any(relative == p or relative.startswith(f"{p}/") for p in plots):
                    found.append(path)
        return found

    def metrics(self, name: str) -> dict:
        path = self.metrics_dir / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; the stage that writes it has not run: {rebuild_hint(path)}")
        return _not_empty(read_json(path), path)

    def optional_metrics(self, name: str) -> dict | None:
        """The metrics file, or None where the stage that would write it never does (or has not run)."""
        path = self.metrics_dir / f"{name}.json"
        return read_json(path) if path.exists() else None

    def per_model(self, stage: str) -> dict[str, dict]:
        """The metrics a per-entry stage wrote (linear, cnn, evaluate, attack, fooling), by the name of
        each entry params.yaml names ("cnn/mnist", "one_epoch", ...), in the order of their files' paths."""
        return {name: self.metrics(f"{stage}/{name}") for name in self.names(stage)}

    def names(self, stage: str) -> list[str]:
        """The entries of a stage, in the order of their metrics files' paths (the report's order)."""
        suffix = "/scores.json" if stage == "gan" else ".json"
        return sorted(self.entries[stage], key=lambda name: f"{name}{suffix}")

    def curve(self, name: str) -> pd.DataFrame:
        path = self.plots_dir / f"{name}.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; the stage that writes it has not run: {rebuild_hint(path)}")
        try:
            frame = pd.read_csv(path)
        except (ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
            raise ClaimError(f"{path}: not a readable CSV ({exc}); {rebuild_hint(path)}") from None
        if frame.empty:
            raise ClaimError(f"{path}: no rows; {rebuild_hint(path)}")
        if not np.isfinite(frame.select_dtypes("number").to_numpy(dtype=float)).all():
            raise ClaimError(f"{path}: holds NaN or infinite values (empty cells?); {rebuild_hint(path)}")
        return frame
