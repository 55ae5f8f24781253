"""Writing outputs so that a failure never leaves a partial file behind."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class UnreadableFileError(OSError):
    """A file the pipeline built is missing, empty, truncated or corrupt."""


class MissingFileError(UnreadableFileError, FileNotFoundError):
    """A file the pipeline built is missing: a FileNotFoundError too, for the readers that allow it."""


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates files readable by their owner only
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# The stage that writes each built file, by the file's path (dvc.yaml's outs): what an error about a
# file tells the user to rerun. The first pattern that matches wins.
_WRITERS = [
    (r"checks/params\.ok$", "check-params"),
    (r"data/raw/", "download"),
    (r"data/prepared/|metrics/data\.json$", "preprocess"),
    (r"(?:models|metrics|plots)/linear/(?P<entry>[^/]+)\.(?:pt|json|csv)$", "train-linear@{entry}"),
    (r"(?:models|metrics|plots)/cnn/(?P<entry>[^/]+)\.(?:pt|json|csv)$", "train-cnn@{entry}"),
    (r"metrics/evaluate/(?P<entry>.+)\.json$", "evaluate@{entry}"),
    (r"plots/evaluate/(?P<entry>.+)/[^/]+$", "evaluate@{entry}"),
    (r"metrics/attack/(?P<entry>.+)\.json$", "attack@{entry}"),
    (r"plots/attack/(?P<entry>.+)/[^/]+$", "attack@{entry}"),
    (r"metrics/fooling/(?P<entry>[^/]+)\.json$", "fooling@{entry}"),
    (r"plots/fooling/(?P<entry>[^/]+)/[^/]+$", "fooling@{entry}"),
    (r"(?:metrics|plots)/gan/(?P<entry>[^/]+)/scores\.(?:json|csv)$", "score-gan@{entry}"),
    (r"(?:models|metrics|plots)/gan/(?P<entry>[^/]+)/", "train-gan@{entry}"),
    # a run record or timing, by its stage's name: `evaluate@cnn/mnist` holds a slash
    (r"(?:metrics/timing|tracking)/(?P<stage>[^/@]+(?:@.+)?)\.json$", "{stage}"),
    (r"reports/", "report"),
]


def writer_stage(path: str | Path) -> str | None:
    """The DVC stage that writes `path` (e.g. `train-cnn@mnist` for models/cnn/mnist.pt), or None for
    a file no stage writes."""
    text = Path(path).as_posix()
    for pattern, stage in _WRITERS:
        found = re.search(r"(?:^|/)" + pattern, text)
        if found:
            return stage.format(**found.groupdict())
    return None


def rebuild_hint(path: str | Path) -> str:
    """How to get a built file back: `dvc repro <the stage that writes it>`."""
    stage = writer_stage(path)
    return f"rebuild it with `dvc repro {stage}`" if stage else "rebuild it with `dvc repro`"


def non_finite_keys(data, prefix: str = "") -> list[str]:
    """The keys (dotted, list items by index) of the NaN and infinite floats in a JSON-like value."""
    if isinstance(data, float):
        return [] if math.isfinite(data) else [prefix or "(the value itself)"]
    if isinstance(data, dict):
        return [k for key, value in data.items() for k in non_finite_keys(value, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(data, (list, tuple)):
        return [k for i, value in enumerate(data) for k in non_finite_keys(value, f"{prefix}[{i}]")]
    return []


class NonFiniteValueError(ValueError):
    """A result to be written, or a file read, holds NaN or infinity: never written, never trusted."""


def write_json(path: str | Path, data, sort_keys: bool = True) -> None:
    """Strict JSON (RFC 8259): a NaN or an infinity, which Python's json would write as the invalid
    `NaN` / `Infinity`, is refused naming its key, and nothing is written."""
    bad = non_finite_keys(data)
    if bad:
        raise NonFiniteValueError(f"{path}: not written: {', '.join(bad)} not finite (NaN or infinity); "
                                  f"the computation that gave it diverged or divided by zero")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False) + "\n")


def write_csv(frame, path: str | Path) -> None:
    """A pandas DataFrame as CSV, without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: str | Path):
    """A JSON file the pipeline built, strictly parsed: a missing, empty, truncated or non-strict file
    (NaN, Infinity) raises UnreadableFileError naming the file and the stage that writes it."""
    path = Path(path)
    restore = rebuild_hint(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MissingFileError(f"{path}: missing; {restore}") from None
    if not text.strip():
        raise UnreadableFileError(f"{path}: empty (truncated); {restore}")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError is one
        raise UnreadableFileError(f"{path}: corrupt or truncated JSON ({exc}); {restore}") from None


def save_torch(obj, path: str | Path) -> None:
    """torch.save through a file object: with a path, torch names the archive's inner folder after
    the (temporary) file name, and the bytes would change from run to run."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_torch(path: str | Path, map_location=None):
    """torch.load of tensors and plain containers only (weights_only): a missing, empty, truncated or
    corrupt file raises UnreadableFileError, naming the file and how to get it back."""
    import torch

    path = Path(path)
    restore = f"restore it with `dvc checkout {path}`, or {rebuild_hint(path)}"
    if not path.exists():
        raise UnreadableFileError(f"{path}: missing; {restore}")
    if path.stat().st_size == 0:
        raise UnreadableFileError(f"{path}: empty (truncated); {restore}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # random bytes read as a pickle
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises, the file cannot be read back
        # from None: torch's advice to retry with weights_only=False is not for a file the pipeline wrote
        raise UnreadableFileError(f"{path}: corrupt or truncated ({_reason(exc)}); {restore}") from None


def _reason(exc: Exception) -> str:
    """torch's reason in a few words, without its advice about weights_only."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    elif "weights_only" in text:
        text = ""
    words = text.strip().split("\n")[0].split(". ")[0].strip()
    return f"{type(exc).__name__}: {words}" if words else type(exc).__name__


def check_finite_tensors(tensors: dict, path: str | Path) -> None:
    """Refuse the weights of a network (a state dict, read from `path`) that hold NaN or infinity: a
    training that diverged, whose every prediction would be meaningless."""
    import torch

    bad = [name for name, tensor in tensors.items()
           if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteValueError(f"{path}: the weights {shown} hold NaN or infinity (a training that diverged); "
                                  f"lower its learning rate in params.yaml and {rebuild_hint(path)}")
