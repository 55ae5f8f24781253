"""Files the pipeline built, damaged: every reader says which file, what is wrong, and how to get it
back, and leaves the damaged file where it is."""

import fractions
import random
import re
import traceback
from pathlib import Path

import pytest
import torch

from dlcourse.course import data, models
from dlcourse import files
from dlcourse.course.gans import resume

ROOT = Path(__file__).resolve().parents[1]

DAMAGE = {
    "truncated": lambda good: good[: len(good) // 2],
    "random bytes": lambda good: random.Random(0).randbytes(len(good)),
    "empty": lambda good: b"",
}


def damaged(path: Path, how: str) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    files.save_torch({"weights": torch.arange(1000.0)}, path)
    bad = DAMAGE[how](path.read_bytes())
    path.write_bytes(bad)
    return bad


def assert_names_path_cause_and_remedy(error: files.UnreadableFileError, path: Path, cause: str) -> None:
    message = str(error)
    assert message.startswith(f"{path}: {cause}")
    assert f"restore it with `dvc checkout {path}`, or rebuild it with `dvc repro" in message
    shown = "".join(traceback.format_exception(error))  # what the user sees, chained exceptions included
    assert "weights_only" not in shown and "will likely succeed" not in shown


@pytest.mark.parametrize("how, cause", [
    ("truncated", "corrupt or truncated (RuntimeError: PytorchStreamReader failed reading zip archive"),
    ("random bytes", "corrupt or truncated (UnpicklingError"),
    ("empty", "empty (truncated)"),
])
def test_damaged_torch_file_names_the_file_the_cause_and_the_remedy_and_stays(tmp_path, how, cause):
    path = tmp_path / "models" / "cnn" / "mnist.pt"
    bad = damaged(path, how)
    with pytest.raises(files.UnreadableFileError) as err:
        files.load_torch(path)
    assert_names_path_cause_and_remedy(err.value, path, cause)
    assert path.read_bytes() == bad  # kept, for `dvc checkout` to replace or a person to look at


def test_missing_torch_file_names_the_file_and_the_remedy(tmp_path):
    path = tmp_path / "models" / "gone.pt"
    with pytest.raises(files.UnreadableFileError) as err:
        files.load_torch(path)
    assert_names_path_cause_and_remedy(err.value, path, "missing")


def test_a_pickle_of_arbitrary_objects_is_refused_without_advice_to_unpickle_it(tmp_path):
    path = tmp_path / "foreign.pt"
    files.save_torch({"x": fractions.Fraction(1, 3)}, path)  # not tensors: weights_only refuses it
    with pytest.raises(files.UnreadableFileError) as err:
        files.load_torch(path)
    assert_names_path_cause_and_remedy(err.value, path, "corrupt or truncated (UnpicklingError: Unsupported global")


def test_load_torch_reads_back_what_save_torch_wrote(tmp_path):
    files.save_torch({"w": torch.arange(3), "names": ["a", "b"]}, tmp_path / "ok.pt")
    loaded = files.load_torch(tmp_path / "ok.pt", map_location="cpu")
    assert loaded["w"].tolist() == [0, 1, 2] and loaded["names"] == ["a", "b"]


def test_every_reader_of_a_built_file_gives_the_same_error(tmp_path):
    split = tmp_path / "prepared" / "mnist" / "test.pt"
    damaged(split, "truncated")
    with pytest.raises(files.UnreadableFileError, match=re.escape(f"{split}: corrupt or truncated")):
        data.load_split(tmp_path / "prepared", "mnist", "test")
    classifier = tmp_path / "models" / "cnn" / "mnist.pt"
    damaged(classifier, "random bytes")
    with pytest.raises(files.UnreadableFileError, match=re.escape(f"{classifier}: corrupt or truncated")):
        models.load_classifier(classifier)
    checkpoint = tmp_path / "models" / "gan" / "epoch_03.pt"
    damaged(checkpoint, "empty")
    with pytest.raises(files.UnreadableFileError, match=re.escape(f"{checkpoint}: empty (truncated)")):
        resume.load_checkpoint(checkpoint, generator=None, discriminator=None, opt_g=None, opt_d=None, rng=None)


def test_no_torch_load_outside_load_torch():
    calls = [f"{p.relative_to(ROOT)}:{n}" for folder in ("src", "stages") for p in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if "torch.load(" in line and p.name != "files.py"]
    assert calls == []
