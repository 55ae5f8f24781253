"""Fault injection: a training stage killed at a random point of its run (SIGTERM, which it
catches, or SIGKILL, which it cannot) leaves no MLflow run RUNNING once the stage starts again, no
`.part` file in a tracked output, and the next `dvc repro` gives the bytes of an uninterrupted run."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.system]


def stage_process(workspace, script: str) -> int | None:
    """The pid of the stage's own process (DVC's child running stages/<script>), if it runs yet."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if f"stages/{script}".encode() in cmdline and cwd == str(workspace.path):
            return int(proc.name)
    return None


def run_is_open(workspace, stage: str) -> bool:
    """Whether the MLflow store holds a RUNNING run of the stage: past the stage's start-up."""
    with sqlite3.connect(f"file:{workspace.path / 'mlflow.db'}?mode=ro", uri=True, timeout=5) as db:
        return db.execute("SELECT count(*) FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid "
                          "WHERE runs.status = 'RUNNING' AND tags.key = 'dvc.stage' AND tags.value = ?",
                          (stage,)).fetchone()[0] > 0


def outputs_md5(workspace, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((workspace.path / "dvc.lock").read_text())["stages"][stage]
    return {out["path"]: out["md5"] for out in lock["outs"] if not out["path"].startswith(("tracking/", "metrics/timing"))}


# Both signals on one stage; each other training script meets one of them (the same code handles both).
@pytest.mark.parametrize("stage, script, signum", [
    ("train-linear@long", "train_linear.py", signal.SIGTERM), ("train-linear@long", "train_linear.py", signal.SIGKILL),
    ("train-cnn@mnist", "train_cnn.py", signal.SIGTERM), ("train-gan@conditional", "train_gan.py", signal.SIGKILL)])
def test_a_killed_stage_leaves_nothing_broken(workspace, stage, script, signum):
    from mlflow.tracking import MlflowClient

    workspace.plain_processes()  # the stage's own process, as `dvc repro` starts it, is the one killed
    if stage == "train-linear@long":  # the tiny run ends in a blink: long enough to be killed midway
        workspace.set_param("train_linear.long.iterations", 3000)  # about 5 s of training
        assert workspace.repro("--single-item", stage) == [stage]
    finished_before = 2 if stage == "train-linear@long" else 1
    expected = outputs_md5(workspace, stage)
    repro = subprocess.Popen(["dvc", "repro", "--force", "--single-item", stage], cwd=workspace.path,
                             env=workspace.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while (pid := stage_process(workspace, script)) is None or not run_is_open(workspace, stage):
        assert repro.poll() is None and time.monotonic() < deadline, "the stage never opened its MLflow run"
        time.sleep(0.05)
    time.sleep(random.Random(f"{stage}{signum}").uniform(0.0, 0.5))  # somewhere in its run
    os.kill(pid, signum)
    output, _ = repro.communicate(timeout=120)
    assert repro.returncode != 0, output

    assert workspace.repro("--single-item", stage) == [stage]  # a plain repro starts it afresh and completes
    client = MlflowClient(f"sqlite:///{workspace.path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("dl-course").experiment_id],
                              f"tags.`dvc.stage` = '{stage}'")
    statuses = sorted(run.info.status for run in runs)
    assert statuses == ["FINISHED"] * (finished_before + 1) + ["KILLED"], statuses  # before, the kill's, the rerun's
    assert not [p for p in workspace.path.rglob("*.part") if ".dvc" not in p.parts]
    assert outputs_md5(workspace, stage) == expected
    assert json.loads((workspace.path / "tracking" / f"{stage}.json").read_text())["run_id"] in \
        {run.info.run_id for run in runs if run.info.status == "FINISHED"}


# The stage's resume path, on the era with the most state (moving average, per-pixel noise); that every
# era's training resumes bit for bit is test_gan_eras' (in-process).
@pytest.mark.parametrize("entry", ["stylegan-2019"])
def test_a_resumed_gan_redraws_what_a_kill_left_out_and_refuses_another_runs_checkpoints(workspace, entry):
    stage = f"train-gan@{entry}"
    samples, checkpoints = workspace.path / f"plots/gan/{entry}/samples", workspace.path / f"models/gan/{entry}"
    expected = outputs_md5(workspace, stage)
    drawn = (samples / "epoch_02.png").read_bytes()
    (samples / "epoch_02.png").unlink()  # as a kill between a checkpoint and its samples left it (before this order)
    (checkpoints / "epoch_02.pt").unlink()  # killed during epoch 2: resumed from epoch 1
    (checkpoints / ".epoch_03.pt.x1y2.part").write_bytes(b"half a checkpoint")
    workspace.env["GAN_RESUME"] = "1"
    assert workspace.repro("--force", "--single-item", stage) == [stage]
    assert (samples / "epoch_02.png").read_bytes() == drawn
    assert not list(checkpoints.glob("*.part"))
    assert outputs_md5(workspace, stage) == expected  # the resumed run ends where an uninterrupted one does

    lr = workspace.params()["train_gan"][entry]["lr_g"]
    workspace.set_param(f"train_gan.{entry}.lr_g", 0.01)
    output = workspace.run("dvc", "repro", "--single-item", stage, check=False)
    assert "cannot resume from a checkpoint of another run" in output and \
        f"train_gan.{entry}.lr_g: checkpoint {lr}, now 0.01" in output and \
        "a plain `dvc repro` (without GAN_RESUME=1) starts afresh" in output, output
    del workspace.env["GAN_RESUME"]
    assert stage in workspace.repro("--single-item", stage)
