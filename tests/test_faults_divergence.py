"""Fault suite: a training stage whose run blows up (a huge learning rate) stops with an error naming
the stage, where it diverged and the params to suspect; its MLflow run ends FAILED; no model file,
metric, curve, run record or registered model version is left. Each stage runs as DVC runs it (its
script, in a project folder), on tiny prepared MNIST data."""

import copy
import functools
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from fakedata import digits
from workspace import TINY_PROFILE

from dlcourse.course import data
from dlcourse.pipeline import params

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def tiny_params() -> dict:
    """The repository's params with the tests' tiny profile applied, as a user applies it."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
        subprocess.run([sys.executable, str(ROOT / "scripts/apply_profile.py"), str(ROOT / TINY_PROFILE)], cwd=folder,
                       check=True, capture_output=True)
        return params.read_yaml(Path(folder) / "params.yaml")


def project(folder: Path, key: str, value) -> dict:
    """A project folder: the repository's params made tiny, `key` set to `value`, prepared MNIST data."""
    raw = copy.deepcopy(tiny_params())
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[last] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    (folder / "dvc.yaml").write_bytes((ROOT / "dvc.yaml").read_bytes())  # the params each stage logs
    rng = np.random.default_rng(0)
    for split, n in (("train", 256), ("test", 128)):
        images, labels = digits(n, rng)
        data.save_split(folder / "data/prepared/mnist" / f"{split}.pt", images[:, None], labels,
                        [str(k) for k in range(10)])
    return raw


def run_stage(folder: Path, script: str, entry: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_ROOT": str(folder), "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, str(ROOT / "stages" / script), entry], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


CASES = [
    # (stage script, entry, key set, value, where it diverged, the params named)
    ("train_cnn.py", "mnist", "train_cnn.mnist.lr", 1e30, r"loss is nan \(the mean of epoch 1 of 1\)",
     ["train_cnn.mnist.lr=1e+30", "train_cnn.mnist.weight_decay=0.0005"]),
    ("train_linear.py", "one_epoch", "train_linear.one_epoch.lr", 1e36, r"loss is (nan|inf) at step \d+ of 10",
     ["train_linear.one_epoch.lr=1e+36", "train_linear.one_epoch.momentum=0.9"]),
    ("train_gan.py", "gan-2014", "train_gan.gan-2014.lr_d", 1e30,
     r"loss is \S+ \(generator\), \S+ \(discriminator\) at generator step \d \(epoch 1 of 2\)",
     ["train_gan.gan-2014.lr_d=1e+30", "train_gan.gan-2014.lr_g=0.1"]),
]


@pytest.mark.parametrize("script, entry, key, value, where, suspects", CASES)
def test_a_run_that_blows_up_stops_and_leaves_nothing(tmp_path, script, entry, key, value, where, suspects):
    project(tmp_path, key, value)
    if script == "train_gan.py":  # all 256 images, in batches of 64: 2 generator steps per epoch
        raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
        raw["train_gan"][entry].update(epoch_images=128, batch_size=64)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}  # params.yaml, dvc.yaml, the data
    result = run_stage(tmp_path, script, entry)
    assert result.returncode == 1, result.stderr
    stage = f"{script.removesuffix('.py').replace('_', '-')}@{entry}"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{stage}: training diverged: "), last
    assert re.search(where, last), last
    assert "nothing was written, logged as a model or registered" in last
    for suspect in suspects:
        assert suspect in last
    assert "Traceback" not in result.stderr
    left = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")} - before
    # the MLflow store alone (and its lock): no models/, metrics/, plots/ or tracking/ output
    assert {p.parts[0] for p in left} <= {"mlflow.db", "mlflow.db.lock", "mlartifacts"}, sorted(map(str, left))
    assert not [p for p in left if p.parts[0] == "mlartifacts" and p.is_file()]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("FAILED",)]
        assert db.execute("SELECT count(*) FROM model_versions").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM registered_models").fetchone() == (0,)


def test_an_attack_on_a_network_whose_input_gradient_is_zero_stops_and_writes_nothing(tmp_path):
    """A network whose every unit is dead (here: every weight 0) gives every image a zero input gradient:
    FGSM moves no pixel, its accuracy and PSNR (infinite) say nothing. The attack stage says so, names
    the model and writes nothing, rather than a table of attacks that never happened."""
    import torch

    from dlcourse.course.models import Classifier, save_classifier

    raw = project(tmp_path, "attack.subset", 64)
    entry = raw["train_cnn"]["mnist"]
    dead = Classifier(entry["architecture"], entry["model"], 1)
    with torch.no_grad():
        for parameter in dead.parameters():
            parameter.zero_()
    save_classifier(dead, "mnist", [str(k) for k in range(10)], tmp_path / "models/cnn/mnist.pt")
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    result = run_stage(tmp_path, "attack.py", "cnn/mnist")
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r"attack@cnn/mnist: fgsm at eps [\d.]+ \(selection\), .* moved no pixel of any image: the "
                    r"network's input gradient is zero everywhere \(\d+\.\d % clean accuracy", last), last
    assert "nothing written. Retrain cnn/mnist" in last
    assert "Traceback" not in result.stderr
    left = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")} - before
    assert {p.parts[0] for p in left} <= {"mlflow.db", "mlflow.db.lock", "mlartifacts"}, sorted(map(str, left))
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("FAILED",)]
