"""The course's data path for the benchmarks: torchvision's MNIST dataset, read from the files
the download stage verified, laid out as torchvision expects (unzipped, under MNIST/raw)."""

import gzip
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dlcourse.pipeline.layout import RAW


@contextmanager
def torchvision_mnist_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for gz in (RAW / "mnist").glob("*.gz"):
            with gzip.open(gz) as source, open(raw / gz.stem, "wb") as sink:
                shutil.copyfileobj(source, sink)
        yield Path(tmp)
