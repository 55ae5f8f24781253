"""Guards of params.yaml: every float finite, every size bounded, the seed in numpy's range, entry
names safe in a command and a path, and check-params measuring networks without allocating them."""

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dlcourse.pipeline import params

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = params.read_yaml(ROOT / "params.yaml")


def edited(path: str, value) -> dict:
    raw = copy.deepcopy(DEFAULTS)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[last] = value
    return raw


def with_entry(section: str, name: str) -> dict:
    """params with one more entry of `section`, a copy of its first."""
    raw = copy.deepcopy(DEFAULTS)
    raw[section][name] = copy.deepcopy(next(iter(raw[section].values())))
    return raw


@pytest.mark.parametrize("path, value, message", [
    ("train_cnn.mnist.lr", math.inf, "train_cnn.mnist.lr: must be a finite number (got inf)"),
    ("train_cnn.mnist.weight_decay", math.inf, "train_cnn.mnist.weight_decay: must be a finite number (got inf)"),
    ("train_linear.long.lr", math.nan, "train_linear.long.lr: must be a finite number (got nan)"),
    ("train_gan.wgan-gp-2017.penalty_weight", math.inf, "train_gan.wgan-gp-2017.penalty_weight: must be a finite number"),
    ("train_gan.conditional.lr_d", -math.inf, "train_gan.conditional.lr_d: must be a finite number (got -inf)"),
    ("fooling.mnist.cppn_weight_sigma", math.inf, "fooling.mnist.cppn_weight_sigma: must be a finite number"),
    ("attack.pgd_step_factor", math.nan, "attack.pgd_step_factor: must be a finite number (got nan)"),
    ("train_cnn.cifar10-mlp.model", {"in_shape": [3, 32, 32], "hidden": [512], "dropout": math.nan},
     "train_cnn.cifar10-mlp.model.dropout: must be a finite number (got nan)"),
    ("seed", 2**32, "seed: Input should be less than or equal to 4294967295 (got 4294967296)"),
    ("train_gan.conditional.latent_dim", 10_000_000,
     "train_gan.conditional.latent_dim: Input should be less than or equal to 65536"),
    ("train_cnn.mnist.batch_size", 600_000, "train_cnn.mnist.batch_size: Input should be less than or equal to 60000"),
    ("train_linear.one_epoch.init_eval_size", 20_000,
     "train_linear.one_epoch.init_eval_size: Input should be less than or equal to 10000"),
    ("train_cnn.mnist.threads", 100_000, "train_cnn.mnist.threads: Input should be less than or equal to 1024"),
    ("train_gan.gan-2014.grid_size", 64_000, "train_gan.gan-2014.grid_size: Input should be less than or equal to 1024"),
    ("attack.subset", 1_000_000, "attack.subset: Input should be less than or equal to 10000"),
    ("score_gan.samples", 10**9, "score_gan.samples: Input should be less than or equal to 60000"),
    ("fooling.cifar10.cppn_population", 10**7, "fooling.cifar10.cppn_population: Input should be less than or equal to 10000"),
    ("evaluate.hardest", 10**6, "evaluate.hardest: Input should be less than or equal to 1024"),
])
def test_a_value_out_of_bounds_is_named(path, value, message):
    with pytest.raises(params.ParamsError) as err:
        params.validate(edited(path, value))
    lines = str(err.value).splitlines()
    assert lines[1:] == [f"  {lines[1].strip()}"] and lines[1].strip().startswith(message)  # one line, the key's


@pytest.mark.parametrize("section, name", [
    ("train_cnn", "my net"), ("train_gan", "../x"), ("train_linear", "a;rm -rf ~"), ("train_cnn", "x'y"),
    ("train_cnn", "-n"), ("train_linear", ".hidden"), ("train_gan", "a/b"), ("train_cnn", "é"), ("train_cnn", "x" * 65),
])
def test_an_entry_name_unsafe_in_a_command_or_a_path_is_refused(section, name):
    with pytest.raises(params.ParamsError) as err:
        params.validate(with_entry(section, name))
    assert f"{section}: the entry name {name!r} is not allowed: a letter or digit, then letters" in str(err.value)


@pytest.mark.parametrize("name", ["mnist2", "cifar10-airnet.v2", "My_Run-3", "x" * 64])
def test_the_documented_entry_names_pass(name):
    params.validate(with_entry("train_cnn", name))


CHECK = """
import resource, sys, yaml
from dlcourse.pipeline import params
from dlcourse.pipeline.checks import check
try:
    check(params.validate(yaml.safe_load(open("params.yaml"))))
    print("valid")
except ValueError as exc:
    print(exc)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def check_params_run(tmp_path, raw: dict) -> tuple[str, int]:
    """check-params' checks on `raw`, in a fresh process: what it says, and its peak memory in MB."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, check=True)
    *message, peak = result.stdout.strip().splitlines()
    return "\n".join(message), int(peak)


@pytest.mark.parametrize("path, value, message", [
    ("train_gan.conditional.latent_dim", 60_000,
     "params.yaml: train_gan.conditional: the dcgan-conditional generator (latent_dim 60000, width 32) has "
     "188,224,833 parameters, over the budget of 50,000,000 (checks.PARAMETER_BUDGET)"),
    ("train_cnn.mnist.model", {"widths": [100_000, 64], "hidden": 128},
     "params.yaml: train_cnn.mnist: mnistnet({'hidden': 128, 'widths': [100000, 64]}) has 90,059,340,202 parameters"),
    ("train_cnn.cifar10-mlp.model", {"in_shape": [3, 32, 32], "hidden": [100_000, 64]},
     "params.yaml: train_cnn.cifar10-mlp: mlp({'hidden': [100000, 64], 'in_shape': [3, 32, 32]}) has 313,700,714 "
     "parameters, over the budget"),
    ("train_gan.dcgan-2015.width", 20_000, "params.yaml: train_gan.dcgan-2015: the dcgan-2015 generator"),
])
def test_check_params_refuses_a_network_over_budget_without_allocating_it(tmp_path, baseline_peak, path, value,
                                                                         message):
    said, peak = check_params_run(tmp_path, edited(path, value))
    assert said.startswith(message)
    assert peak < baseline_peak + 100  # MB: the network is measured on the meta device, never allocated


@pytest.fixture(scope="module")
def baseline_peak(tmp_path_factory) -> int:
    """check-params' peak memory on the repository's params (MB)."""
    said, peak = check_params_run(tmp_path_factory.mktemp("baseline"), DEFAULTS)
    assert said == "valid"
    return peak


def test_check_params_still_refuses_a_network_that_does_not_fit_its_images(tmp_path):
    said, _ = check_params_run(tmp_path, edited("train_cnn.mnist.model", {"widths": [16, 32, 64], "hidden": 128}))
    assert said.startswith("params.yaml: train_cnn.mnist: mnistnet(") and "does not build or run on mnist images" in said


def test_the_budget_check_counts_parameters_as_a_real_network_has_them():
    import torch

    from dlcourse.course.models import Classifier, check_buildable, parameter_count

    for name, entry in params.validate(DEFAULTS).train_cnn.items():
        meta = check_buildable(name, entry.architecture, entry.model, entry.dataset)
        real = Classifier(entry.architecture, entry.model, meta.mean.shape[1])
        assert sum(t.numel() for t in meta.parameters()) == parameter_count(real)
        assert meta.mean.device == torch.device("meta")
