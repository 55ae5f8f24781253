import time

import pytest

from dlcourse import tracking


def test_project_root_finds_the_repository_from_a_queued_experiment(monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo/.dvc/tmp/exps/tmpabc123"))
    assert tracking.project_root() == (tmp_path / "repo").resolve()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    assert tracking.project_root() == (tmp_path / "repo").resolve()


def test_unreachable_server_fails_fast(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.perf_counter()
    with pytest.raises(tracking.TrackingError, match="http://127.0.0.1:9 is unreachable"):
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
    assert [m.value for m in client.get_metric_history(record["run_id"], "curve")] == [0.1, 0.5]
    assert [a.path for a in client.list_artifacts(record["run_id"])] == ["weights.bin"]
    assert (tmp_path / "mlartifacts").is_dir()
