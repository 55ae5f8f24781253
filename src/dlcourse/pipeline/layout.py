"""Where stages read and write, relative to the repository root (DVC runs every stage there)."""

from pathlib import Path

RAW = Path("data/raw")
PREPARED = Path("data/prepared")
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")


def timing(stage: str) -> Path:
    """A stage's wall times and the device they were measured on (not compared between runs)."""
    return METRICS / "timing" / f"{stage}.json"
