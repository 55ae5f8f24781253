"""Minimal reruns: after an edit of one key of params.yaml, `dvc status` names only the stages that
declare the key, and `dvc repro` reruns them and the stages whose inputs then change, nothing else.

The expected lists are written out from the DAG of dvc.yaml (which stage reads which key, which
output feeds which stage), not computed from it. To keep the module within minutes, the matrices
are cut to the entries that keep every kind of link: a model evaluated, attacked, fooled, used for
transfer and to judge the GAN."""

import json
from pathlib import Path

import pytest
import yaml

from test_pipeline import Workspace, tiny_params, tiny_workspace

pytestmark = pytest.mark.slow

LINEAR = ["train-linear@one_epoch", "train-linear@slide_code_loss", "train-linear@long"]
CNN = ["train-cnn@mnist-course", "train-cnn@mnist", "train-cnn@cifar10-cnn", "train-cnn@cifar10-airnet"]
EVALUATE = ["evaluate@linear/one_epoch", "evaluate@cnn/mnist-course"]
ATTACK = ["attack@cnn/mnist", "attack@linear/one_epoch"]
FOOLING = ["fooling@mnist", "fooling@cifar10"]
GAN = ["train-gan", "score-gan"]
ON_DEVICE = LINEAR + CNN + EVALUATE + ATTACK + FOOLING + GAN  # every stage that declares `device`
SEEDED = ON_DEVICE + ["report"]  # every stage that declares `seed`

# One edit per section: (params key, new value, what `dvc status` names, what `dvc repro` then runs).
EDITS = {
    # The same files come again from the same mirror: preprocess has nothing new to read.
    "download": ("download.timeout_s", 30.0, ["download"], ["download"]),
    "train_linear": ("train_linear.slide_code_loss.lr", 0.002, ["train-linear@slide_code_loss"],
                     ["train-linear@slide_code_loss", "report"]),
    # mnist-course is also the second network that fooling@mnist measures transfer on
    "train_cnn": ("train_cnn.mnist-course.lr", 0.02, ["train-cnn@mnist-course"],
                  ["train-cnn@mnist-course", "evaluate@cnn/mnist-course", "fooling@mnist", "report"]),
    "evaluate": ("evaluate.confident", 0.8, EVALUATE, EVALUATE + ["report"]),
    "attack": ("attack.models.linear/one_epoch.claim_eps", 0.05, ["attack@linear/one_epoch"],
               ["attack@linear/one_epoch", "report"]),
    "fooling": ("fooling.mnist.confidence", 0.99, ["fooling@mnist"], ["fooling@mnist", "report"]),
    # score-gan reads the generator's width too, to rebuild it
    "train_gan": ("train_gan.width", 4, GAN, GAN + ["report"]),
    "score_gan": ("score_gan.confident", 0.8, ["score-gan"], ["score-gan", "report"]),
}
# The shared keys: nearly every stage reads them, so `dvc repro` would run the whole pipeline again;
# the test stops at `dvc status`, then puts the value back. On a machine without GPU, device `auto`
# already meant the CPU: `cpu` changes no result, yet every stage that declares `device` is out of date.
SHARED = {"seed": (1, SEEDED), "device": ("cpu", ON_DEVICE)}


def fewer_entries(params: dict) -> dict:
    for entry in ("cifar10-linear", "cifar10-mlp"):
        del params["train_cnn"][entry]
    params["evaluate"]["models"] = ["linear/one_epoch", "cnn/mnist-course"]
    del params["attack"]["models"]["cnn/cifar10-airnet"]
    return params


def new_workspace(path: Path, mirror: Path, *targets: str) -> Workspace:
    """A tiny copy of the repository in git, after `dvc repro [targets]`."""
    ws = tiny_workspace(path, mirror, lambda params: fewer_entries(tiny_params(params)))
    ws.env["CUDA_VISIBLE_DEVICES"] = ""  # `device: auto` means the CPU, where training is byte-reproducible
    ws.first_run = ws.repro(*targets)
    return ws


def set_param(ws: Workspace, key: str, value) -> None:
    def edit(params: dict) -> dict:
        *sections, name = key.split(".")
        section = params
        for part in sections:
            section = section[part]
        assert name in section, f"params.yaml has no {key}"
        assert section[name] != value, f"{key} is already {value!r}: no edit"
        section[name] = value
        return params

    ws.edit_params(edit)


def out_of_date(ws: Workspace) -> list[str]:
    return sorted(json.loads(ws.run("dvc", "status", "--json")))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, mirror) -> Workspace:
    return new_workspace(tmp_path_factory.mktemp("reruns"), mirror)


def test_the_lists_name_every_stage_once(workspace):
    stages = [line.split()[0] for line in workspace.run("dvc", "stage", "list").splitlines() if line.strip()]
    assert sorted(SEEDED + ["download", "preprocess"]) == sorted(stages) == sorted(workspace.first_run)


@pytest.mark.parametrize("section", EDITS)
def test_an_edit_reruns_only_what_depends_on_it(workspace, section):
    key, value, named_by_status, rerun = EDITS[section]
    set_param(workspace, key, value)
    assert out_of_date(workspace) == sorted(named_by_status)
    ran = workspace.repro()
    assert sorted(ran) == sorted(rerun) and len(set(ran)) == len(ran), ran
    assert workspace.repro() == []


@pytest.mark.parametrize("key", SHARED)
def test_a_shared_key_puts_every_stage_that_reads_it_out_of_date(workspace, key):
    value, named_by_status = SHARED[key]
    before = yaml.safe_load((workspace.path / "params.yaml").read_text())[key]
    set_param(workspace, key, value)
    assert out_of_date(workspace) == sorted(named_by_status)
    set_param(workspace, key, before)
    assert out_of_date(workspace) == []  # dvc compares the values, not the file's time
