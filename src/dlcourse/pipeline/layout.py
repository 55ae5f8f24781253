"""Where stages read and write, relative to the repository root (DVC runs every stage there): every
output path is named here once. `outputs` lists each stage's, and tests/test_layout.py checks
them against dvc.yaml's outs, metrics and plots."""

from pathlib import Path

RAW = Path("data/raw")
PREPARED = Path("data/prepared")
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")
VERDICTS = REPORTS / "verdicts.json"  # the DVC metric of the report: each claim holds or not
TRACKING = Path("tracking")
PARAMS_CHECK = Path("checks/params.ok")
DATASETS = ("mnist", "cifar10")
DATA_SUMMARY = METRICS / "data.json"
# The three fooling methods of Nguyen et al. 2015, each with its figure's name and its title
FOOLING_METHODS = {"gradient": "gradient ascent", "evolution": "evolution of the pixels (direct encoding)",
                   "cppn": "CPPN evolved with MAP-Elites"}


def prepared_split(dataset: str, split: str) -> Path:
    """A prepared split (`data/prepared/mnist/train.pt`): preprocess writes it, the other stages read it."""
    return PREPARED / dataset / f"{split}.pt"


def run_record(stage: str) -> Path:
    """A stage's MLflow run id and times (the report's own goes to `reports/run.json`)."""
    return TRACKING / f"{stage}.json"


def timing(stage: str) -> Path:
    """A stage's wall times and the device they were measured on (not compared between runs)."""
    return METRICS / "timing" / f"{stage}.json"


def model(name: str) -> Path:
    """A trained classifier, by its name: `cnn/mnist`, `linear/one_epoch`."""
    return MODELS / f"{name}.pt"


def training_metrics(name: str) -> Path:
    return METRICS / f"{name}.json"


def training_curve(name: str) -> Path:
    return PLOTS / f"{name}.csv"


def evaluation(name: str) -> Path:
    """The folder of a model's evaluation figures and predictions."""
    return PLOTS / "evaluate" / name


def evaluation_metrics(name: str) -> Path:
    return METRICS / "evaluate" / f"{name}.json"


def attack(name: str) -> Path:
    """The folder of a model's robustness figures and tables."""
    return PLOTS / "attack" / name


def attack_metrics(name: str) -> Path:
    return METRICS / "attack" / f"{name}.json"


def fooling_plots(dataset: str) -> Path:
    """The folder of a dataset's fooling images, one per method."""
    return PLOTS / "fooling" / dataset


def fooling(dataset: str, method: str) -> Path:
    return fooling_plots(dataset) / f"{method}.png"


def fooling_metrics(dataset: str) -> Path:
    return METRICS / "fooling" / f"{dataset}.json"


def gan_checkpoints(entry: str) -> Path:
    return MODELS / "gan" / entry


def gan_plots(entry: str) -> Path:
    """A GAN entry's figures and curves: `samples/`, `interpolation.png`, `losses.csv`, `scores.csv`."""
    return PLOTS / "gan" / entry


def gan_metrics(entry: str, name: str) -> Path:
    """`train` (train-gan's) or `scores` (score-gan's)."""
    return METRICS / "gan" / entry / f"{name}.json"


def outputs(stage: str, key: str | None = None) -> list[Path]:
    """Every output of a stage (`key`: the entry of a `foreach` stage), as dvc.yaml declares them."""
    name = f"{stage}@{key}" if key is not None else stage
    record = [run_record(name)]
    if stage == "check-params":
        return [PARAMS_CHECK]
    if stage == "download":
        return [RAW / dataset for dataset in DATASETS] + record
    if stage == "preprocess":
        return [PREPARED / dataset for dataset in DATASETS] + record + [DATA_SUMMARY]
    if stage in ("train-linear", "train-cnn"):
        trained = f"{stage.removeprefix('train-')}/{key}"
        return [model(trained), training_curve(trained), training_metrics(trained), timing(name)] + record
    if stage == "evaluate":
        figures = [evaluation(key) / f"{figure}.png" for figure in ("confusion", "reliability", "hardest_errors")]
        return figures + [evaluation(key) / "predictions.csv", evaluation_metrics(key)] + record
    if stage == "attack":
        files = ("accuracy_vs_eps.png", "corruptions.png", "examples.png", "eps_grid.png", "eps.csv", "corruptions.csv")
        return [attack(key) / file for file in files] + [attack_metrics(key)] + record
    if stage == "fooling":
        figures = [fooling(key, method) for method in FOOLING_METHODS]
        return figures + [fooling_metrics(key), timing(name)] + record
    if stage == "train-gan":
        plots = gan_plots(key)
        return [gan_checkpoints(key), plots / "samples", plots / "interpolation.png", plots / "losses.csv",
                gan_metrics(key, "train"), timing(name)] + record
    if stage == "score-gan":
        return [gan_plots(key) / "scores.csv", gan_metrics(key, "scores"), timing(name)] + record
    if stage == "report":
        return [REPORTS / name for name in ("figures", "report.md", "report.html", "run.json", "claims.json")] + [VERDICTS]
    raise KeyError(f"layout: no stage {stage!r}")
