"""The rules of the course's claims about its networks on MNIST and CIFAR-10: the data's size, the
linear network (Reseau1) at initialisation, after one epoch and trained longer, the CNN (Reseau2) and
its training time, the networks on CIFAR-10, and the test images a network gets very wrong.

Each bar is fixed here, before the data it judges is seen; each rule is named after its claim's id
and gives (measured, values, holds). The claims' texts, built from these bars, are in `claims`."""

from __future__ import annotations

from ..files import rebuild_hint
from .results import ClaimError, Results
from .verdicts import floor, pct

MNIST_SIZE = (60000, 10000)
INIT_BAND = (0.07, 0.13)  # "à peu près 10 %": a random guess among 10 classes
ONE_EPOCH_BAND = (0.875, 0.925)  # "environ 90 %"
PLATEAU_GAIN_MAX = 0.02  # "pas vraiment [...] nettement plus élevée": at most 2 points more
# ... and the long run ends on its plateau, at most 2 points below the one-epoch run: a run that
# diverged (to 10 %) shows no plateau, though it gains nothing
PLATEAU_FINAL_LOSS_MAX = 0.02
PLATEAU_LENGTH_MIN = 5  # the long run trains at least 5x as many iterations as the one-epoch run
CNN_BAR, CNN_EPOCHS = 0.97, 2  # "en 1 ou 2 epochs une précision de 97~98%"
SLOWER_MIN = 5  # "nettement plus long": an epoch at least 5x as long
CIFAR10_BAR = 0.5  # "plus de 50%"
VERY_WRONG_MIN = 0.9  # the least confidence that counts as "very wrong"


def mnist_size(r: Results):
    data = r.metrics("data")
    train, test = data["mnist.train"]["count"], data["mnist.test"]["count"]
    return f"{train} train / {test} test images", {"train": train, "test": test}, (train, test) == MNIST_SIZE


def linear_init(r: Results):
    m = r.metrics("linear/one_epoch")
    mean = m["init_accuracy_mean"]
    return (f"{pct(mean)} on average over {m['init_trials']} initialisations "
            f"(this run's own initialisation: {pct(m['init_batch_accuracy'])})",
            {"mean": mean, "this_run": m["init_batch_accuracy"], "trials": m["init_trials"]},
            INIT_BAND[0] <= mean <= INIT_BAND[1])


def linear_one_epoch(r: Results):
    m = r.metrics("linear/one_epoch")
    acc = m["test_accuracy"]
    return (f"{pct(acc)} after {m['iterations']} iterations ({m['epochs']:g} epoch)", {"test_accuracy": acc},
            ONE_EPOCH_BAND[0] <= acc <= ONE_EPOCH_BAND[1])


def linear_plateau(r: Results):
    one, long = r.metrics("linear/one_epoch"), r.metrics("linear/long")
    gain = long["best_test_accuracy"] - one["test_accuracy"]
    length = long["iterations"] / one["iterations"]
    return (f"{long['epochs']:g} epochs: best {pct(long['best_test_accuracy'])}, final {pct(long['test_accuracy'])}; "
            f"{100 * gain:+.2f} points over one epoch ({pct(one['test_accuracy'])})",
            {"one_epoch": one["test_accuracy"], "long_best": long["best_test_accuracy"],
             "long_final": long["test_accuracy"], "gain": gain, "length_factor": length},
            gain <= PLATEAU_GAIN_MAX and length >= PLATEAU_LENGTH_MIN
            and long["test_accuracy"] >= one["test_accuracy"] - PLATEAU_FINAL_LOSS_MAX)


def cnn_mnist(r: Results):
    curve = r.curve("cnn/mnist-course")
    early = curve[curve["epoch"] <= CNN_EPOCHS]
    if early.empty:
        raise ClaimError(f"{r.plots_dir / 'cnn/mnist-course.csv'}: no epoch <= {CNN_EPOCHS}; "
                         f"{rebuild_hint('plots/cnn/mnist-course.csv')}")
    by_epoch = ", ".join(f"epoch {int(e)}: {pct(a)}" for e, a in zip(early["epoch"], early["test_accuracy"]))
    best = float(early["test_accuracy"].max())
    return f"Reseau2, {by_epoch}", {"by_epoch": early["test_accuracy"].tolist(), "best": best}, best >= CNN_BAR


def cnn_slower(r: Results):
    linear, cnn = r.metrics("timing/train-linear@one_epoch"), r.metrics("timing/train-cnn@mnist-course")
    if not linear["train_seconds"] > 0:
        raise ClaimError(f"{r.metrics_dir / 'timing/train-linear@one_epoch.json'}: train_seconds is "
                         f"{linear['train_seconds']}, not a time; {rebuild_hint('metrics/timing/train-linear@one_epoch.json')}")
    per_epoch = cnn["train_seconds"] / r.metrics("cnn/mnist-course")["epochs"]
    ratio = per_epoch / linear["train_seconds"]
    return (f"one epoch: Reseau1 {linear['train_seconds']:.2f} s, Reseau2 {per_epoch:.1f} s ({ratio:.0f}x longer, "
            f"on {cnn['device']})",
            {"linear_epoch_seconds": linear["train_seconds"], "cnn_epoch_seconds": per_epoch, "ratio": ratio},
            ratio >= SLOWER_MIN)


def cifar10_entries(r: Results) -> dict[str, dict]:
    return {name: m for name, m in r.per_model("cnn").items() if m["dataset"] == "cifar10"}


def cifar10_50(r: Results):
    entries = cifar10_entries(r)
    passing = [name for name, m in entries.items() if m["test_accuracy"] > CIFAR10_BAR]
    listing = ", ".join(f"{name} {pct(m['test_accuracy'])}" for name, m in entries.items())
    return (f"{len(passing)} of {len(entries)} networks pass: {listing}",
            {name: {"test_accuracy": m["test_accuracy"], "passes": m["test_accuracy"] > CIFAR10_BAR}
             for name, m in entries.items()},
            bool(passing))


def hard_errors(r: Results):
    models = r.per_model("evaluate")
    counts = {name: m["confidently_wrong"] for name, m in models.items()}
    bars = {floor(m["confident_threshold"], VERY_WRONG_MIN, f"evaluate.confident ({name})")
            for name, m in models.items()}
    listing = ", ".join(f"{name}: {n}" for name, n in counts.items())
    return (f"test images misclassified with confidence >= {' / '.join(f'{b:g}' for b in sorted(bars))}: {listing}",
            counts, bool(counts) and all(n > 0 for n in counts.values()))
