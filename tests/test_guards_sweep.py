"""Sweeps: every point of a grid passes check-params before anything is submitted, and the job
script is quoted with shlex whatever the state folder's path."""

import importlib.util
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "scripts" / "sweep_slurm.py"


@pytest.fixture(scope="module")
def sweep_slurm():
    spec = importlib.util.spec_from_file_location("sweep_slurm", SWEEP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PARAMS = (ROOT / "params.yaml").read_text()


@pytest.mark.parametrize("set_params, bad, reasons", [
    (["train_linear.one_epoch.lrr=0.1,0.2"], [0, 1], ["Could not override 'train_linear.one_epoch.lrr'"]),
    (["train_linear.one_epoch.lr=-5,abc,0.01"], [0, 1],
     ["train_linear.one_epoch.lr: Input should be greater than 0 (got -5)",
      "train_linear.one_epoch.lr: Input should be a valid number (got 'abc')"]),
    (["train_cnn.mnist.lr=0.1,inf"], [1], ["train_cnn.mnist.lr: must be a finite number (got inf)"]),
    (["train_gan.conditional.latent_dim=64,60000"], [1],
     ["params.yaml: train_gan.conditional: the dcgan-conditional generator (latent_dim 60000, width 32) has "
      "188,224,833 parameters, over the budget"]),
    (["seed=0,4294967296"], [1], ["seed: Input should be less than or equal to 4294967295"]),
])
def test_a_grid_with_bad_points_is_refused_naming_each_before_anything_is_submitted(sweep_slurm, set_params, bad,
                                                                                     reasons):
    points = sweep_slurm.grid(set_params)
    with pytest.raises(sweep_slurm.SweepError) as err:
        sweep_slurm.check_grid(points, PARAMS)
    message = str(err.value)
    assert message.startswith(f"{len(bad)} of the {len(points)} points of the grid fail check-params; nothing was "
                              "submitted")
    assert [int(line.split()[1]) for line in message.splitlines() if line.startswith("  task ")] == bad
    for reason in reasons:
        assert reason in message
    assert "/tmp" not in message  # the file checked is named params.yaml, as the user knows it


def test_a_valid_grid_passes(sweep_slurm):
    sweep_slurm.check_grid(sweep_slurm.grid(["train_cnn.mnist.lr=0.05,0.2", "seed=1,2"]), PARAMS)


def test_a_grid_is_checked_before_the_state_folder_or_sbatch(sweep_slurm, tmp_path, monkeypatch):
    calls = []

    def fake_run(*command, **kwargs):
        calls.append(command)
        if command[:2] == ("git", "ls-remote"):
            return "0123456789abcdef0123456789abcdef01234567\tHEAD\n"
        if command[:2] == ("git", "show"):
            return PARAMS
        raise AssertionError(f"not expected before the grid is checked: {command}")

    monkeypatch.setattr(sweep_slurm, "run", fake_run)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    args = type("Args", (), {"remote": "git@host:x.git", "rev": "HEAD", "set_params": ["train_linear.long.lrr=1"],
                             "name": "s1", "state_dir": tmp_path / "state", "targets": [], "sbatch": []})
    with pytest.raises(sweep_slurm.SweepError, match="nothing was submitted"):
        sweep_slurm.submit(args)
    assert not (tmp_path / "state").exists()
    assert [c[:2] for c in calls] == [("git", "ls-remote"), ("git", "show")]


def test_the_job_script_is_quoted_whatever_the_state_folders_path(sweep_slurm, tmp_path, monkeypatch):
    sweep_dir = tmp_path / "it's a \"sweep\" $HOME; rm -rf x" / "s1"
    sweep_dir.mkdir(parents=True)
    submitted = []

    def fake_run(*command, **kwargs):
        submitted.append(command)
        return "42;cluster\n"

    monkeypatch.setattr(sweep_slurm, "run", fake_run)
    assert sweep_slurm.sbatch(sweep_dir, [0, 1], {"name": "s1", "sbatch": []}) == "42"
    wrap = submitted[0][submitted[0].index("--wrap") + 1]
    assert shlex.split(wrap) == [sweep_slurm.sys.executable, str(SWEEP), "--task", str(sweep_dir / "sweep.json")]
