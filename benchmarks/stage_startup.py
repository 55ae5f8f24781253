"""Time what a stage process costs besides its own work: start-up (imports, params, the MLflow
store), model logging, and exit.

    python benchmarks/stage_startup.py [--workspace DIR] [--code LABEL=TREE ...] [--runs N] [STAGE ...]

Runs each stage as `dvc repro` does (`python stages/<script>.py [entry]` at the workspace's root),
once with each code tree (its `stages/` scripts, and its `src/` by PYTHONPATH; default: this
checkout), the trees taking turns so that a busy machine slows them alike, and prints per stage and
tree the medians of:

- startup: from the process's spawn to the start of its MLflow run;
- run: the MLflow run, from its start to its end: the stage's own work, and for a train stage the
  logging of its model (`model`, the run's metric `mlflow_model_seconds`, shown apart);
- exit: from the end of the run until the process is gone;
- wall and CPU (user + system) of the whole process; CPU is the steadier figure on a busy machine.

All from this process's clock and the run's times in MLflow, whatever the tree records itself.

A TREE that is not a folder is a git revision of this repository (`main`, `HEAD~3`), exported with
`git archive`: `--code before=main --code after=.` compares two versions side by side.
`--no-bytecode` adds, for each tree, a run that finds no compiled bytecode (`.pyc`) of any package,
as in an environment installed without it on a machine that sets PYTHONDONTWRITEBYTECODE: every
import compiled from source again, in every process (`make setup` compiles them once). Without
--workspace, the tests' tiny workspace is built in a temporary folder with just what the stages
need (`dvc repro` of them, about a minute). The stages' runs go to that workspace's `mlflow.db`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("preprocess", "evaluate@linear/one_epoch", "train-linear@one_epoch")


def cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def code_tree(spec: str, scratch: Path) -> Path:
    """A folder as it is, or a git revision of this repository exported into `scratch`."""
    if Path(spec).is_dir():
        return Path(spec).resolve()
    folder = scratch / f"code-{len(list(scratch.glob('code-*')))}"
    folder.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", spec], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def tiny_workspace(folder: Path, stages: list[str]) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from fakedata import make_mirror
    from workspace import tiny_workspace

    make_mirror(folder / "mirror")
    ws = tiny_workspace(folder / "repo", folder / "mirror")
    print(f"building the tiny workspace in {ws.path}: dvc repro {' '.join(stages)}", file=sys.stderr)
    ws.repro(*stages)
    return ws.path


def logged_run(workspace: Path, run_id: str) -> tuple[float, float, float | None]:
    """The run's start and end (seconds since the epoch) and its `mlflow_model_seconds` metric."""
    with sqlite3.connect(workspace / "mlflow.db") as db:
        start, end = db.execute("SELECT start_time, end_time FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        model = db.execute("SELECT value FROM latest_metrics WHERE run_uuid = ? AND key = 'mlflow_model_seconds'",
                           (run_id,)).fetchone()
    return start / 1000, end / 1000, model[0] if model else None


def run_stage(workspace: Path, code: Path, stage: str, extra_env: dict[str, str]) -> dict[str, float | None]:
    name, _, entry = stage.partition("@")
    command = [sys.executable, str(code / "stages" / f"{name.replace('-', '_')}.py"), *filter(None, [entry])]
    env = {**os.environ, "PYTHONPATH": str(code / "src"), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           **extra_env}
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "DVC_ROOT", "GAN_RESUME"):
        env.pop(variable, None)
    record_path = workspace / "tracking" / f"{stage}.json"
    record_path.unlink(missing_ok=True)
    spawned, cpu_start = time.time(), cpu_seconds_of_children()
    result = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True)
    ended, cpu = time.time(), cpu_seconds_of_children() - cpu_start
    if result.returncode != 0:
        raise SystemExit(f"{stage} with {code} failed:\n{result.stdout}{result.stderr}")
    times: dict[str, float | None] = {"wall": ended - spawned, "cpu": cpu, "startup": None, "run": None,
                                      "model": None, "exit": None}
    if record_path.exists():  # check-params logs no run
        run_start, run_end, model = logged_run(workspace, json.loads(record_path.read_text())["run_id"])
        times.update(startup=run_start - spawned, run=run_end - run_start, model=model, exit=ended - run_end)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="*", default=list(STAGES), metavar="STAGE")
    parser.add_argument("--workspace", type=Path, help="a built workspace (default: build the tiny one)")
    parser.add_argument("--code", action="append", metavar="LABEL=TREE",
                        help="a code tree to time (a folder or a git revision); repeat to compare")
    parser.add_argument("--runs", type=int, default=3, help="runs of each stage with each tree (medians shown)")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="also time each tree with no package's compiled bytecode found (label-nopyc)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stage-startup-") as scratch:
        trees = {}
        for spec in args.code or [f"this={ROOT}"]:
            label, _, tree = spec.partition("=")
            trees[label] = (code_tree(tree or label, Path(scratch)), {})
            if args.no_bytecode:  # an empty cache prefix: Python looks there only, and writes nothing
                empty = Path(scratch) / f"no-pyc-{label}"
                empty.mkdir()
                trees[f"{label}-nopyc"] = (trees[label][0],
                                           {"PYTHONPYCACHEPREFIX": str(empty), "PYTHONDONTWRITEBYTECODE": "1"})
        workspace = args.workspace.resolve() if args.workspace else tiny_workspace(Path(scratch), args.stages)
        times = {(stage, label): [] for stage in args.stages for label in trees}
        for run in range(args.runs):
            for stage in args.stages:
                for label, (code, extra_env) in trees.items():
                    times[stage, label].append(run_stage(workspace, code, stage, extra_env))
                    print(f"run {run + 1}/{args.runs}: {stage} ({label}) {times[stage, label][-1]['wall']:.2f} s",
                          file=sys.stderr)

    columns = ("startup", "run", "model", "exit", "wall", "cpu")
    width = max(len(stage) for stage in args.stages)
    print(f"{'stage':<{width}}  {'code':<12}" + "".join(f"{c:>9}" for c in columns) + "   (median seconds)")
    for (stage, label), runs in times.items():
        cells = []
        for column in columns:
            values = [r[column] for r in runs if r[column] is not None]
            cells.append(f"{statistics.median(values):9.2f}" if values else f"{'-':>9}")
        print(f"{stage:<{width}}  {label:<12}" + "".join(cells))


if __name__ == "__main__":
    main()
