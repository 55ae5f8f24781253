import hashlib
import os
import platform
import select
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import version

import pytest

from dlcourse.pipeline import dvc_params, process, store, tracking, versions


def test_project_root_finds_the_repository_from_a_queued_experiment(monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo/.dvc/tmp/exps/tmpabc123"))
    assert store.project_root() == (tmp_path / "repo").resolve()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    assert store.project_root() == (tmp_path / "repo").resolve()


def test_unreachable_server_fails_fast(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.perf_counter()
    with pytest.raises(store.TrackingError, match="http://127.0.0.1:9 is unreachable"):
        with tracking.stage_run("train-linear@x", {"lr": 0.1}):
            pytest.fail("the stage body must not run")
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "tracking").exists()


def test_stage_run_logs_params_metrics_curves_and_tags(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    (tmp_path / "weights.bin").write_bytes(b"w")
    with tracking.stage_run("train-linear@x", {"lr": 0.1, "nested": {"k": 2}}) as run:
        run.log_metrics({"test_accuracy": 0.9})
        run.log_curve("curve", [0, 10], [0.1, 0.5])
        run.log_artifact(tmp_path / "weights.bin")
    from mlflow.tracking import MlflowClient

    record = tracking.read_run_record("train-linear@x")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = client.get_run(record["run_id"])
    assert logged.data.params == {"lr": "0.1", "nested.k": "2"}
    assert logged.data.metrics["test_accuracy"] == 0.9
    assert logged.data.tags["dvc.stage"] == "train-linear@x" and logged.data.tags["dvc.exp_name"] == "exp-1"
    assert logged.data.tags["process.cpu"] == record["cpu"] == process.cpu_description()
    assert [m.value for m in client.get_metric_history(record["run_id"], "curve")] == [0.1, 0.5]
    assert [a.path for a in client.list_artifacts(record["run_id"])] == ["weights.bin"]
    assert (tmp_path / "mlartifacts").is_dir()
    # The versions that made the stage's bytes, in the record and in the run; the store relative to
    # the repository, not the absolute path of this checkout.
    assert record["tracking_uri"] == "sqlite:///mlflow.db"
    assert str(tmp_path) not in (tmp_path / "tracking/train-linear@x.json").read_text()
    assert record["environment"]["python"] == platform.python_version()
    assert all(record["environment"][name] == version(name) for name in ("torch", "numpy", "matplotlib", "pillow"))
    assert record["environment"]["lock_sha256"] is None  # no uv.lock in this repository
    assert {f"env.{k}": v for k, v in record["environment"].items() if v is not None}.items() <= logged.data.tags.items()


def test_environment_versions_hash_the_lock_and_name_cuda_only_when_used(tmp_path):
    (tmp_path / "uv.lock").write_bytes(b"version = 1\n")
    recorded = versions.environment_versions(tmp_path)
    assert recorded["lock_sha256"] == hashlib.sha256(b"version = 1\n").hexdigest()
    import torch

    assert ("cuda" in recorded) == torch.cuda.is_initialized()


@pytest.mark.parametrize("uri, recorded", [
    ("sqlite:///{root}/mlflow.db", "sqlite:///mlflow.db"),
    ("sqlite:///{root}/stores/runs.db", "sqlite:///stores/runs.db"),
    ("sqlite:///{elsewhere}/mlflow.db", None),
    ("file://{root}/mlruns", "mlruns"),
    ("{root}/mlruns", "mlruns"),
    ("{elsewhere}/mlruns", None),
    ("http://alice:secret@tracking.example:5000", "http://tracking.example:5000"),
    ("postgresql://mlflow:pw@db.example/mlflow", "postgresql://db.example/mlflow"),
])
def test_the_recorded_store_names_nothing_particular_to_the_machine(tmp_path, uri, recorded):
    root, elsewhere = tmp_path / "repo", tmp_path / "other"
    (root / "stores").mkdir(parents=True)
    assert store.recorded_tracking_uri(uri.format(root=root, elsewhere=elsewhere), root) == recorded


def test_the_experiment_is_of_trained_models_and_a_run_names_the_dataset_it_read(monkeypatch, tmp_path):
    """MLflow 3's UI opens the experiment on its runs (its kind set, also on one created before);
    a dataset input names the split and carries the file's md5."""
    import hashlib

    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("dl-course")  # as an earlier version of the project left it: no kind
    split = tmp_path / "data/prepared/mnist/train.pt"
    split.parent.mkdir(parents=True)
    split.write_bytes(b"pixels")
    with tracking.stage_run("train-linear@x", {"lr": 0.1}) as run:
        run.log_dataset(split.relative_to(tmp_path), "training")
    assert client.get_experiment_by_name("dl-course").tags["mlflow.experimentKind"] == "custom_model_development"
    (dataset_input,) = client.get_run(tracking.read_run_record("train-linear@x")["run_id"]).inputs.dataset_inputs
    assert dataset_input.dataset.name == "mnist/train"
    assert dataset_input.dataset.digest == hashlib.md5(b"pixels").hexdigest()
    assert [(tag.key, tag.value) for tag in dataset_input.tags] == [("mlflow.data.context", "training")]


def test_the_stages_one_dvc_command_runs_share_a_tag_and_another_command_gets_another(tmp_path):
    """Each stage is a process of its own: the tag names the `dvc` process above them all."""
    stage = tmp_path / "stage.py"
    stage.write_text("from dlcourse.pipeline import tracking\nprint(tracking.dvc_invocation())\n")
    dvc = tmp_path / "bin" / "dvc"  # stands for DVC: runs two stages, as `dvc repro` would
    dvc.parent.mkdir()
    dvc.write_text(f"#!/bin/sh\n{sys.executable} {stage}\n{sys.executable} {stage}\n")
    dvc.chmod(0o755)
    runs = [subprocess.run([str(dvc)], capture_output=True, text=True, check=True).stdout.split() for _ in range(2)]
    assert len(runs[0]) == 2 and runs[0][0] == runs[0][1] and runs[1][0] == runs[1][1] != runs[0][0]
    assert runs[0][0].endswith(f"@{socket.gethostname()}")
    by_hand = subprocess.run([sys.executable, str(stage)], capture_output=True, text=True, check=True).stdout
    assert by_hand.strip() == "None"


INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: another
"""


def test_the_cpu_is_the_first_processors_model_with_the_usable_count(monkeypatch):
    assert process.cpu_description(INTEL_CPUINFO, 2) == "Intel(R) Xeon(R) Platinum 8480+ (family 6, model 143), 2 CPUs"
    assert process.cpu_description(INTEL_CPUINFO, 1).endswith(", 1 CPU")
    monkeypatch.setattr("platform.processor", lambda: "")
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n"  # no model name, family or model
    assert process.cpu_description(arm, 4) == "aarch64, 4 CPUs"
    assert process.cpu_description("", 4) == "aarch64, 4 CPUs"


def local_store(monkeypatch, tmp_path) -> str:
    """Stage runs in `tmp_path` log to its own mlflow.db, as in a fresh checkout."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.mark.parametrize("uri", ["foo://bar", "notaurl", "localhost:5000"])
def test_a_garbage_tracking_uri_stops_the_stage_listing_the_accepted_forms(monkeypatch, tmp_path, uri):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(store.TrackingError) as err:
        with tracking.stage_run("train-linear@x", {"lr": 0.1}):
            pytest.fail("the stage body must not run")
    message = str(err.value)
    assert message.startswith(f"MLFLOW_TRACKING_URI={uri!r} is not a tracking URI MLflow knows; use ")
    for form in ("./mlruns", "file:", "sqlite:///", "postgresql://", "mysql://", "http(s)://", "databricks"):
        assert form in message
    assert list(tmp_path.iterdir()) == []  # no `notaurl` folder store, no tracking record


@pytest.mark.parametrize("uri", ["./mlruns", "/srv/mlruns", "file:///srv/mlruns", "sqlite:///mlflow.db",
                                 "postgresql+psycopg2://u:p@db/mlflow", "mysql://db/mlflow", "https://mlflow.example",
                                 "databricks"])
def test_the_tracking_uris_mlflow_knows_are_accepted(monkeypatch, tmp_path, uri):
    monkeypatch.chdir(tmp_path)
    store.check_tracking_uri(uri)


def test_a_sqlite_store_in_a_missing_folder_stops_the_stage_naming_the_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "typo" / "stores"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    with pytest.raises(store.TrackingError) as err:
        with tracking.stage_run("train-linear@x", {"lr": 0.1}):
            pytest.fail("the stage body must not run")
    assert f"its folder {folder} does not exist" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor the lock beside the database


KILLABLE = """
import time
from dlcourse.pipeline import tracking

with tracking.stage_run("train-linear@x", {"lr": 0.1}) as run:
    print(run.run_id, flush=True)
    time.sleep(120)
"""



def test_a_stage_process_freezes_its_objects_and_still_runs_its_atexit_handlers(monkeypatch, tmp_path):
    local_store(monkeypatch, tmp_path)
    script = """
import atexit, gc
from pathlib import Path
from dlcourse.pipeline import tracking

def at_exit():  # registered first, so it runs after the freeze at exit
    count = gc.get_count()
    Path("at-exit").write_text(str(count))

atexit.register(at_exit)
with tracking.stage_run("train-linear@x", {"lr": 0.1}):
    print(gc.get_freeze_count() > 100_000)
    garbage = [[] for _ in range(1000)]
"""
    stage = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert stage.returncode == 0, stage.stderr
    assert stage.stdout.strip() == "True"  # the start-up's objects, MLflow's included
    assert (tmp_path / "at-exit").read_text() == "(0, 0, 0)"  # all frozen, the stage's own too
    assert tracking.read_run_record("train-linear@x")["run_id"]

def test_a_stage_sent_sigterm_ends_its_run_as_killed_and_exits_143(monkeypatch, tmp_path):
    uri = local_store(monkeypatch, tmp_path)
    stage = subprocess.Popen([sys.executable, "-c", KILLABLE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        ready, _, _ = select.select([stage.stdout], [], [], 60)
        run_id = stage.stdout.readline().strip() if ready else ""
        assert run_id, f"the stage never opened its run: {stage.stderr.read() if stage.poll() is not None else 'hung'}"
        stage.send_signal(signal.SIGTERM)
        _, stderr = stage.communicate(timeout=30)
    finally:
        stage.kill()
    from mlflow.tracking import MlflowClient

    assert stage.returncode == 128 + signal.SIGTERM
    assert f"train-linear@x: stopped by SIGTERM; MLflow run {run_id} marked KILLED" in stderr
    assert MlflowClient(uri).get_run(run_id).info.status == "KILLED"
    assert not (tmp_path / "tracking").exists()  # no record of a run that did not end well


def test_sigint_ends_the_run_as_killed_and_the_previous_handlers_come_back(monkeypatch, tmp_path):
    uri = local_store(monkeypatch, tmp_path)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as exit:
        with tracking.stage_run("train-linear@x", {"lr": 0.1}) as run:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
            pytest.fail("SIGINT did not stop the stage")
    from mlflow.tracking import MlflowClient

    assert exit.value.code == 128 + signal.SIGINT
    assert MlflowClient(uri).get_run(run.run_id).info.status == "KILLED"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_run_left_running_by_a_dead_process_is_marked_killed_at_the_next_start(monkeypatch, tmp_path, capsys):
    uri = local_store(monkeypatch, tmp_path)
    with tracking.stage_run("train-linear@x", {"lr": 0.1}):  # creates the store and the experiment
        pass
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    gone = subprocess.Popen(["true"])
    gone.wait()
    here = socket.gethostname()

    def left_running(stage: str, pid: int, host: str) -> str:
        tags = {"dvc.stage": stage, "process.pid": str(pid), "process.host": host}
        return client.create_run(experiment, tags=tags).info.run_id

    runs = {
        "dead": left_running("train-linear@x", gone.pid, here),
        "alive": left_running("train-linear@x", os.getpid(), here),
        "on another host": left_running("train-linear@x", gone.pid, "another-host"),
        "of another stage": left_running("train-linear@y", gone.pid, here),
    }
    with tracking.stage_run("train-linear@x", {"lr": 0.1}) as run:
        pass
    statuses = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert statuses == {"dead": "KILLED", "alive": "RUNNING",
                        "on another host": "RUNNING", "of another stage": "RUNNING"}
    assert f"MLflow run {runs['dead']} was left RUNNING by process {gone.pid}, which is gone" in capsys.readouterr().err
    tags = client.get_run(run.run_id).data.tags
    assert (tags["process.pid"], tags["process.host"]) == (str(os.getpid()), here)
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_a_stage_that_fails_ends_its_run_as_failed_and_records_nothing(monkeypatch, tmp_path):
    uri = local_store(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match="bad batch"):
        with tracking.stage_run("train-linear@x", {"lr": 0.1}) as run:
            raise ValueError("bad batch")
    from mlflow.tracking import MlflowClient

    assert MlflowClient(uri).get_run(run.run_id).info.status == "FAILED"
    assert not (tmp_path / "tracking").exists()


def test_the_params_read_from_dvc_yaml_are_dvcs_for_every_stage(monkeypatch):
    """`declared_keys` reads dvc.yaml without DVC: on every stage of the project's dvc.yaml it gives
    the keys DVC resolves, and never needs DVC's Repo."""
    from pathlib import Path

    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    from dlcourse.pipeline import params

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    values = params.load(root / "params.yaml").model_dump()
    with Repo(str(root)) as repo:
        stages = {stage.addressing: [key for dep in stage.deps if isinstance(dep, ParamsDependency) for key in dep.params]
                  for stage in repo.index.stages}
    assert len(stages) > 30 and any(keys for keys in stages.values())
    for stage, keys in stages.items():
        assert dvc_params.declared_keys(stage, values) == keys, stage


@pytest.mark.parametrize("pipeline", [
    {"vars": ["other.yaml"], "stages": {"s": {"foreach": "${section}", "do": {"cmd": "x", "params": ["section.${key}"]}}}},
    {"stages": {"s": {"foreach": "${section}", "do": {"cmd": "x", "params": ["section.${item.lr}"]}}}},
    {"stages": {"s": {"foreach": ["a", "b"], "do": {"cmd": "x", "params": ["section.${key}"]}}}},
    {"stages": {"s": {"matrix": {"a": [1, 2]}, "cmd": "x", "params": ["section.a"]}}},
    {"stages": {"s": {"cmd": "x", "params": [{"other.yaml": ["a"]}]}}},
])
def test_a_form_of_dvc_yaml_not_read_alone_is_left_to_dvc(tmp_path, pipeline):
    import yaml

    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    values = {"section": {"a": {"lr": 1}}}
    assert dvc_params.declared_keys("s@a", values, tmp_path / "dvc.yaml") is None
    assert dvc_params.declared_keys("s", values, tmp_path / "dvc.yaml") is None


def test_the_process_start_time_is_the_spawn_time_within_a_clock_tick():
    spawned = time.time()
    child = subprocess.run([sys.executable, "-c", "from dlcourse.pipeline import process; print(process.process_start_time())"],
                           capture_output=True, text=True, check=True)
    assert spawned - 0.05 < float(child.stdout) < time.time()
