"""Params profiles (profiles/*.yaml) and their one command, scripts/apply_profile.py: a profile
rewrites params.yaml in place (its comments and layout kept) or gives the `dvc exp run -S` flags
that do the same; a profile that names a key params.yaml lacks is refused, naming both."""

import subprocess
import sys
from pathlib import Path

import pytest

from dlcourse.pipeline import params

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))


def apply_profile(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts/apply_profile.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def checkout(tmp_path) -> Path:
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    return tmp_path


def test_every_profile_the_project_documents_exists():
    assert {p.stem for p in PROFILES} >= {"tiny", "ci", "quick", "gan-cifar10-gpu"}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_a_profile_in_place_and_as_flags_give_the_same_params(checkout, profile):
    """In place: valid params, every comment kept. As flags, applied the way `dvc exp run -S`
    applies them (DVC's own function): the same values as in place."""
    from dvc.utils.hydra import apply_overrides

    flags = apply_profile("--flags", str(profile), cwd=checkout)
    assert flags.returncode == 0, flags.stderr
    words = flags.stdout.split()
    assert words[0] == "-S" and len(words) % 2 == 0 and all(word == "-S" for word in words[::2])
    by_dvc = checkout / "by_dvc.yaml"
    by_dvc.write_text((ROOT / "params.yaml").read_text())
    apply_overrides(by_dvc, words[1::2])

    result = apply_profile(str(profile), cwd=checkout)
    assert result.returncode == 0, result.stderr
    in_place = params.read_yaml(checkout / "params.yaml")
    assert in_place == params.read_yaml(by_dvc) != params.read_yaml(ROOT / "params.yaml")
    params.validate(in_place)
    text = (checkout / "params.yaml").read_text()
    comments = [line.partition("#")[2] for line in (ROOT / "params.yaml").read_text().splitlines() if "#" in line]
    assert [c for c in comments if c not in text] == []
    assert text.count("<<: *") == (ROOT / "params.yaml").read_text().count("<<: *")  # merge keys kept


def test_a_wildcard_sets_every_entry_and_a_later_key_wins(checkout):
    profile = checkout / "p.yaml"
    profile.write_text("train_cnn.*.epochs: 1\ntrain_cnn.mnist-course.epochs: 3\n")
    assert apply_profile(str(profile), cwd=checkout).returncode == 0
    epochs = {name: entry.epochs for name, entry in params.load(checkout / "params.yaml").train_cnn.items()}
    assert epochs.pop("mnist-course") == 3 and set(epochs.values()) == {1}
    flags = apply_profile("--flags", str(profile), cwd=ROOT).stdout
    assert flags.count("mnist-course.epochs") == 1 and flags.rstrip().endswith("train_cnn.mnist-course.epochs=3")


@pytest.mark.parametrize("text, message", [
    ("train_gan.gan-2014.widht: 8\n", "{profile}: train_gan.gan-2014.widht: params.yaml has no such key"),
    ("train_gan.gan-2104.width: 8\n", "{profile}: train_gan.gan-2104.width: params.yaml has no 'gan-2104' in train_gan"),
    ("train_cnn.*.epocs: 1\n", "{profile}: train_cnn.*.epocs: params.yaml has no such key"),
    ("train_gan.*.width: 0\n",
     "with {profile} is invalid:\n  train_gan.conditional.width: Input should be greater than or equal to 1"),
    ("- seed\n", "{profile}: expected a mapping of dotted params.yaml keys to values"),
])
def test_a_bad_profile_is_refused_naming_the_file_and_key_and_nothing_is_written(checkout, text, message):
    profile = checkout / "bad.yaml"
    profile.write_text(text)
    before = (checkout / "params.yaml").read_text()
    for args in ([str(profile)], ["--flags", str(profile)]):
        result = apply_profile(*args, cwd=checkout)
        assert result.returncode != 0 and message.format(profile=profile) in result.stderr, result.stderr
        assert result.stdout == "" and (checkout / "params.yaml").read_text() == before
    assert sorted(p.name for p in checkout.iterdir()) == ["bad.yaml", "params.yaml"]  # no temporary file left
