"""Minimal reruns: after an edit of one key of params.yaml (or of one library function), `dvc status`
names only the stages that declare it, and `dvc repro` reruns them and the stages downstream of
them, nothing else.

The expected lists are written out by hand from dvc.yaml. Every section's edit is checked at
`dvc status`, and its rerun list against DVC's own graph (what lies downstream of the stages
named); five real `dvc repro` runs cover each kind of link: a param read by one stage, a param read
by two stages, a model used by another entry's stage for transfer, a stage whose outputs come out
the same (download), and a library function.
"""

import networkx as nx
import pytest

pytestmark = pytest.mark.slow

LINEAR = ["train-linear@one_epoch", "train-linear@slide_code_loss", "train-linear@long"]
CNN = ["train-cnn@mnist-course", "train-cnn@mnist", "train-cnn@cifar10-linear", "train-cnn@cifar10-mlp",
       "train-cnn@cifar10-cnn", "train-cnn@cifar10-airnet", "train-cnn@mnist-robust"]
EVALUATE = ["evaluate@linear/one_epoch", "evaluate@cnn/mnist-course", "evaluate@cnn/mnist",
            "evaluate@cnn/cifar10-linear", "evaluate@cnn/cifar10-mlp", "evaluate@cnn/cifar10-cnn",
            "evaluate@cnn/cifar10-airnet"]
ATTACK = ["attack@cnn/mnist", "attack@cnn/mnist-robust", "attack@linear/one_epoch", "attack@cnn/cifar10-airnet"]
FOOLING = ["fooling@mnist", "fooling@mnist-robust", "fooling@cifar10"]
GAN_ENTRIES = ["conditional", "gan-2014", "dcgan-2015", "cogan-2016", "wgan-gp-2017", "progan-2017", "sngan-2018",
               "stylegan-2019"]
SCORE_GAN = [f"score-gan@{entry}" for entry in GAN_ENTRIES]
GAN = [f"train-gan@{entry}" for entry in GAN_ENTRIES] + SCORE_GAN
COMPUTING = LINEAR + CNN + EVALUATE + ATTACK + FOOLING + GAN  # every stage that declares `seed` and `device`
REPORT = ["report"]  # reads params.yaml whole (its sha256 is in the report): named by every edit
CHECK = ["check-params"]  # reads params.yaml whole too; its output stays the same while params are valid

# One edit per section: (params key, new value, what `dvc status` names, what `dvc repro` then runs).
EDITS = {
    # The same files come again from the same mirror: what lies downstream has nothing new to read.
    "download": ("download.timeout_s", 30.0, ["download"], None),
    "train_linear": ("train_linear.one_epoch.lr", 0.002, ["train-linear@one_epoch"],
                     ["train-linear@one_epoch", "evaluate@linear/one_epoch", "attack@linear/one_epoch"]),
    # mnist-course is the second network that fooling@mnist measures transfer on
    "train_cnn": ("train_cnn.mnist-course.lr", 0.02, ["train-cnn@mnist-course"],
                  ["train-cnn@mnist-course", "evaluate@cnn/mnist-course", "fooling@mnist"]),
    # cnn/mnist is evaluated, attacked, fooled, shown the robust network's fooling images, and judges the GAN's samples
    "train_cnn.mnist": ("train_cnn.mnist.lr", 0.2, ["train-cnn@mnist"],
                        ["train-cnn@mnist", "evaluate@cnn/mnist", "attack@cnn/mnist", "fooling@mnist",
                         "fooling@mnist-robust", *SCORE_GAN]),
    "evaluate": ("evaluate.confident", 0.8, EVALUATE, EVALUATE),
    "attack": ("attack.models.linear/one_epoch.eps", [0.0, 0.1, 0.2], ["attack@linear/one_epoch"],
               ["attack@linear/one_epoch"]),
    "attack.shared": ("attack.pgd_steps", 3, ATTACK, ATTACK),
    "fooling": ("fooling.mnist.gradient_lr", 0.02, ["fooling@mnist"], ["fooling@mnist"]),
    # one era of the timeline: its training and its scoring (which rebuilds its generator), nothing else
    "train_gan": ("train_gan.sngan-2018.width", 6, ["train-gan@sngan-2018", "score-gan@sngan-2018"],
                  ["train-gan@sngan-2018", "score-gan@sngan-2018"]),
    "train_gan.recipe": ("train_gan.wgan-gp-2017.critic_steps", 3, ["train-gan@wgan-gp-2017", "score-gan@wgan-gp-2017"],
                         ["train-gan@wgan-gp-2017", "score-gan@wgan-gp-2017"]),
    "score_gan": ("score_gan.confident", 0.8, SCORE_GAN, SCORE_GAN),
    "seed": ("seed", 1, COMPUTING, COMPUTING),
    # On a machine without GPU `auto` already meant the CPU: `cpu` changes no result, yet every
    # stage that declares `device` is out of date.
    "device": ("device", "cpu", COMPUTING, COMPUTING),
}


def downstream(ws, stages: list[str]) -> list[str]:
    """The stages and every stage downstream of them, from DVC's own graph of the workspace."""
    from dvc.repo import Repo

    with Repo(str(ws.path)) as repo:
        graph = repo.index.graph  # an edge goes from a stage to the stages it depends on
        by_name = {stage.name: stage for stage in graph.nodes}
        found = set(stages)
        for name in stages:
            found |= {stage.name for stage in nx.ancestors(graph, by_name[name])}
    return sorted(found)


@pytest.mark.parametrize("edit", EDITS)
def test_an_edit_puts_only_its_readers_out_of_date(workspace, edit):
    key, value, named_by_status, rerun = EDITS[edit]
    workspace.set_param(key, value)
    assert workspace.out_of_date() == sorted(named_by_status + REPORT + CHECK)
    if rerun is not None:
        assert downstream(workspace, named_by_status) == sorted(rerun + REPORT)


@pytest.mark.parametrize("edit", ["download", "train_linear", "train_gan", "train_cnn.transfer"])
def test_an_edit_reruns_exactly_what_depends_on_it(workspace, edit):
    key, value, _, rerun = {
        **EDITS,
        "train_cnn.transfer": ("train_cnn.cifar10-cnn.lr", 0.02, None,  # also fooling@cifar10's transfer network
                               ["train-cnn@cifar10-cnn", "evaluate@cnn/cifar10-cnn", "fooling@cifar10"]),
    }[edit]
    rerun = rerun or ["download"]
    workspace.set_param(key, value)
    ran = workspace.repro()
    assert sorted(ran) == sorted(CHECK + rerun + REPORT) and len(set(ran)) == len(ran), ran
    assert workspace.repro() == []


def test_an_edit_of_a_function_only_fooling_uses_reruns_every_fooling_entry_and_nothing_upstream(workspace):
    module = workspace.path / "src/dlcourse/course/cppn.py"
    source = module.read_text()
    assert "def render(" in source
    module.write_text(source.replace("def render(", "def render(  # edited\n", 1))
    assert sorted(workspace.repro()) == sorted(FOOLING + REPORT)
    assert workspace.repro() == []


def test_a_value_put_back_leaves_nothing_out_of_date(workspace):
    before = workspace.params()["seed"]
    workspace.set_param("seed", before + 1)
    assert workspace.out_of_date() == sorted(COMPUTING + REPORT + CHECK)
    workspace.set_param("seed", before)
    assert workspace.out_of_date() == []  # dvc compares the values, not the file's time


@pytest.mark.parametrize("key, value, message", [
    ("train_gan.conditional.widht", 8, "train_gan.conditional.widht: unknown key (a typo?)"),
    ("train_gan.conditional.width", "8", "train_gan.conditional.width: Input should be a valid integer"),
    ("train_gan.gan-2014.era", "gan-2016", "train_gan.gan-2014.era: Input should be 'gan-2014'"),
    ("score_gan.feature_layer", "net.head.99", "score_gan.feature_layer: cnn/mnist has no layer 'net.head.99'"),
    ("train_cnn.mnist.model", {"widths": [16], "hidden": 128}, "train_cnn.mnist: mnistnet"),
])
def test_bad_params_stop_the_pipeline_before_any_output_is_removed(workspace, key, value, message):
    section, _, name = key.rpartition(".")
    def edit(params):
        node = params
        for part in section.split("."):
            node = node[part]
        node[name] = value
        return params

    workspace.edit_params(edit)
    before = sorted(p.name for p in (workspace.path / "models/gan/conditional").iterdir())
    output = workspace.run("dvc", "repro", check=False)
    assert message in output and "check-params" in output, output
    assert sorted(p.name for p in (workspace.path / "models/gan/conditional").iterdir()) == before
    assert (workspace.path / "models/cnn/mnist.pt").exists()
