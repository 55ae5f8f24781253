"""The whole default pipeline, timed: `dvc repro` in a fresh clone of this repository's HEAD (or in
`--workspace` as it is), then the wall time and each stage's own time from its run record
(`tracking/<stage>.json`: the MLflow run's seconds and the process's start-up before it, what the
report's time table shows), slowest first. The goal on one H100-class GPU: under 3 minutes.

Run: DATA_MIRROR=../shared/datasets python benchmarks/full_repro.py [--workspace DIR] [--force] [--timeout S]
(`--force`: every stage reruns, `dvc repro --force`, its outputs there or not.)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stage_times(workspace: Path, since: float) -> list[dict]:
    """The run records written since `since` (the committed ones are another machine's)."""
    rows = []
    for record in sorted((workspace / "tracking").rglob("*.json")):
        if record.stat().st_mtime < since:
            continue
        run = json.loads(record.read_text())
        if "seconds" in run:
            rows.append({"stage": run["stage"], "seconds": run["seconds"], "startup_seconds": run["startup_seconds"]})
    return sorted(rows, key=lambda row: -row["seconds"] - row["startup_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", type=Path, help="run here as it is (default: a fresh clone of HEAD)")
    parser.add_argument("--timeout", type=float, help="stop dvc repro after this many seconds")
    parser.add_argument("--keep-going", action="store_true", help="dvc repro --keep-going: past a failed stage")
    parser.add_argument("--force", action="store_true", help="dvc repro --force: every stage, outputs there or not")
    args = parser.parse_args()
    workspace = args.workspace
    if workspace is None:
        workspace = Path(tempfile.mkdtemp()) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(workspace)], check=True)
    print(f"dvc repro in {workspace} (DATA_MIRROR={os.environ.get('DATA_MIRROR')})", flush=True)
    start, since = time.perf_counter(), time.time()
    try:
        command = [sys.executable, "-m", "dvc", "repro", *(["--keep-going"] if args.keep_going else []),
                   *(["--force"] if args.force else [])]
        # the workspace's own code: this environment's editable install points at this checkout's src/
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(workspace.resolve() / "src"),
                                                                        os.environ.get("PYTHONPATH")]))}
        finished = subprocess.run(command, cwd=workspace, env=env, timeout=args.timeout).returncode == 0
    except subprocess.TimeoutExpired:
        finished = False
    wall = time.perf_counter() - start
    rows = stage_times(workspace, since)
    for row in rows:
        print(f"{row['stage']:<34} {row['seconds']:8.1f} s  (+ start-up {row['startup_seconds']:.1f} s)")
    run_total = sum(r["seconds"] for r in rows)
    startup_total = sum(r["startup_seconds"] for r in rows)
    print(json.dumps({"finished": finished, "wall_seconds": round(wall, 1), "stages": len(rows),
                      "stage_seconds": round(run_total, 1), "startup_seconds": round(startup_total, 1),
                      "dvc_overhead_seconds": round(wall - run_total - startup_total, 1)}))


if __name__ == "__main__":
    main()
