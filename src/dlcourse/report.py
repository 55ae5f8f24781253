"""The course's claims, each checked against measured numbers, and the report that shows them
beside the figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .files import atomic_path, read_json  # noqa: E402
from .paths import METRICS, PLOTS  # noqa: E402


class Results:
    """Read access to the stages' metrics and curves, with a clear error for a missing one."""

    def __init__(self, metrics_dir: Path = METRICS, plots_dir: Path = PLOTS):
        self.metrics_dir, self.plots_dir = Path(metrics_dir), Path(plots_dir)

    def metrics(self, name: str) -> dict:
        path = self.metrics_dir / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; the stage that writes it has not run (see dvc.yaml)")
        return read_json(path)

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
]


def evaluate_claims(results: Results) -> list[dict]:
    return [claim.evaluate(results) for claim in CLAIMS]


def save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def plot_curves(curves: dict[str, pd.DataFrame], x: str, y: str, title: str, path: Path, xlabel: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, frame in curves.items():
        ax.plot(frame[x], 100 * frame[y], label=label, marker="." if len(frame) < 60 else None)
    ax.set(xlabel=xlabel, ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def claims_table(claims: list[dict]) -> str:
    rows = ["| claim | the course says | measured | holds |", "| --- | --- | --- | --- |"]
    for c in claims:
        rows.append(f"| **{c['id']}**: {c['claim']} | « {c['course']} » | {c['measured']} | "
                    f"{'✅ yes' if c['holds'] else '❌ no'} |")
    return "\n".join(rows)
