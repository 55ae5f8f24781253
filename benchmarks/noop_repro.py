"""Time `dvc repro` on a built workspace where nothing changed, against the 5 s goal.

    python benchmarks/noop_repro.py [WORKSPACE] [--runs N]

WORKSPACE defaults to this repository; `dvc status` must be clean there, since a repro that has
work to do would run stages instead of being timed. `dvc version` (start-up and imports) and
`dvc status` (the same checks as a no-op repro, without its locks and lock file) are timed too,
to show where the time goes. Each figure is wall time, and CPU time (user + system) beside it,
which a busy machine inflates far less.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL_S = 5.0


def dvc_executable() -> str:
    beside_python = Path(sys.executable).parent / "dvc"
    found = str(beside_python) if beside_python.exists() else shutil.which("dvc")
    if found is None:
        raise SystemExit("dvc is not installed: run `make setup`, then use .venv/bin/python")
    return found


def cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_dvc(workspace: Path, *args: str) -> tuple[tuple[float, float], str]:
    """(wall, CPU) seconds of one dvc command, and what it printed."""
    start, cpu_start = time.perf_counter(), cpu_seconds_of_children()
    result = subprocess.run([dvc_executable(), *args], cwd=workspace, capture_output=True, text=True)
    seconds = (time.perf_counter() - start, cpu_seconds_of_children() - cpu_start)
    if result.returncode != 0:
        raise SystemExit(f"`dvc {' '.join(args)}` failed in {workspace}:\n{result.stdout}{result.stderr}")
    return seconds, result.stdout


def timed_clean_status(workspace: Path) -> tuple[float, float]:
    """Time `dvc status`, and stop unless it is clean: a repro would then run stages, not be timed."""
    seconds, out = run_dvc(workspace, "status", "--json")
    changed = sorted(json.loads(out))
    if changed:
        raise SystemExit(f"{workspace}: `dvc status` is not clean ({', '.join(changed)}): a repro would run "
                         "those stages instead of being timed. Run `dvc repro` first, or pass a built workspace.")
    return seconds


def summary(name: str, times: list[tuple[float, float]]) -> str:
    wall, cpu = zip(*times)
    return (f"{name:<12} wall: median {statistics.median(wall):5.2f} s, min {min(wall):5.2f} s, max {max(wall):5.2f} s"
            f"   CPU: median {statistics.median(cpu):5.2f} s   (wall/CPU of each run: "
            f"{', '.join(f'{w:.2f}/{c:.2f}' for w, c in times)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command (default: 5)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, not {args.runs}")
    workspace = args.workspace.resolve()
    if not (workspace / "dvc.yaml").is_file():
        parser.error(f"{workspace}: no dvc.yaml here; pass the root of a built workspace")

    times: dict[str, list[tuple[float, float]]] = {"dvc version": [], "dvc status": [], "dvc repro": []}
    for _ in range(args.runs):
        times["dvc version"].append(run_dvc(workspace, "version")[0])
        times["dvc status"].append(timed_clean_status(workspace))  # checked before each repro
        seconds, out = run_dvc(workspace, "repro")
        ran = re.findall(r"Running stage '([^']+)'", out)
        if ran:
            raise SystemExit(f"`dvc repro` ran {ran} in {workspace}: the workspace changed while being timed")
        times["dvc repro"].append(seconds)

    print(f"no-op `dvc repro` in {workspace}, {args.runs} runs each")
    for name, values in times.items():
        print(summary(name, values))
    median = statistics.median(wall for wall, _ in times["dvc repro"])
    print(f"goal: under {GOAL_S:.0f} s -> {'met' if median < GOAL_S else 'MISSED'} (median wall time {median:.2f} s)")


if __name__ == "__main__":
    main()
