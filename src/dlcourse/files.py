"""Writing outputs so that a failure never leaves a partial file behind."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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


def write_json(path: str | Path, data, sort_keys: bool = True) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def write_csv(frame, path: str | Path) -> None:
    """A pandas DataFrame as CSV, without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


class UnreadableFileError(OSError):
    """A file the pipeline built is missing, empty, truncated or corrupt."""


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
    restore = f"restore it with `dvc checkout {path}`, or rebuild it with `dvc repro`"
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
