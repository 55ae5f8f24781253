"""The drift check (scripts/compare_locks.py) on small made-up runs: a checkout each, or a git revision."""

import importlib.util
import io
import json
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("compare_locks", ROOT / "scripts" / "compare_locks.py")
compare_locks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_locks)

LOCK = {"schema": "2.0", "stages": {
    "train": {"cmd": "python stages/train.py", "deps": [{"path": "src/train.py", "md5": "c0de"}],
              "params": {"params.yaml": {"train": {"lr": 0.1}}},
              "outs": [{"path": "models/net.pt", "md5": "aaa"}, {"path": "metrics/net.json", "md5": "bbb"},
                       {"path": "metrics/timing/train.json", "md5": "t1"}, {"path": "tracking/train.json", "md5": "r1"}]},
    "report": {"cmd": "python stages/report.py", "deps": [{"path": "metrics/net.json", "md5": "bbb"}],
               "outs": [{"path": "reports/claims.json", "md5": "ccc"}]},
}}
METRICS = {"test_accuracy": 0.9123, "curve": [0.5, 0.8], "epochs": 3, "converged": True}
CLAIMS = {"accuracy": {"measured": "91.23 %", "holds": True}, "ambitious": {"measured": "no", "holds": False}}
RECORD = {"stage": "train", "run_id": "r", "cpu": "Some CPU, 2 CPUs",
          "environment": {"python": "3.11.7", "torch": "2.14.1", "numpy": "2.4.6", "lock_sha256": "ab" * 32}}


def make_run(folder: Path, lock=LOCK, metrics=METRICS, claims=CLAIMS, record=RECORD) -> Path:
    for name, content in {"dvc.lock": yaml.safe_dump(lock), "metrics/net.json": json.dumps(metrics),
                          "reports/claims.json": json.dumps(claims), "tracking/train.json": json.dumps(record)}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
    return folder


def moved(lock=LOCK, **md5s) -> dict:
    """The lock with these outputs' md5 changed (`models_net_pt="..."` for models/net.pt)."""
    lock = json.loads(json.dumps(lock))
    for stage in lock["stages"].values():
        for out in stage["outs"]:
            key = out["path"].replace("/", "_").replace(".", "_")
            out["md5"] = md5s.get(key, out["md5"])
    return lock


def run(first: Path | str, second: Path | str, **tolerance) -> tuple[int, str]:
    out = io.StringIO()
    status = compare_locks.compare(compare_locks.Run(str(first)), compare_locks.Run(str(second)), out=out, **tolerance)
    return status, out.getvalue()


def test_identical_runs_exit_0_whatever_their_run_records_and_timings(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", lock=moved(metrics_timing_train_json="t2", tracking_train_json="r2"))
    status, text = run(a, b / "dvc.lock")
    assert status == 0
    assert "2 of 2 outputs byte-identical" in text
    assert "2.14.1" in text and "Some CPU" in text
    (b / "tracking/train.json").unlink()
    assert run(a, b)[1].endswith(f"{b}:\n  no run records (tracking/<stage>.json)\n")


def test_an_environment_drift_names_the_outputs_the_numbers_and_the_claims(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", lock=moved(models_net_pt="a2", metrics_net_json="b2"),
                 metrics={**METRICS, "test_accuracy": 0.9101, "curve": [0.5, 0.79]},
                 record={**RECORD, "environment": {**RECORD["environment"], "numpy": "2.3.5"}})
    status, text = run(a, b)
    assert status == 1
    assert "0 of 2 outputs byte-identical" in text
    assert "models/net.pt" in text and "the environment (same code, data and params)" in text
    assert "metrics/net.json:test_accuracy  0.9123   0.9101" in text and "-0.0022" in text
    assert "metrics/net.json:curve.1" in text and "metrics/net.json:epochs" not in text
    assert "2 numbers moved, 0 beyond the tolerance" in text
    assert "1 of 2 claims hold in the second run; every claim that held still holds" in text
    assert "python 3.11.7, torch 2.14.1, numpy 2.3.5, lock_sha256 abababababab; Some CPU" in text and "numpy 2.4.6" in text


def test_a_lost_claim_or_a_number_beyond_the_tolerance_exits_2(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", lock=moved(metrics_net_json="b2", reports_claims_json="c2"),
                 metrics={**METRICS, "test_accuracy": 0.80},
                 claims={**CLAIMS, "accuracy": {"measured": "80.00 %", "holds": False}})
    status, text = run(a, b)
    assert status == 2
    assert "no longer holding: accuracy" in text and "91.23 % → 80.00 %" in text
    assert "BEYOND" in text and "1 numbers moved, 1 beyond the tolerance" in text
    status, text = run(a, b, rtol=0.0, atol=0.2)  # the number within a looser tolerance; the claim still lost
    assert status == 2 and "0 beyond the tolerance" in text


def test_changed_code_is_told_apart_from_a_changed_environment(tmp_path):
    a = make_run(tmp_path / "a")
    lock = moved(models_net_pt="a2")
    lock["stages"]["train"]["deps"][0]["md5"] = "c0de2"
    lock["stages"]["train"]["params"]["params.yaml"]["train"]["lr"] = 0.2
    status, text = run(a, make_run(tmp_path / "b", lock=lock))
    assert status == 1
    assert "its inputs: params.yaml:train, src/train.py" in text


def test_a_git_revision_is_compared_with_the_working_tree(tmp_path, monkeypatch):
    repo = make_run(tmp_path / "repo")
    monkeypatch.chdir(repo)
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "r"]):
        subprocess.run(["git", *command], check=True)
    make_run(repo, lock=moved(models_net_pt="a2"))
    assert compare_locks.main([]) == 1
    assert compare_locks.main(["HEAD", "HEAD"]) == 0


@pytest.mark.parametrize("setup, message", [
    (lambda p: p.mkdir(), "holds no dvc.lock"),
    (lambda p: (p.mkdir(), (p / "dvc.lock").write_text("just text")), "its dvc.lock is not a DVC lock file"),
    (lambda p: None, "neither a folder, a dvc.lock nor a git revision"),
    (lambda p: (make_run(p), (p / "metrics/net.json").write_text("{")), "metrics/net.json is not valid JSON"),
])
def test_a_bad_run_is_named_with_what_is_wrong(tmp_path, monkeypatch, capsys, setup, message):
    monkeypatch.chdir(tmp_path)  # not a git repository
    make_run(tmp_path / "a")
    setup(tmp_path / "b")
    if message.startswith("metrics"):  # the lock is fine; the broken metrics file is read once it differs
        (tmp_path / "b/dvc.lock").write_text(yaml.safe_dump(moved(metrics_net_json="b2")))
    assert compare_locks.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 3
    assert message in capsys.readouterr().err
