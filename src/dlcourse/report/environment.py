"""The environment a report's numbers were measured in: code, params, versions, and per stage the
device and processor it ran on, its times and its MLflow run."""

from __future__ import annotations

import hashlib
import json
import platform
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from ..files import UnreadableFileError
from ..pipeline import tracking, versions
from ..pipeline.git import git_commit
from ..pipeline.versions import installed_version
from .results import Results

NOT_RECORDED = "not recorded"


def pipeline_stages() -> list[str]:
    """Every stage of dvc.yaml, each `foreach` entry on its own, in the file's order."""
    from dvc.repo import Repo

    with Repo() as repo:
        return [stage.addressing for stage in repo.index.stages]


def recorded_run(stage: str) -> dict | None:
    """The stage's MLflow run record (`tracking/<stage>.json`), or None when it has none yet."""
    path = tracking.TRACKING_DIR / f"{stage}.json"
    try:
        record = tracking.read_run_record(stage)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnreadableFileError) as exc:  # read_json's, naming the file
        raise ValueError(f"{path}: not valid JSON ({str(exc).removeprefix(f'{path}: ')}); "
                         f"rerun the stage `{stage}` to rewrite it") from None
    if not isinstance(record, dict) or not record.get("run_id"):
        raise ValueError(f"{path}: holds no run_id; rerun the stage `{stage}` to rewrite it")
    return record


def environment(stages: list[str], results: Results, params_path: Path = Path("params.yaml")) -> dict:
    """Versions, commit, params hash, and per stage the device it ran on and its MLflow run (from
    `tracking/<stage>.json`: the report's inputs, which its own run record is not)."""
    import torch

    rows, experiments = [], set()
    for stage in stages:
        timing = results.optional_metrics(f"timing/{stage}") or {}
        record = recorded_run(stage) or {}
        if "experiment" in record:
            experiments.add(record["experiment"])
        rows.append({"stage": stage, "device": timing.get("device"), "mlflow_run_id": record.get("run_id"),
                     "seconds": record.get("seconds"), "startup_seconds": record.get("startup_seconds"),
                     "cpu": record.get("cpu"), "environment": record.get("environment")})
    return {
        "git_commit": git_commit(),
        "params_sha256": hashlib.sha256(Path(params_path).read_bytes()).hexdigest(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": installed_version("numpy"),
        "lock_sha256": versions.file_sha256(Path(versions.LOCK_FILE)),
        "cuda": torch.version.cuda,  # None for a CPU-only build of torch
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "dvc": version("dvc"),
        "mlflow": installed_version("mlflow", "mlflow-skinny"),
        "mlflow_experiments": sorted(experiments),
        "stages": rows,
    }


def environment_section(env: dict) -> str:
    def code(value):
        return f"`{value}`" if value else NOT_RECORDED

    facts = [
        ("git commit", code(env["git_commit"])),
        ("params.yaml (sha256)", code(env["params_sha256"])),
        ("Python", env["python"]),
        ("torch", env["torch"]),
        ("numpy", env["numpy"]),
        ("CUDA (torch build)", env["cuda"] or "none: CPU-only build"),
        ("GPU", env["gpu"] or "none visible"),
        ("CPU (the stages' runs)", stage_cpus(env["stages"])),
        ("uv.lock (sha256)", code(env["lock_sha256"])),
        ("versions (the stages' runs)", stage_versions(env["stages"])),
        ("uv.lock (the stages' runs)", stage_locks(env["stages"], env["lock_sha256"])),
        ("DVC", env["dvc"]),
        ("MLflow", env["mlflow"]),
        ("MLflow experiment", ", ".join(f"`{name}`" for name in env["mlflow_experiments"]) or NOT_RECORDED),
    ]
    return (
        "## Environment\n\n"
        "The machine and code this report was built with. Devices come from `metrics/timing/` (written by the "
        "stages that train or search); processors, versions, locks, times and run ids from `tracking/<stage>.json`, "
        "the records of the runs that made the results shown (the report's own run is in `reports/run.json`).\n\n"
        + pd.DataFrame(facts, columns=["", "value"]).to_markdown(index=False) + "\n\n"
        + time_table(env["stages"]) + "\n"
    )


def stage_cpus(rows: list[dict]) -> str:
    """The processors the timed stages ran on (`tracking/<stage>.json`; "not recorded" in a record from
    before they were), each with its number of stages when there are several: times from different
    machines do not add up to one run's."""
    counts = Counter(row.get("cpu") or NOT_RECORDED for row in rows if row["seconds"] is not None)
    if len(counts) <= 1:
        return next(iter(counts), NOT_RECORDED)
    return "; ".join(f"{cpu} ({n} stage{'s' if n > 1 else ''})" for cpu, n in counts.items())


def counted(counts: Counter) -> str:
    return "; ".join(f"{value} ({n} stage{'s' if n > 1 else ''})" for value, n in counts.items())


def stage_versions(rows: list[dict]) -> str:
    """The versions that made the stages' bytes (`environment` of `tracking/<stage>.json`: Python,
    the computing packages, and CUDA and cuDNN for a stage that used them), each with its number of
    stages when there are several."""
    def described(env: dict | None) -> str:
        if not env:
            return NOT_RECORDED
        names = [("Python", "python"), ("torch", "torch"), ("torchvision", "torchvision"), ("numpy", "numpy"),
                 ("scipy", "scipy"), ("Pillow", "pillow"), ("matplotlib", "matplotlib"), ("CUDA", "cuda"),
                 ("cuDNN", "cudnn")]
        return ", ".join(f"{name} {env[key]}" for name, key in names if env.get(key))

    counts = Counter(described(row.get("environment")) for row in rows if row["mlflow_run_id"])
    return next(iter(counts)) if len(counts) == 1 else (counted(counts) or NOT_RECORDED)


def stage_locks(rows: list[dict], current: str | None) -> str:
    """The lock (`uv.lock`'s sha256) each stage's environment was installed from, and whether it is
    the checkout's: stages run under different locks are said to be, with their counts."""
    def described(env: dict | None) -> str:
        sha = (env or {}).get("lock_sha256")
        if not sha:
            return NOT_RECORDED
        return f"`{sha[:12]}`" + (" (this checkout's)" if sha == current else " (not this checkout's)")

    counts = Counter(described(row.get("environment")) for row in rows if row["mlflow_run_id"])
    if len(counts) <= 1:
        return next(iter(counts), NOT_RECORDED)
    return f"**{len(counts)} different locks**: " + counted(counts)


def seconds(value) -> str:
    return NOT_RECORDED if value is None else f"{value:.1f}"


def time_table(rows: list[dict]) -> str:
    """Per stage: the device, the wall time of its MLflow run (the work and its writes), the start-up
    before it (imports, the store's opening), and its run id; a last row adds them up."""
    timed = [row for row in rows if row["seconds"] is not None]
    total = {"stage": f"all {len(timed)} timed stages", "device": None, "mlflow_run_id": None,
             "seconds": sum(row["seconds"] for row in timed),
             "startup_seconds": sum(row["startup_seconds"] or 0.0 for row in timed)}
    table = pd.DataFrame([{"stage": f"`{row['stage']}`" if row is not total else f"**{row['stage']}**",
                           "device": row["device"] or (NOT_RECORDED if row is not total else ""),
                           "run (s)": seconds(row["seconds"]), "start-up (s)": seconds(row["startup_seconds"]),
                           "MLflow run id": f"`{row['mlflow_run_id']}`" if row["mlflow_run_id"] else
                           (NOT_RECORDED if row is not total else "")}
                          for row in [*rows, total]])
    return (table.to_markdown(index=False)
            + "\n\nTimes come from each stage's last run (`tracking/<stage>.json`); DVC's own work between "
              "stages (hashing, checking) is not in them. The report stage's own time is in `reports/run.json`.\n")
