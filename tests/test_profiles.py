"""Params profiles (profiles/*.yaml): params.yaml with a profile applied is valid, and every network
it names builds on its dataset's images, so that `dvc exp run` with its flags starts cleanly."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile", sorted((ROOT / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_a_profile_gives_valid_params_and_its_flags(profile):
    result = subprocess.run([sys.executable, "benchmarks/profile_flags.py", str(profile)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    flags = result.stdout.split()
    assert flags[0] == "-S" and len(flags) % 2 == 0 and all(flag == "-S" for flag in flags[::2])


def test_a_profile_naming_a_missing_key_is_refused(tmp_path):
    profile = tmp_path / "bad.yaml"
    profile.write_text("train_gan.gan-2014.widht: 8\n")
    result = subprocess.run([sys.executable, "benchmarks/profile_flags.py", str(profile)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "train_gan.gan-2014.widht: params.yaml has no such key" in result.stderr
