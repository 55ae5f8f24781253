"""The datasets: the IDX and CIFAR-10 binary readers, and the compact tensors every training stage
reads (their sources and downloads: sources.py)."""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import load_torch, save_torch


class DataError(RuntimeError):
    """A dataset file is missing, corrupt or not in the expected format."""


CIFAR10_FOLDER = Path("extracted/cifar-10-batches-bin")  # under data/raw/cifar10
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"


# --- readers --------------------------------------------------------------------------------

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def read_idx(path: Path, *, expected_magic: int) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes, validating its header against its size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if len(data) < 8:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: wrong IDX magic number: expected {expected_magic}, found {magic}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: too short for an IDX header of {ndim} dimensions ({len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected_size = header + math.prod(shape)  # Python ints: np.prod overflows int64 on huge dimensions
    if len(data) != expected_size:
        raise DataError(
            f"{path}: header inconsistent with the file's size: it announces shape {shape} "
            f"({expected_size} bytes in all) but the file holds {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and labels.max() >= num_classes:
        raise DataError(f"{where}: label {int(labels.max())} out of range 0..{num_classes - 1}")


def read_mnist(raw_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(raw_dir / f"{prefix}-images-idx3-ubyte.gz", expected_magic=IDX_IMAGES_MAGIC)
    labels = read_idx(raw_dir / f"{prefix}-labels-idx1-ubyte.gz", expected_magic=IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{raw_dir}/{prefix}-images: expected 28x28 images, found {images.shape[1:]}")
    if len(images) != len(labels):
        raise DataError(f"{raw_dir}/{prefix}: {len(images)} images but {len(labels)} labels")
    _check_labels(labels, 10, f"{raw_dir}/{prefix}-labels")
    return images[:, None], labels


CIFAR10_RECORD = 1 + 3 * 32 * 32


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR-10 binary batch: records of 1 label byte then 3072 pixel bytes (R, G, B planes)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if data.size == 0 or data.size % CIFAR10_RECORD:
        raise DataError(f"{path}: size {data.size} bytes is not a positive multiple of the {CIFAR10_RECORD}-byte record")
    records = data.reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0]
    _check_labels(labels, 10, str(path))
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def read_cifar10(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    files = CIFAR10_TRAIN_FILES if split == "train" else (CIFAR10_TEST_FILE,)
    batches = [read_cifar10_batch(folder / name) for name in files]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def read_cifar10_classes(folder: Path) -> list[str]:
    names = [line.strip() for line in (folder / "batches.meta.txt").read_text().splitlines() if line.strip()]
    if len(names) != 10:
        raise DataError(f"{folder}/batches.meta.txt: expected 10 class names, found {len(names)}")
    return names


MNIST_CLASSES = [str(digit) for digit in range(10)]
IMAGE_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # channels, height, width


# --- prepared tensors -----------------------------------------------------------------------

@dataclass
class Split:
    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor  # int64, N
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def to_float(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 pixels to floats in [0, 1], as torchvision's ToTensor does (on `device`, if given)."""
    return (images if device is None else images.to(device)).float().div_(255)


def save_split(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    tensors = {
        "images": torch.from_numpy(np.array(images, copy=True, order="C")),
        "labels": torch.from_numpy(labels.astype(np.int64)),
        "classes": classes,
    }
    save_torch(tensors, path)


def load_split(prepared_dir: Path, dataset: str, split: str) -> Split:
    path = Path(prepared_dir) / dataset / f"{split}.pt"
    if not path.exists():
        raise DataError(f"{path}: missing; run `dvc repro preprocess` first")
    data = load_torch(path)
    return Split(data["images"], data["labels"], list(data["classes"]))
