"""Guards against silent wrong results: a training that diverges stops before anything is written,
every JSON written or read is strict, and a diverged network is never evaluated or scored. Each
case checks the error text and that nothing partial is left behind."""

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dlcourse import files
from dlcourse.course.gans.eras import Discriminator, Generator
from dlcourse.course.gans.generative import make_optimizers, train_gan
from dlcourse.course.models import Classifier, Reseau1, load_classifier, save_classifier
from dlcourse.course.divergence import DivergedError, check_finite_weights, check_gan_epoch, divergence_explained
from dlcourse.course.training import (
    LOSSES,
    accuracy,
    seed_everything,
    train_epochs,
    train_iterations,
)

# --- strict JSON -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, key", [
    ({"ece": math.nan, "accuracy": 0.9}, "ece"),
    ({"curve": [0.1, math.inf]}, "curve[1]"),
    ({"per_class": {"3": {"recall": -math.inf}}}, "per_class.3.recall"),
])
def test_write_json_refuses_a_non_finite_value_naming_its_key_and_writes_nothing(tmp_path, value, key):
    path = tmp_path / "metrics" / "evaluate" / "cnn" / "mnist.json"
    with pytest.raises(files.NonFiniteValueError, match=f"^{re.escape(str(path))}: not written: {re.escape(key)} not finite"):
        files.write_json(path, value)
    assert not path.exists() and not any(tmp_path.rglob("*.part"))  # no partial file either


def test_write_json_keeps_an_earlier_good_file_when_refusing(tmp_path):
    path = tmp_path / "m.json"
    files.write_json(path, {"a": 1.0})
    with pytest.raises(files.NonFiniteValueError):
        files.write_json(path, {"a": math.nan})
    assert json.loads(path.read_text()) == {"a": 1.0}


@pytest.mark.parametrize("text, cause", [
    ('{"ece": NaN}', "corrupt or truncated JSON (NaN is not valid JSON"),
    ('{"ece": Infinity}', "corrupt or truncated JSON (Infinity is not valid JSON"),
    ('{"test_accuracy": 0.9', "corrupt or truncated JSON (Expecting"),
    ("", "empty (truncated)"),
    ("  \n", "empty (truncated)"),
])
def test_read_json_names_the_file_the_cause_and_the_stage_that_writes_it(tmp_path, text, cause):
    path = tmp_path / "metrics" / "cnn" / "mnist.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(files.UnreadableFileError) as err:
        files.read_json(path)
    assert str(err.value).startswith(f"{path}: {cause}")
    assert str(err.value).endswith("rebuild it with `dvc repro train-cnn@mnist`")
    assert path.read_text() == text  # left where it is


def test_read_json_of_a_missing_file_is_a_file_not_found_error_naming_the_stage(tmp_path):
    path = tmp_path / "metrics" / "gan" / "conditional" / "scores.json"
    with pytest.raises(FileNotFoundError, match=r"scores\.json: missing; rebuild it with `dvc repro score-gan@conditional`"):
        files.read_json(path)


@pytest.mark.parametrize("path, stage", [
    ("models/cnn/mnist.pt", "train-cnn@mnist"),
    ("metrics/cnn/cifar10-airnet.json", "train-cnn@cifar10-airnet"),
    ("/abs/ws/models/linear/one_epoch.pt", "train-linear@one_epoch"),
    ("metrics/linear/long.json", "train-linear@long"),
    ("metrics/evaluate/cnn/mnist.json", "evaluate@cnn/mnist"),
    ("metrics/attack/linear/long.json", "attack@linear/long"),
    ("metrics/fooling/cifar10.json", "fooling@cifar10"),
    ("metrics/gan/sngan-2018/scores.json", "score-gan@sngan-2018"),
    ("metrics/gan/sngan-2018/train.json", "train-gan@sngan-2018"),
    ("models/gan/conditional/epoch_02.pt", "train-gan@conditional"),
    ("tracking/attack@cnn/mnist.json", "attack@cnn/mnist"),  # the record of an entry named with a slash
    ("checks/params.ok", "check-params"),
    ("metrics/timing/train-cnn@mnist.json", "train-cnn@mnist"),
    ("tracking/evaluate@linear.json", "evaluate@linear"),
    ("metrics/data.json", "preprocess"),
    ("data/prepared/mnist/test.pt", "preprocess"),
    ("data/raw/mnist/t10k-images-idx3-ubyte.gz", "download"),
    ("reports/claims.json", "report"),
    ("plots/cnn/mnist-course.csv", "train-cnn@mnist-course"),
    ("plots/linear/long.csv", "train-linear@long"),
    ("plots/evaluate/cnn/mnist/predictions.csv", "evaluate@cnn/mnist"),
    ("plots/attack/linear/one_epoch/eps.csv", "attack@linear/one_epoch"),
    ("plots/fooling/mnist/cppn.png", "fooling@mnist"),
    ("plots/gan/conditional/scores.csv", "score-gan@conditional"),
    ("plots/gan/conditional/samples/epoch_01.png", "train-gan@conditional"),
    ("plots/gan/conditional/losses.csv", "train-gan@conditional"),
    ("somewhere/else.json", None),
])
def test_the_stage_that_writes_each_built_file(path, stage):
    assert files.writer_stage(path) == stage


# --- a training that diverges ----------------------------------------------------------------

def _separable(n: int = 120):
    y = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(0))
    x = 0.3 * torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    x[y == 1, :, :14] += 0.7
    return x, y


def _linear_run(lr: float, iterations: int = 20):
    rng = seed_everything(0)
    x, y = _separable()
    model = Reseau1()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    evaluations = []

    def evaluate():
        evaluations.append(1)
        return accuracy(model, x, y)

    curve, _ = train_iterations(model, optimizer, lambda s, t: LOSSES["log_softmax_nll"](s, t, "sum"), x, y,
                                iterations=iterations, batch_size=30, rng=rng, evaluate=evaluate, eval_every=5)
    return curve


def test_the_linear_loop_stops_at_the_first_non_finite_loss_naming_the_step():
    with pytest.raises(DivergedError, match=r"^loss is (nan|inf) at step (\d+) of 20$") as err:
        _linear_run(lr=1e36)
    step = int(err.value.args[0].split("at step ")[1].split()[0])
    assert 1 < step < 20  # the first steps are finite; it stops long before the last
    assert _linear_run(lr=0.01).test_accuracy[-1] > 0.9  # a sane rate trains to the end, unguarded


def test_the_epoch_loop_stops_at_the_first_epoch_whose_loss_is_not_finite():
    rng = seed_everything(0)
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(1))
    p = SimpleNamespace(epochs=3, epoch_images=None, batch_size=32, optimizer="sgd", lr=1e30, momentum=0.9, nesterov=True,
                        weight_decay=0.0, schedule="constant", warmup=0.0, gamma=1.0, label_smoothing=0.0, flip=False,
                        crop_padding=0, tta="none", channels_last=False, bf16=False, lookahead=False, bias_lr_scale=1.0)
    model = Classifier("airnet", {"widths": [24, 8, 8, 8]}, channels=3)
    model.fit_input_statistics(x, True)
    seen = []
    with pytest.raises(DivergedError, match=r"^loss is nan \(the mean of epoch 1 of 3\)$"):
        train_epochs(model, x, y, x, y, p, rng, on_epoch=seen.append)
    assert seen == []  # no epoch reported, logged or plotted


def test_non_finite_weights_after_the_last_step_are_refused():
    model = Reseau1()
    check_finite_weights(model, "now")
    with torch.no_grad():
        model.layer.weight[3, 7] = math.inf
    with pytest.raises(DivergedError, match=r"^the weight layer\.weight holds NaN or infinity after the end$"):
        check_finite_weights(model, "after the end")


def test_a_gan_epoch_that_diverged_stops_before_its_checkpoint_is_written():
    torch.manual_seed(0)
    generator, discriminator = Generator(8, 4), Discriminator(4)
    opt_g, opt_d = make_optimizers(generator, discriminator, 1e30, (0.5, 0.999), "sgd")
    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    written = []

    def end_of_epoch(epoch, history):  # train-gan's: the check first, then the epoch's files
        check_gan_epoch(history.g_loss, history.d_loss, epoch, 2,
                        {"generator": generator, "discriminator": discriminator})
        written.append(epoch)

    with pytest.raises(DivergedError, match=r"^loss is .* at generator step \d+ \(epoch 1 of 2\)$"):
        train_gan(generator, discriminator, opt_g, opt_d, images, epochs=2, batch_size=8,
                  rng=torch.Generator().manual_seed(0), device="cpu", on_epoch_end=end_of_epoch)
    assert written == []


def test_the_gan_epoch_check_names_the_first_bad_step_and_the_weights_after_the_last_epoch():
    check_gan_epoch([1.0, 2.0], [0.5, 0.4], 1, 2, {"generator": Reseau1()})
    with pytest.raises(DivergedError, match=r"^loss is 1\.0 \(generator\), nan \(discriminator\) at generator step 3 "
                                            r"\(epoch 2 of 2\)$"):
        check_gan_epoch([1.0, 2.0, 1.0, math.inf], [0.5, 0.4, math.nan, 0.3], 2, 2, {})
    broken = Reseau1()
    with torch.no_grad():
        broken.layer.bias[1] = math.nan
    check_gan_epoch([1.0], [1.0], 1, 2, {"generator": broken})  # weights checked after the last epoch only
    with pytest.raises(DivergedError, match=r"^the weight layer\.bias holds NaN or infinity in the discriminator "
                                            r"after the last epoch \(2\)$"):
        check_gan_epoch([1.0], [1.0], 2, 2, {"generator": Reseau1(), "discriminator": broken})


def test_the_stage_error_names_the_stage_where_and_the_suspicious_params():
    with pytest.raises(SystemExit) as err:
        with divergence_explained("train-cnn@mnist", {"train_cnn.mnist.lr": 1e30, "train_cnn.mnist.optimizer": "sgd"}):
            raise DivergedError("loss is nan (the mean of epoch 1 of 3)")
    message = str(err.value)
    assert message.startswith("train-cnn@mnist: training diverged: loss is nan (the mean of epoch 1 of 3); nothing was")
    assert "train_cnn.mnist.lr=1e+30, train_cnn.mnist.optimizer='sgd'" in message


def test_a_diverged_classifier_is_never_evaluated(tmp_path):
    model = Classifier("reseau1", {}, channels=1)
    with torch.no_grad():
        model.net.layer.bias[0] = math.nan
    path = tmp_path / "models" / "linear" / "one_epoch.pt"
    save_classifier(model, "mnist", [str(i) for i in range(10)], path)
    with pytest.raises(files.NonFiniteValueError,
                       match=rf"^{re.escape(str(path))}: the weights net\.layer\.bias hold NaN or infinity "
                             r".*`dvc repro train-linear@one_epoch`$"):
        load_classifier(path)
    assert path.exists()


def test_check_finite_tensors_ignores_integer_buffers_and_names_each_bad_one():
    files.check_finite_tensors({"steps": torch.tensor([3]), "w": torch.ones(2)}, Path("x.pt"))
    with pytest.raises(files.NonFiniteValueError, match=r"the weights a, c hold NaN"):
        files.check_finite_tensors({"a": torch.tensor([math.nan]), "b": torch.ones(1), "c": torch.tensor([-math.inf])},
                                   Path("x.pt"))
