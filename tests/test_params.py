import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dlcourse.pipeline import params

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = params.read_yaml(ROOT / "params.yaml")


def edited(path: str, value=None, delete=False) -> dict:
    raw = copy.deepcopy(DEFAULTS)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return raw


def test_the_repository_params_are_valid():
    params.validate(DEFAULTS)
    params.load(ROOT / "params.yaml")


def written(tmp_path, raw: dict, literal: str, text: str) -> Path:
    """params.yaml with the value `literal` (placed with `edited`) written as `text`, as a person would."""
    path = tmp_path / "params.yaml"
    dumped = yaml.safe_dump(raw)
    assert dumped.count(literal) == 1
    path.write_text(dumped.replace(literal, text))
    return path


def test_params_are_read_as_dvc_reads_them_yaml_1_2(tmp_path):
    path = written(tmp_path, edited("train_linear.one_epoch.lr", "LR"), "lr: LR", "lr: 1e-3")
    assert params.load(path).train_linear["one_epoch"].lr == 0.001  # PyYAML (YAML 1.1) reads the string '1e-3'


@pytest.mark.parametrize("word", ["yes", "on"])
def test_yes_and_on_are_strings_not_booleans(tmp_path, word):
    path = written(tmp_path, edited("train_cnn.mnist.flip", "FLIP"), "flip: FLIP", f"flip: {word}")
    with pytest.raises(params.ParamsError) as err:
        params.load(path)
    assert f"train_cnn.mnist.flip: Input should be a valid boolean (got '{word}')" in str(err.value)


@pytest.mark.parametrize("text, message", [
    (None, "params.yaml: not found; run the stage from the repository root"),
    ("seed: [1\n", "params.yaml: not valid YAML: "),
    ("- seed\n- device\n", "params.yaml: expected a mapping of sections, got list"),
])
def test_an_unreadable_params_file_is_named(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(params.ParamsError) as err:
        params.load(path)
    assert str(err.value).startswith(f"{tmp_path}/{message}")


def test_a_duplicated_key_is_named_with_its_line(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 1\nseed: 2\n")
    with pytest.raises(params.ParamsError) as err:
        params.load(tmp_path / "params.yaml")
    assert 'found duplicate key "seed"' in str(err.value) and "line 2" in str(err.value)
    assert "To suppress" not in str(err.value)  # ruamel's hint to allow them; DVC refuses them


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("train_linear.one_epoch.lrr", 0.1, "train_linear.one_epoch.lrr: unknown key (a typo?)"),
        ("train_linear.one_epoch.lr", "fast", "train_linear.one_epoch.lr: Input should be a valid number"),
        ("train_linear.one_epoch.lr", -0.1, "train_linear.one_epoch.lr: Input should be greater than 0"),
        ("train_linear.one_epoch.momentum", 1.5, "train_linear.one_epoch.momentum: Input should be less than 1"),
        ("train_linear.long.loss", "mse", "train_linear.long.loss: Input should be 'log_softmax_nll' or 'softmax_nll'"),
        ("download.retries", 2.5, "download.retries: Input should be a valid integer"),
        ("device", "gpu", "device: Input should be 'auto', 'cpu', 'cuda' or 'mps'"),
        ("train_cnn.cifar10-cnn.epoch_images", 50001,
         "train_cnn.cifar10-cnn: epoch_images: 50001, outside one batch (128) to the 50000 training "
         "images of cifar10"),
        ("train_cnn.mnist-robust.epoch_images", 59001,
         "epoch_images: 59001, outside one batch (100) to the 59000 training images of mnist less the held-out ones"),
        ("train_cnn.mnist.epoch_images", 127, "epoch_images: 127, outside one batch (128)"),
    ],
)
def test_bad_params_are_named(path, value, message):
    with pytest.raises(params.ParamsError) as err:
        params.validate(edited(path, value))
    assert message in str(err.value)


def test_epoch_images_from_one_batch_to_the_whole_training_set_is_accepted():
    for value in (128, 50000):
        params.validate(edited("train_cnn.cifar10-cnn.epoch_images", value))
    params.validate(edited("train_cnn.mnist-robust.epoch_images", 59000))


def test_missing_key_is_named():
    with pytest.raises(params.ParamsError, match="train_linear.one_epoch.batch_size: missing"):
        params.validate(edited("train_linear.one_epoch.batch_size", delete=True))


def test_a_stage_with_a_typo_stops_before_any_compute_and_writes_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(edited("train_linear.one_epoch.lrr", 0.1)))
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages/train_linear.py"), "one_epoch"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "train_linear.one_epoch.lrr: unknown key" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "params.yaml"]  # no output, no tracking store


@pytest.mark.parametrize("script, section, name", [
    ("train_linear.py", "train_linear", "one_epch"), ("train_cnn.py", "train_cnn", "mnst"),
    ("evaluate.py", "evaluate.models", "cnn/mnst"), ("attack.py", "attack.models", "cnn/mnst"),
    ("fooling.py", "fooling", "mnst"), ("train_gan.py", "train_gan", "gan-2104"), ("score_gan.py", "train_gan", "gan-2104"),
])
def test_a_stage_run_for_an_entry_params_do_not_have_names_the_entries_there_are(tmp_path, script, section, name):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(DEFAULTS))
    result = subprocess.run([sys.executable, str(ROOT / "stages" / script), name], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    entries = params.validate(DEFAULTS)
    for part in section.split("."):
        entries = getattr(entries, part)
    assert result.returncode != 0
    assert f"params.yaml: {section} has no entry {name!r} (entries: {', '.join(sorted(entries))})" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "params.yaml"]  # no output, no tracking store


def test_unknown_model_argument_names_the_architecture_and_what_is_accepted():
    with pytest.raises(params.ParamsError) as err:
        params.validate(edited("train_cnn.mnist.model", {"widthz": [8, 16]}))
    message = str(err.value)
    assert "train_cnn.mnist: model: unknown argument(s) ['widthz'] for mnistnet" in message
    assert "'widths'" in message


@pytest.mark.parametrize("path, value, message", [
    ("evaluate.models", {"cnn/nope": {"dataset": "mnist"}},
     "evaluate.models.cnn/nope: no train entry produces the model 'cnn/nope'"),
    ("evaluate.models", {"cnn/mnist": {"dataset": "cifar10"}},
     "evaluate.models.cnn/mnist: cnn/mnist is trained on mnist, not cifar10"),
    ("fooling.cifar10.transfer_model", "cnn/mnist", "fooling.cifar10.transfer_model: cnn/mnist is trained on mnist"),
    ("score_gan.classifier", "linear/nope", "score_gan.classifier: no train entry produces the model 'linear/nope'"),
])
def test_a_model_read_by_a_stage_must_be_one_a_train_entry_produces(path, value, message):
    with pytest.raises(params.ParamsError) as err:
        params.validate(edited(path, value))
    assert message in str(err.value)


def test_each_entry_merges_its_defaults_and_states_only_what_differs(tmp_path):
    """params.yaml's `defaults` blocks reach every entry that does not state the key, as DVC reads it."""
    text = (ROOT / "params.yaml").read_text()
    shared = "    optimizer: sgd\n    momentum: 0.9\n"  # defaults.train_cnn's, stated once
    assert text.count(shared) == 1
    (tmp_path / "params.yaml").write_text(text.replace(shared, "    optimizer: sgd\n    momentum: 0.8\n"))
    edited_params = params.load(tmp_path / "params.yaml")
    assert {entry.momentum for entry in edited_params.train_cnn.values()} == {0.8}
    assert params.load(ROOT / "params.yaml").train_cnn["mnist-course"].normalize is False  # an entry's own value wins


def test_a_typo_in_defaults_is_named_there():
    raw = edited("defaults.train_cnn.momentun", 0.9)
    with pytest.raises(params.ParamsError) as err:
        params.validate(raw)
    assert "defaults.train_cnn: unknown key(s) ['momentun'] (a typo?)" in str(err.value)
    with pytest.raises(params.ParamsError, match="defaults.train_cnnn: not a foreach section"):
        params.validate(edited("defaults.train_cnnn", {}))


def test_compare_params_tells_a_layout_change_from_a_value_change(tmp_path):
    """scripts/compare_params.py: the same values in another layout pass; one changed value is named
    with its stage, and so is an int written as a float."""
    text = (ROOT / "params.yaml").read_text()
    expanded = tmp_path / "expanded.yaml"
    raw = params.read_yaml(ROOT / "params.yaml")
    del raw["defaults"]
    expanded.write_text(yaml.safe_dump(raw, sort_keys=True))  # every entry in full, keys sorted
    changed = tmp_path / "changed.yaml"
    assert text.count("era: wgan-gp-2017, width: 8,") == 1
    changed.write_text(text.replace("era: wgan-gp-2017, width: 8,", "era: wgan-gp-2017, width: 8.0,"))
    script = [sys.executable, str(ROOT / "scripts/compare_params.py")]
    same = subprocess.run([*script, str(expanded)], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and "44 stages of dvc.yaml" in same.stdout, same.stdout + same.stderr
    differ = subprocess.run([*script, str(expanded), str(changed)], capture_output=True, text=True, timeout=120)
    assert differ.returncode == 1
    assert sorted(line.split(":")[0] for line in differ.stdout.splitlines() if not line.startswith(" ")) == \
        ["score-gan@wgan-gp-2017", "train-gan@wgan-gp-2017"]
