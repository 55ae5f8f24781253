"""A grid of `dvc exp run` experiments as one Slurm job array: one experiment per array task, each in a
fresh clone of the shared git remote, pushed back to it (`dvc exp push`: the experiment's git ref, and
its outputs to the repository's default DVC remote), logged to the shared MLflow tracking server.

    export MLFLOW_TRACKING_URI=http://mlflow-host:5000   # and MLFLOW_TRACKING_USERNAME/PASSWORD
    python scripts/sweep_slurm.py --remote git@host:course.git train-cnn@mnist \\
        -S train_cnn.mnist.lr=0.05,0.1 -S train_cnn.mnist.epochs=1,2 --sbatch=--time=1:00:00
    python scripts/sweep_slurm.py --status <jobid>        # each task's state, as Slurm accounts it
    python scripts/sweep_slurm.py --rerun-failed <jobid>  # a new array of the failed tasks only
    dvc exp pull origin --all-commits && dvc exp show     # then, in any clone: every experiment

The grid is `dvc exp run`'s own `-S` syntax, expanded by DVC's own parser (`a=1,2`, `range(...)`,
`choice(...)`, `file.yaml:key=...`). Every point of the grid passes check-params' own checks on the
commit's params.yaml before anything is submitted: a typo or a bad value stops the sweep there,
naming each point it breaks. The sweep is kept in the state folder (--state-dir, shared by
the submitting machine and the nodes; default ~/.cache/dlcourse/sweeps): its grid, the commit it
runs, the tasks' logs, and which array job ran which tasks, for --status and --rerun-failed.

A task that fails exits non-zero, so Slurm accounts it FAILED; and when its stage's MLflow run did not
end FAILED itself (the clone, `dvc pull` or the push failed), the task logs a FAILED run of its own,
with its params and the error. Two tasks pushing at once: a rejected push is retried.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAILED_STATES = {"FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
                 "PREEMPTED", "MISSING"}
PUSH_ATTEMPTS = 6
ROOT = Path(__file__).resolve().parents[1]


class SweepError(RuntimeError):
    pass


def run(*command: str, cwd: Path | None = None, env: dict | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SweepError(f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def grid(set_params: list[str]) -> list[list[str]]:
    """Each point of the grid as the `-S` arguments of one `dvc exp run`, by DVC's own parser."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps

    points = []
    for sweep in get_hydra_sweeps(to_path_overrides(set_params)):
        points.append([override if path == "params.yaml" else f"{path}:{override}"
                       for path, overrides in sweep.items() for override in overrides])
    return points


def check_grid(points: list[list[str]], params_yaml: str) -> None:
    """Every point of the grid through check-params' own checks (the schema, every network built on
    the meta device), applied to `params_yaml` as `dvc exp run -S` applies it, before anything is
    submitted: a typo or a bad value stops the sweep here, naming each point it breaks, rather than
    in every array task after its clone and pull."""
    from dvc.utils.hydra import apply_overrides

    from dlcourse.pipeline import params
    from dlcourse.pipeline.checks import check  # check-params' own checks beyond the schema

    errors = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "params.yaml"
        for index, point in enumerate(points):
            path.write_text(params_yaml)
            try:
                apply_overrides(path, [o for o in point if ":" not in o.partition("=")[0]])  # params.yaml's own
                check(params.load(path))
            except Exception as exc:  # noqa: BLE001 - DVC's, the schema's or a network's: each says what
                cause = exc.__cause__ if exc.__cause__ is not None and "set-param" in str(exc) else exc
                reason = str(cause).replace(str(path), "params.yaml").strip()
                errors.append(f"task {index} ({' '.join(point)}):\n    " + reason.replace("\n", "\n    "))
    if errors:
        raise SweepError(f"{len(errors)} of the {len(points)} points of the grid fail check-params; nothing was "
                         "submitted:\n  " + "\n  ".join(errors))


# --- submitting ---------------------------------------------------------------------------------------

def sbatch(sweep_dir: Path, tasks: list[int], sweep: dict) -> str:
    """Submit the array of `tasks` (indices of the grid, kept as the array's task ids); its job id."""
    command = [sys.executable, str(Path(__file__).resolve()), "--task", str(sweep_dir / "sweep.json")]
    job_id = run("sbatch", "--parsable", f"--array={','.join(map(str, tasks))}", f"--job-name={sweep['name']}",
                 f"--output={sweep_dir}/%A_%a.out", *sweep["sbatch"],
                 "--wrap", shlex.join(command)).strip().split(";")[0]  # any path, quotes included
    jobs = sweep_dir / "jobs.json"
    recorded = json.loads(jobs.read_text()) if jobs.exists() else {}
    jobs.write_text(json.dumps({**recorded, job_id: tasks}, indent=1))
    (sweep_dir.parent / "jobs").mkdir(exist_ok=True)
    (sweep_dir.parent / "jobs" / job_id).write_text(sweep_dir.name)
    return job_id


def submit(args) -> None:
    if not os.environ.get("MLFLOW_TRACKING_URI", "").startswith(("http://", "https://", "postgresql")):
        raise SweepError("MLFLOW_TRACKING_URI must name the shared MLflow server (http(s)://...) that every node "
                         "reaches: each task runs in a temporary clone, whose local mlflow.db is thrown away")
    commit = run("git", "ls-remote", args.remote, args.rev).split()
    commit = commit[0] if commit else run("git", "rev-parse", "--verify", f"{args.rev}^{{commit}}").strip()
    points = grid(args.set_params)
    try:
        params_yaml = run("git", "show", f"{commit}:params.yaml")  # the params the tasks will run on
    except SweepError:  # a commit of the remote this clone has not fetched: its own params.yaml
        params_yaml = (ROOT / "params.yaml").read_text()
    check_grid(points, params_yaml)
    name = args.name or time.strftime("sweep-%Y%m%d-%H%M%S")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise SweepError(f"--name {name!r}: letters, digits, '.', '_' and '-' only (it names git refs)")
    sweep_dir = args.state_dir / name
    if sweep_dir.exists():
        raise SweepError(f"a sweep named {name} exists already in {args.state_dir}: choose another --name")
    sweep_dir.mkdir(parents=True)
    sweep = {"name": name, "remote": args.remote, "commit": commit, "targets": args.targets, "grid": points,
             "sbatch": args.sbatch}
    (sweep_dir / "sweep.json").write_text(json.dumps(sweep, indent=1))
    job_id = sbatch(sweep_dir, list(range(len(points))), sweep)
    print(f"submitted {name}: array job {job_id}, {len(points)} tasks ({commit[:8]} of {args.remote})")
    for index, point in enumerate(points):
        print(f"  {job_id}_{index}  {name}-{index}  {' '.join(point)}")
    print(job_id)


# --- the state of an array, and its failed tasks -------------------------------------------------------

def accounted_states(job_id: str) -> dict[int, str]:
    """Each task's state: from Slurm's accounting (`sacct`), or, on a cluster without it, from its
    job-completion log (jobcomp/filetxt, what `sacct --completion` reads)."""
    result = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,State"], capture_output=True,
                            text=True)
    if result.returncode == 0 and "accounting storage is disabled" not in result.stderr.lower():
        states = {}
        for line in result.stdout.splitlines():
            task, _, state = line.partition("|")
            if "_" in task and task.split("_")[1].isdigit():
                states[int(task.split("_")[1])] = state.split()[0]  # "CANCELLED by 0": CANCELLED
        return states
    config = run("scontrol", "show", "config")
    kind = re.search(r"^JobCompType\s*=\s*(\S+)", config, re.M)
    location = re.search(r"^JobCompLoc\s*=\s*(\S+)", config, re.M)
    if not kind or kind.group(1) != "jobcomp/filetxt" or not location:
        raise SweepError("this Slurm cluster keeps no accounting (sacct) and no job-completion log: "
                         "the tasks' states are unknown")
    states = {}
    for line in Path(location.group(1)).read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("ArrayJobId") == job_id and fields.get("ArrayTaskId", "").isdigit():
            states[int(fields["ArrayTaskId"])] = fields["JobState"]
    return states


def sweep_of(job_id: str, state_dir: Path) -> tuple[Path, dict, list[int]]:
    pointer = state_dir / "jobs" / job_id
    if not pointer.exists():
        raise SweepError(f"no sweep of this state folder ({state_dir}) was submitted as job {job_id}")
    sweep_dir = state_dir / pointer.read_text().strip()
    tasks = json.loads((sweep_dir / "jobs.json").read_text())[job_id]
    return sweep_dir, json.loads((sweep_dir / "sweep.json").read_text()), tasks


def task_states(job_id: str, state_dir: Path) -> dict[int, str]:
    """Each task of the array: PENDING/RUNNING while queued, then its accounted final state; MISSING
    for a task that left the queue with no record."""
    _, _, tasks = sweep_of(job_id, state_dir)
    queued = run("squeue", "-h", "-r", "-j", job_id, "-o", "%i %T") if job_id else ""
    states = {int(task.split("_")[1]): state for task, state in (line.split() for line in queued.splitlines())
              if "_" in task and task.split("_")[1].isdigit()}
    accounted = accounted_states(job_id)
    return {task: states.get(task) or accounted.get(task, "MISSING") for task in tasks}


def rerun_failed(job_id: str, state_dir: Path) -> None:
    sweep_dir, sweep, _ = sweep_of(job_id, state_dir)
    states = task_states(job_id, state_dir)
    waiting = sorted(task for task, state in states.items() if state in {"PENDING", "RUNNING", "CONFIGURING",
                                                                         "COMPLETING", "REQUEUED", "SUSPENDED"})
    if waiting:
        raise SweepError(f"job {job_id} still has tasks queued or running ({waiting}): wait for them")
    failed = sorted(task for task, state in states.items() if state in FAILED_STATES)
    if not failed:
        print(f"job {job_id}: no failed task ({', '.join(f'{t}: {s}' for t, s in sorted(states.items()))})")
        return
    new_job = sbatch(sweep_dir, failed, sweep)
    print(f"resubmitted the failed tasks {failed} of job {job_id} as array job {new_job}")
    print(new_job)


# --- one array task ----------------------------------------------------------------------------------

def with_retries(command: list[str], cwd: Path, env: dict, what: str) -> None:
    """Run `command` again after a random, growing wait when it fails: another task pushing to the same
    git or DVC remote at the same moment makes a push rejected, or a lock taken."""
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        if result.returncode == 0:
            return
        if attempt == PUSH_ATTEMPTS:
            raise SweepError(f"{what} failed {PUSH_ATTEMPTS} times; the last:\n{result.stdout}{result.stderr}")
        wait = random.uniform(1, 2) * 2 ** (attempt - 1)
        print(f"{what} failed (attempt {attempt}), retrying in {wait:.1f} s:\n{result.stderr.strip()}",
              file=sys.stderr, flush=True)
        time.sleep(wait)


def run_task(sweep_file: Path) -> None:
    sweep = json.loads(sweep_file.read_text())
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    point, name = sweep["grid"][index], f"{sweep['name']}-{index}"
    print(f"task {index} ({name}): dvc exp run {' '.join('-S ' + o for o in point)} {' '.join(sweep['targets'])}",
          flush=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    clone = workdir / "repo"
    env = {**os.environ, "PYTHONPATH": str(clone / "src")}  # the stages import the clone's library
    env.pop("DVC_ROOT", None)
    try:
        run("git", "clone", "--quiet", "--no-checkout", sweep["remote"], str(clone))
        run("git", "checkout", "--quiet", sweep["commit"], cwd=clone)
        for key, default in (("user.name", "dl-course sweep"), ("user.email", "sweep@localhost")):
            if subprocess.run(["git", "config", key], cwd=clone, capture_output=True).returncode:
                run("git", "config", key, default, cwd=clone)
        run("dvc", "pull", "--quiet", *(["--with-deps", *sweep["targets"]] if sweep["targets"] else []),
            cwd=clone, env=env)
        result = subprocess.run(["dvc", "exp", "run", "--name", name, *(a for o in point for a in ("-S", o)),
                                 *sweep["targets"]], cwd=clone, env=env, text=True)
        if result.returncode != 0:
            raise SweepError(f"dvc exp run {name} failed ({result.returncode}); its output is above")
        with_retries(["dvc", "exp", "push", "origin", name], clone, env, f"dvc exp push origin {name}")
        print(f"task {index}: pushed experiment {name}", flush=True)
    except BaseException as error:
        record_failure(sweep, index, point, error)
        print(f"task {index} failed; its clone is kept in {clone}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)


def record_failure(sweep: dict, index: int, point: list[str], error: BaseException) -> None:
    """Unless the stage's own MLflow run of this task ended FAILED or KILLED, log a FAILED run that says
    which task failed and why: every failure of the sweep is in MLflow as in Slurm."""
    sys.path.insert(0, str(ROOT / "src"))
    import mlflow
    from dlcourse.pipeline import tracking

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    experiment = mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", tracking.EXPERIMENT))
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID", ""), str(index)
    ended = mlflow.search_runs([experiment.experiment_id], output_format="list", filter_string=(
        f"tags.`slurm.array_job_id` = '{job}' and tags.`slurm.array_task_id` = '{task}'"))
    if any(run.info.status in {"FAILED", "KILLED"} for run in ended):
        return
    tags = {"slurm.array_job_id": job, "slurm.array_task_id": task, "dvc.exp_name": f"{sweep['name']}-{index}",
            "sweep.error": str(error)[-4000:]}
    with mlflow.start_run(run_name=f"sweep task {sweep['name']}-{index}", tags=tags):
        mlflow.log_params(dict(override.split("=", 1) for override in point))
        mlflow.end_run("FAILED")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="the stages `dvc exp run` runs (default: the whole pipeline)")
    parser.add_argument("-S", "--set-param", dest="set_params", action="append", default=[],
                        help="a param and its values, as `dvc exp run -S`: key=v1,v2")
    parser.add_argument("--remote", help="the shared git remote the tasks clone and push to")
    parser.add_argument("--rev", default="HEAD", help="the commit the experiments start from [HEAD]")
    parser.add_argument("--name", help="the sweep's name; the experiments are <name>-<task> [sweep-<time>]")
    parser.add_argument("--sbatch", action="append", default=[], help="an option for sbatch (--sbatch=--time=1:00:00)")
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get(
        "DLCOURSE_SWEEP_DIR", Path.home() / ".cache" / "dlcourse" / "sweeps")),
                        help="the folder of the sweeps' state, shared with the nodes [DLCOURSE_SWEEP_DIR]")
    parser.add_argument("--status", metavar="JOBID", help="each task's state")
    parser.add_argument("--rerun-failed", metavar="JOBID", help="resubmit the failed tasks of an array job")
    parser.add_argument("--task", type=Path, help=argparse.SUPPRESS)  # what an array task runs
    args = parser.parse_args(argv)
    try:
        if args.task:
            run_task(args.task)
        elif args.status:
            for task, state in sorted(task_states(args.status, args.state_dir).items()):
                print(f"{args.status}_{task}\t{state}")
        elif args.rerun_failed:
            rerun_failed(args.rerun_failed, args.state_dir)
        else:
            if not args.remote or not args.set_params:
                parser.error("a sweep needs --remote and at least one -S")
            submit(args)
    except SweepError as error:
        raise SystemExit(f"sweep_slurm.py: {error}") from None


if __name__ == "__main__":
    main()
