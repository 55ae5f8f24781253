"""The course's claims, each checked against measured numbers, and the report that shows them
beside the figures and the environment they were measured in, as Markdown and as one
self-contained HTML page."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import mimetypes
import platform
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import pandas as pd
from markdown_it import MarkdownIt

from . import tracking
from .files import atomic_path, read_json
from .paths import METRICS, PLOTS


class Results:
    """Read access to the stages' metrics and curves, with a clear error for a missing one."""

    def __init__(self, metrics_dir: Path = METRICS, plots_dir: Path = PLOTS):
        self.metrics_dir, self.plots_dir = Path(metrics_dir), Path(plots_dir)

    def metrics(self, name: str) -> dict:
        path = self.metrics_dir / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; the stage that writes it has not run (see dvc.yaml)")
        return read_json(path)

    def optional_metrics(self, name: str) -> dict | None:
        """The metrics file, or None where the stage that would write it never does (or has not run)."""
        path = self.metrics_dir / f"{name}.json"
        return read_json(path) if path.exists() else None

    def per_model(self, stage: str) -> dict[str, dict]:
        """The metrics a per-model stage wrote, by model name ("cnn/mnist", "linear/one_epoch", ...)."""
        folder = self.metrics_dir / stage
        return {path.relative_to(folder).with_suffix("").as_posix(): read_json(path)
                for path in sorted(folder.rglob("*.json"))}

    def curve(self, name: str) -> pd.DataFrame:
        path = self.plots_dir / f"{name}.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; the stage that writes it has not run (see dvc.yaml)")
        return pd.read_csv(path)


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str  # what the course states, in English, with the tolerance used to check it
    course: str  # the course's own words (slides, in French)
    check: Callable[[Results], tuple[str, dict, bool]]  # -> (measured, values, holds)

    def evaluate(self, results: Results) -> dict:
        measured, values, holds = self.check(results)
        return {"id": self.id, "claim": self.claim, "course": self.course, "measured": measured,
                "values": values, "holds": bool(holds)}


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _mnist_size(r: Results):
    data = r.metrics("data")
    train, test = data["mnist.train"]["count"], data["mnist.test"]["count"]
    return f"{train} train / {test} test images", {"train": train, "test": test}, (train, test) == (60000, 10000)


def _linear_init(r: Results):
    m = r.metrics("linear/one_epoch")
    mean = m["init_accuracy_mean"]
    return (
        f"{pct(mean)} on average over {m['init_trials']} initialisations "
        f"(this run's own initialisation: {pct(m['init_batch_accuracy'])})",
        {"mean": mean, "this_run": m["init_batch_accuracy"], "trials": m["init_trials"]},
        0.07 <= mean <= 0.13,
    )


def _linear_one_epoch(r: Results):
    m = r.metrics("linear/one_epoch")
    acc = m["test_accuracy"]
    return f"{pct(acc)} after {m['iterations']} iterations ({m['epochs']:g} epoch)", {"test_accuracy": acc}, 0.875 <= acc <= 0.925


def _linear_plateau(r: Results):
    one, long = r.metrics("linear/one_epoch"), r.metrics("linear/long")
    best = long["best_test_accuracy"]
    return (
        f"best {pct(best)}, final {pct(long['test_accuracy'])} over {long['epochs']:g} epochs "
        f"(+{100 * (best - one['test_accuracy']):.2f} points over one epoch)",
        {"best": best, "final": long["test_accuracy"], "epochs": long["epochs"]},
        0.90 <= best <= 0.93,
    )


def _cnn_mnist(r: Results):
    curve = r.curve("cnn/mnist-course")
    early = curve[curve["epoch"] <= 2]
    by_epoch = ", ".join(f"epoch {int(e)}: {pct(a)}" for e, a in zip(early["epoch"], early["test_accuracy"]))
    best = float(early["test_accuracy"].max())
    return f"Reseau2, {by_epoch}", {"by_epoch": early["test_accuracy"].tolist(), "best": best}, best >= 0.97


def _cnn_slower(r: Results):
    linear, cnn = r.metrics("timing/train-linear@one_epoch"), r.metrics("timing/train-cnn@mnist-course")
    cnn_epochs = r.metrics("cnn/mnist-course")["epochs"]
    per_epoch = cnn["train_seconds"] / cnn_epochs
    ratio = per_epoch / linear["train_seconds"]
    return (
        f"one epoch: Reseau1 {linear['train_seconds']:.2f} s, Reseau2 {per_epoch:.1f} s ({ratio:.0f}x longer, "
        f"on {cnn['device']})",
        {"linear_epoch_seconds": linear["train_seconds"], "cnn_epoch_seconds": per_epoch, "ratio": ratio},
        ratio >= 5,
    )


def cifar10_entries(r: Results) -> dict[str, dict]:
    entries = {}
    for path in sorted((r.metrics_dir / "cnn").glob("*.json")):
        metrics = r.metrics(f"cnn/{path.stem}")
        if metrics["dataset"] == "cifar10":
            entries[path.stem] = metrics
    return entries


def _cifar10_50(r: Results):
    entries = cifar10_entries(r)
    passing = [name for name, m in entries.items() if m["test_accuracy"] > 0.5]
    listing = ", ".join(f"{name} {pct(m['test_accuracy'])}" for name, m in entries.items())
    return (
        f"{len(passing)} of {len(entries)} networks pass: {listing}",
        {name: {"test_accuracy": m["test_accuracy"], "passes": m["test_accuracy"] > 0.5} for name, m in entries.items()},
        bool(passing),
    )


def evaluated_models(r: Results) -> dict[str, dict]:
    return r.per_model("evaluate")


def _hard_errors(r: Results):
    models = evaluated_models(r)
    counts = {name: m["confidently_wrong"] for name, m in models.items()}
    threshold = next(iter(models.values()))["confident_threshold"] if models else 0.9
    listing = ", ".join(f"{name}: {n}" for name, n in counts.items())
    return (f"test images misclassified with confidence >= {threshold}: {listing}", counts,
            bool(counts) and all(n > 0 for n in counts.values()))


def attacked_models(r: Results) -> dict[str, dict]:
    return r.per_model("attack")


def _slight_corruption(r: Results):
    verdicts, parts = {}, []
    for name, m in attacked_models(r).items():
        drop = m["drop_at_claim_eps"]
        noise = max(drop["sign_noise"], drop["l2_noise"])
        verdicts[name] = {"eps": m["claim_eps"], "clean": m["clean_accuracy"], "pgd": m["at_claim_eps"]["pgd"],
                          "pgd_drop": drop["pgd"], "noise_drop": noise,
                          "holds": drop["pgd"] >= 0.5 and noise <= 0.02}
        parts.append(f"{name} at eps {m['claim_eps']:g}: {pct(m['clean_accuracy'])} → {pct(m['at_claim_eps']['pgd'])} "
                     f"under PGD, random noise of the same size costs {100 * noise:.1f} points")
    return "; ".join(parts), verdicts, bool(verdicts) and all(v["holds"] for v in verdicts.values())


def _fooling(r: Results):
    verdicts, parts = {}, []
    for path in sorted((r.metrics_dir / "fooling").glob("*.json")):
        m = read_json(path)
        reached = [method for method in ("gradient", "evolution") if m[method]["all_reached"]]
        verdicts[path.stem] = {"model": m["model"], "bar": m["confidence_bar"], "methods_reaching_every_class": reached}
        parts.append(f"{path.stem} ({m['model']}, bar {m['confidence_bar']}): every class reached by "
                     f"{' and '.join(reached) if reached else 'no method'}")
    return "; ".join(parts), verdicts, bool(verdicts) and all(v["methods_reaching_every_class"] for v in verdicts.values())


def _gan_digits(r: Results):
    m = r.metrics("gan/scores")
    generated, real = m["generated"], m["real_test"]
    fractions = generated["class_fractions"]
    holds = generated["confident_fraction"] >= 0.9 and min(fractions) >= 0.05
    return (
        f"{pct(generated['confident_fraction'])} of {m['samples']} samples classified with confidence >= "
        f"{m['confident_threshold']} (real test set: {pct(real['confident_fraction'])}); rarest digit "
        f"{fractions.index(min(fractions))} at {pct(min(fractions))}; Inception-Score analogue "
        f"{generated['inception_score']:.2f} (real: {real['inception_score']:.2f}); Fréchet distance "
        f"{generated['frechet_distance']:.2f} (real half vs half: {real['frechet_distance_half_vs_half']:.2f})"
        + (f"; class-conditional GAN, each digit asked for equally often: the classifier reads the digit asked for "
           f"in {pct(generated['label_agreement'])}" if m.get("conditional") else "; unconditional GAN"),
        {"generated": generated, "real_test": real, "conditional": m.get("conditional", False)},
        holds,
    )


CLAIMS = [
    Claim("mnist-size", "MNIST has 60,000 training and 10,000 test images.",
          "Un ensemble d'entraînement de taille 60000 [...] Et un ensemble de test de taille 10000", _mnist_size),
    Claim("linear-init",
          "Right after initialisation, the linear network is right about 10 % of the time on a 1000-image "
          "test batch, as a random guess among 10 classes (checked: mean over initialisations within 7-13 %).",
          "Juste après initialisation [...] le réseau effectue une prédiction correcte dans à peu près 10% des cas",
          _linear_init),
    Claim("linear-one-epoch",
          "After 1000 iterations on batches of 60 (one epoch), about 90 % of test predictions are right "
          "(checked: 87.5-92.5 %).",
          "Après 1000 itérations sur des batchs de taille 60 (une \"epoch\") [...] correctes à environ 90%",
          _linear_one_epoch),
    Claim("linear-plateau",
          "Training the linear network longer does not give a clearly higher accuracy than 90-92 % "
          "(checked: the best test accuracy of the long run stays within 90-93 %).",
          "entraîner le réseau plus longtemps ne permet pas vraiment d'obtenir une précision nettement plus "
          "élevée que 90~92%", _linear_plateau),
    Claim("cnn-mnist", "The course's CNN (Reseau2) reaches 97-98 % within 1-2 epochs (checked: >= 97 % by epoch 2).",
          "il est possible d'atteindre en 1 ou 2 epochs une précision de 97~98%", _cnn_mnist),
    Claim("cnn-slower",
          "The CNN's training takes much longer than the linear network's (checked: an epoch takes >= 5x longer).",
          "Avec l'architecture proposée, le temps d'apprentissage est nettement plus long (car il y a beaucoup plus "
          "de paramètres)", _cnn_slower),
    Claim("cifar10-50", "Simple and more complex networks on CIFAR-10: more than 50 % test accuracy (checked: at "
          "least one network above 50 %; each network's verdict in `values`).",
          "Tester des réseaux simples et plus complexes sur la base de données CIFAR 10. Tenter d'obtenir plus de "
          "50% de précision sur CIFAR 10.", _cifar10_50),
    Claim("hard-errors", "There are test images on which the network is very wrong (checked: every evaluated model "
          "misclassifies some test images with confidence >= 0.9).",
          "Trouver des images sur lesquelles le réseau se trompe beaucoup.", _hard_errors),
    Claim("slight-corruption", "A very slight corruption of still recognisable images can wreck the predictions "
          "(checked for every attacked model, at the eps named, shown in the examples grid: PGD costs >= 50 points "
          "of accuracy while random noise of the same L-inf or L2 size costs <= 2 points).",
          "introduire une corruption très légère des images et montrer que cela peut significativement réduire la "
          "qualité des prédictions du réseau (alors que les images restent très reconnaissables)", _slight_corruption),
    Claim("fooling", "Strange images can be made that the network classifies wrongly with very high confidence "
          "(checked: for every class of each dataset, an image from noise reaching the confidence bar, >= 99.9 % "
          "on MNIST and >= 99 % on CIFAR-10, with at least one method).",
          "on peut essayer de créer des images étranges mais pour lesquelles le réseau fait des prédictions fausses "
          "avec une grande confiance", _fooling),
    Claim("gan-digits", "A GAN trained on MNIST generates recognisable digits (checked with the project's "
          "classifier: >= 90 % of samples classified with confidence >= 0.9, every digit >= 5 % of them; scores "
          "shown beside the real test set's).",
          "GANs [...] 2014, 2015, 2016, 2017, 2019 (les images générées s'améliorent)", _gan_digits),
]


def evaluate_claims(results: Results) -> list[dict]:
    return [claim.evaluate(results) for claim in CLAIMS]


def claims_table(claims: list[dict]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")  # a pipe would end the cell

    rows = ["| claim | the course says | measured | holds |", "| --- | --- | --- | --- |"]
    for c in claims:
        rows.append(f"| **{c['id']}**: {cell(c['claim'])} | « {cell(c['course'])} » | {cell(c['measured'])} | "
                    f"{'✅ yes' if c['holds'] else '❌ no'} |")
    return "\n".join(rows)


# The environment: what a reader needs to tell which code, params and machine produced the numbers.

NOT_RECORDED = "not recorded"


def pipeline_stages() -> list[str]:
    """Every stage of dvc.yaml, each `foreach` entry on its own, in the file's order."""
    from dvc.repo import Repo

    with Repo() as repo:
        return [stage.addressing for stage in repo.index.stages]


def recorded_run(stage: str) -> dict | None:
    """The stage's MLflow run record (`tracking/<stage>.json`), or None when it has none yet."""
    path = tracking.TRACKING_DIR / f"{stage}.json"
    try:
        record = tracking.read_run_record(stage)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); rerun the stage `{stage}` to rewrite it") from None
    if not isinstance(record, dict) or not record.get("run_id"):
        raise ValueError(f"{path}: holds no run_id; rerun the stage `{stage}` to rewrite it")
    return record


def environment(stages: list[str], results: Results, params_path: Path = Path("params.yaml"),
                runs_in_progress: dict[str, str] | None = None) -> dict:
    """Versions, commit, params hash, and per stage the device it ran on and its MLflow run.

    `runs_in_progress` gives the run ids whose record is only written when the run ends (the report's own).
    """
    import torch

    runs_in_progress = runs_in_progress or {}
    rows, experiments = [], set()
    for stage in stages:
        timing = results.optional_metrics(f"timing/{stage}") or {}
        record = recorded_run(stage) or {}
        if "experiment" in record:
            experiments.add(record["experiment"])
        rows.append({"stage": stage, "device": timing.get("device"),
                     "mlflow_run_id": runs_in_progress.get(stage, record.get("run_id"))})
    return {
        "git_commit": tracking.git_commit(),
        "params_sha256": hashlib.sha256(Path(params_path).read_bytes()).hexdigest(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,  # None for a CPU-only build of torch
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "dvc": version("dvc"),
        "mlflow": version("mlflow"),
        "mlflow_experiments": sorted(experiments),
        "stages": rows,
    }


def environment_section(env: dict) -> str:
    def code(value):
        return f"`{value}`" if value else NOT_RECORDED

    facts = [
        ("git commit", code(env["git_commit"])),
        ("params.yaml (sha256)", code(env["params_sha256"])),
        ("Python", env["python"]),
        ("torch", env["torch"]),
        ("CUDA (torch build)", env["cuda"] or "none: CPU-only build"),
        ("GPU", env["gpu"] or "none visible"),
        ("DVC", env["dvc"]),
        ("MLflow", env["mlflow"]),
        ("MLflow experiment", ", ".join(f"`{name}`" for name in env["mlflow_experiments"]) or NOT_RECORDED),
    ]
    stages = pd.DataFrame([{"stage": f"`{row['stage']}`", "device": row["device"] or NOT_RECORDED,
                            "MLflow run id": code(row["mlflow_run_id"])} for row in env["stages"]],
                          columns=["stage", "device", "MLflow run id"])
    return (
        "## Environment\n\n"
        "The machine and code this report was built with. Devices come from `metrics/timing/` (written by the "
        "stages that train or search); run ids from `tracking/<stage>.json`, as of this report's run.\n\n"
        + pd.DataFrame(facts, columns=["", "value"]).to_markdown(index=False) + "\n\n"
        + stages.to_markdown(index=False) + "\n"
    )


# The document, in Markdown (for the code host) and in self-contained HTML (for anywhere).

TITLE = "The course's results, reproduced"


def document(claims: list[dict], sections: list[str], env: dict) -> str:
    held = sum(c["holds"] for c in claims)
    parts = [f"# {TITLE}\n\n{held} of {len(claims)} course claims hold on this run.\n",
             "## Claims\n\n" + claims_table(claims) + "\n", *sections, environment_section(env)]
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


def _markdown_parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


def _images(tokens) -> list:
    return [child for token in tokens for child in token.children or [] if child.type == "image"]


def image_sources(markdown: str) -> list[str]:
    return [image.attrGet("src") for image in _images(_markdown_parser().parse(markdown))]


def unlisted_figures(markdown: str, base_dir: Path, figures_dir: Path) -> list[Path]:
    """The PNGs under `figures_dir` that the document (whose images are relative to `base_dir`) does not show."""
    shown = {(Path(base_dir) / src).resolve() for src in image_sources(markdown)}
    return [path for path in sorted(Path(figures_dir).rglob("*.png")) if path.resolve() not in shown]


def data_uri(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image shown in the report is missing; the stage that writes it has not run")
    mime, _ = mimetypes.guess_type(path.name)
    if mime is None or not mime.startswith("image/"):
        raise ValueError(f"{path}: the report shows it as an image, but it is not one")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


STYLE = """body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 0.2rem; }"""


def markdown_to_html(markdown: str, base_dir: Path) -> str:
    """One HTML page from the Markdown, every image (a path relative to `base_dir`) embedded as a data URI."""
    parser = _markdown_parser()
    tokens = parser.parse(markdown)
    for image in _images(tokens):
        image.attrSet("src", data_uri(Path(base_dir) / image.attrGet("src")))
    body = parser.renderer.render(tokens, parser.options, {})
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(TITLE)}</title>\n'
            f"<style>\n{STYLE}\n</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


def write_report(markdown: str, reports_dir: Path) -> None:
    """reports_dir/report.md, and reports_dir/report.html with the same content and every image inside it."""
    page = markdown_to_html(markdown, reports_dir)  # first: a missing image stops before anything is written
    with atomic_path(Path(reports_dir) / "report.md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    with atomic_path(Path(reports_dir) / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
