"""No verdict holds on nothing: every claim rule fails, or stops with an error naming the file and the
stage that writes it, when the measurement it judges is missing, empty or not finite; and the
committed reports/claims.json is what the committed metrics give."""

import json
import math
import re
from pathlib import Path

import pytest
from test_claims import HOLDING, entries_named, results, setter

from dlcourse.pipeline import params
from dlcourse.report import claims
from dlcourse.report.claims import ClaimError, Results, entries_of, evaluate_claims, leftover_warning
from dlcourse.report.claims_robustness import slight_corruption_verdict
from dlcourse.files import UnreadableFileError

ROOT = Path(__file__).resolve().parents[1]


def removed(name: str, key: str):
    def edit(metrics, curve):
        *parents, last = key.split(".")
        node = metrics[name]
        for part in parents:
            node = node[part]
        del node[last]
    return edit


FAILS = [
    # (claim, edit): the claim's input missing or empty; the claim does not hold, and only it
    ("gan-digits", removed("gan/conditional/scores", "generated.label_agreement")),  # the digit asked: unmeasured
    ("gan-digits", setter("gan/conditional/scores", "generated.label_agreement", None)),
    ("gan-digits", lambda m, c: m.pop("gan/conditional/scores")),
    # a long run that diverged to chance gains nothing, yet shows no plateau
    ("linear-plateau", lambda m, c: m["linear/long"].update(best_test_accuracy=0.92, test_accuracy=0.098)),
    ("linear-plateau", setter("linear/long", "test_accuracy", 0.8899)),  # 2.01 points below one epoch's 0.91
    ("hard-errors", lambda m, c: [m.pop(name) for name in list(m) if name.startswith("evaluate/")]),
    ("slight-corruption", lambda m, c: m.pop("attack/cnn/mnist")),  # the course's network, not attacked
    ("robust-training", lambda m, c: m.pop("attack/cnn/mnist-robust")),
    ("fooling", lambda m, c: [m.pop(name) for name in list(m) if name.startswith("fooling/")]),
    ("cifar10-50", lambda m, c: [m.pop(name) for name in list(m) if name.startswith("cnn/cifar10")]),
    # no unconditional era scored: both timelines fail
    ("gan-progress gan-slides", lambda m, c: [m.pop(name) for name in list(m)
                                             if name.startswith("gan/") and name != "gan/conditional/scores"]),
    ("gan-slides", lambda m, c: [m.pop(name) for name in ("gan/cogan-2016/scores", "gan/progan-2017/scores")]),
]


@pytest.mark.parametrize("claim, edit", FAILS)
def test_a_claim_does_not_hold_on_a_missing_measurement(tmp_path, claim, edit):
    verdicts = evaluate_claims(results(tmp_path, edit))
    assert [c for c, v in verdicts.items() if not v["holds"]] == claim.split()


def test_the_plateau_holds_just_inside_its_new_bar(tmp_path):
    verdicts = evaluate_claims(results(tmp_path, setter("linear/long", "test_accuracy", 0.8901)))
    assert verdicts["linear-plateau"]["holds"]
    assert "ends at most 2 points below it" in verdicts["linear-plateau"]["claim"]


RAISES = [
    # (edit, error type, message: a regex of the error's text)
    (removed("gan/conditional/scores", "generated"), KeyError, "generated"),
    (setter("fooling/mnist", "cppn.per_class", {}),
     ClaimError, r"fooling/mnist\.json: cppn\.per_class is empty; rebuild it with `dvc repro fooling@mnist`"),
    (setter("timing/train-linear@one_epoch", "train_seconds", 0.0),
     ClaimError, r"train-linear@one_epoch\.json: train_seconds is 0\.0, not a time; rebuild it with "
                 r"`dvc repro train-linear@one_epoch`"),
    (lambda m, c: m.update({"linear/one_epoch": {}}),
     ClaimError, r"linear/one_epoch\.json: holds no metrics \(an empty mapping\); rebuild it with "
                 r"`dvc repro train-linear@one_epoch`"),
    (lambda m, c: m.update({"evaluate/cnn/mnist": []}),
     ClaimError, r"evaluate/cnn/mnist\.json: holds no metrics \(a list, not a mapping\); rebuild it with "
                 r"`dvc repro evaluate@cnn/mnist`"),
    (lambda m, c: m.pop("linear/long"),
     FileNotFoundError, r"linear/long\.json: missing; the stage that writes it has not run: rebuild it with "
                        r"`dvc repro train-linear@long`"),
    (lambda m, c: c.update(epoch=[], test_accuracy=[]),
     ClaimError, r"plots/cnn/mnist-course\.csv: no rows; rebuild it with `dvc repro train-cnn@mnist-course`"),
    (lambda m, c: c.update(test_accuracy=[0.97, math.nan]),
     ClaimError, r"plots/cnn/mnist-course\.csv: holds NaN or infinite values \(empty cells\?\); rebuild it with "
                 r"`dvc repro train-cnn@mnist-course`"),
    (lambda m, c: c.update(epoch=[3, 4], test_accuracy=[0.98, 0.99]),
     ClaimError, r"mnist-course\.csv: no epoch <= 2"),
]


@pytest.mark.parametrize("edit, error, message", RAISES)
def test_a_claim_refuses_an_empty_or_unreadable_input_naming_the_file_and_stage(tmp_path, edit, error, message):
    with pytest.raises(error, match=message):
        evaluate_claims(results(tmp_path, edit))


@pytest.mark.parametrize("name, key, stage", [
    ("attack/cnn/mnist", ("evaluation", "accuracy", "0.1", "sign_noise"), "attack@cnn/mnist"),
    ("linear/long", ("best_test_accuracy",), "train-linear@long"),
    ("gan/conditional/scores", ("generated", "label_agreement"), "score-gan@conditional"),
    ("fooling/mnist", ("gradient", "per_class", "3", "confidence"), "fooling@mnist"),
])
def test_a_nan_in_a_metrics_file_is_refused_naming_the_file_and_its_stage(tmp_path, name, key, stage):
    def edit(metrics, curve):
        node = metrics[name]
        for part in key[:-1]:
            node = node[part]
        node[key[-1]] = math.nan  # json.dumps writes NaN, which is not JSON
    with pytest.raises(UnreadableFileError, match=rf"{re.escape(name)}\.json: corrupt or truncated JSON \(NaN is "
                                                  rf"not valid JSON.*`dvc repro {re.escape(stage)}`"):
        evaluate_claims(results(tmp_path, edit))


@pytest.mark.parametrize("control", ["sign_noise", "l2_noise"])
def test_a_nan_noise_control_cannot_vanish_inside_max(control):
    m = json.loads(json.dumps(HOLDING["attack/cnn/mnist"]))
    m["evaluation"]["accuracy"]["0.1"][control] = math.nan
    with pytest.raises(ClaimError, match=rf"evaluation half's accuracies: 0\.1\.{control} not finite"):
        slight_corruption_verdict(m)


def test_a_non_finite_value_judged_stops_the_claim(tmp_path, monkeypatch):
    r = results(tmp_path)
    real = Results.metrics

    def metrics(self, name):
        m = real(self, name)
        return {**m, "init_accuracy_mean": math.inf} if name == "linear/one_epoch" else m
    monkeypatch.setattr(Results, "metrics", metrics)
    with pytest.raises(ClaimError, match=r"^claim linear-init: the values judged: mean not finite"):
        evaluate_claims(r)


def test_the_committed_claims_are_what_the_committed_metrics_give():
    """reports/claims.json recomputed from the committed metrics/ and plots/: every verdict, value and
    measurement the same (the claim's sentence aside: it follows the rules of this checkout, and the
    report rewrites it on its next run)."""
    committed = json.loads((ROOT / "reports" / "claims.json").read_text())
    named = entries_of(params.load(ROOT / "params.yaml"))
    recomputed = json.loads(json.dumps(evaluate_claims(Results(ROOT / "metrics", ROOT / "plots", named))))
    assert list(recomputed) == list(committed) == [claim.id for claim in claims.CLAIMS]
    for claim_id, verdict in recomputed.items():
        for field in ("holds", "values", "measured", "course"):
            assert verdict[field] == committed[claim_id][field], (claim_id, field)


# --- the entries params.yaml names, never a glob ------------------------------------------------

def test_the_outputs_of_a_removed_entry_are_neither_judged_nor_reported_but_listed_once(tmp_path):
    r = results(tmp_path)
    stale = [tmp_path / "metrics/cnn/cifar10-old.json", tmp_path / "metrics/timing/train-cnn@cifar10-old.json",
             tmp_path / "metrics/gan/sngan-2017/scores.json", tmp_path / "plots/cnn/cifar10-old.csv",
             tmp_path / "plots/gan/sngan-2017/samples/epoch_01.png", tmp_path / "plots/evaluate/cnn/cifar10-old/x.png"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"dataset": "cifar10", "test_accuracy": 0.99, "conditional": True}))
    verdicts = evaluate_claims(r)
    assert verdicts == evaluate_claims(results(tmp_path / "clean"))  # as if the stale files were not there
    assert "cifar10-old" not in json.dumps(verdicts)
    assert sorted(r.leftovers()) == sorted(stale)
    warning = leftover_warning(r.leftovers())
    assert warning.startswith("warning: 6 file(s) under metrics/ or plots/ belong to no entry of params.yaml")
    assert warning.splitlines()[1].startswith("  rm -rf -- ") and str(stale[0]) in warning
    assert leftover_warning(results(tmp_path / "none").leftovers()) is None


def test_an_entry_params_names_without_its_metrics_is_an_error_naming_its_stage(tmp_path):
    names = entries_named(HOLDING)
    names["cnn"].append("cifar10-new")
    r = Results(results(tmp_path).metrics_dir, tmp_path / "plots", names)
    with pytest.raises(FileNotFoundError, match=r"cnn/cifar10-new\.json: missing; the stage that writes it has not "
                                                r"run: rebuild it with `dvc repro train-cnn@cifar10-new`"):
        evaluate_claims(r)


def test_a_quoted_path_in_the_removal_command():
    warning = leftover_warning([Path("metrics/cnn/it's here.json")])
    assert warning.endswith("""rm -rf -- 'metrics/cnn/it'"'"'s here.json'""")
