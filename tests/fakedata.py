"""Tiny datasets in the official formats (IDX gz, CIFAR-10 binary tar.gz), made by the tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    magic = magic if magic is not None else 0x0800 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx_gz(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(idx_bytes(array, magic), mtime=0))
    return path


def digits(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images a linear model can learn: a bright bar whose position encodes the label, plus noise."""
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
    return images, labels


def cifar_records(n: int, rng: np.random.Generator) -> bytes:
    labels = rng.integers(0, 10, n).astype(np.uint8)
    pixels = rng.integers(0, 256, (n, 3 * 32 * 32)).astype(np.uint8)
    pixels[np.arange(n), labels.astype(int) * 100] = 255
    return np.concatenate([labels[:, None], pixels], axis=1).tobytes()


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_tar_gz(path: Path, n_per_batch: int, rng: np.random.Generator, extra: dict[str, bytes] | None = None) -> Path:
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": cifar_records(n_per_batch, rng) for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = cifar_records(n_per_batch, rng)
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(CIFAR_CLASSES) + "\n").encode()
    members.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def make_mirror(root: Path, n_train: int = 600, n_test: int = 200, cifar_per_batch: int = 40, seed: int = 0) -> Path:
    """A mirror laid out as ../shared/datasets: <dataset>/<file> and SHA256SUMS."""
    rng = np.random.default_rng(seed)
    train, test = digits(n_train, rng), digits(n_test, rng)
    write_idx_gz(root / "mnist/train-images-idx3-ubyte.gz", train[0])
    write_idx_gz(root / "mnist/train-labels-idx1-ubyte.gz", train[1])
    write_idx_gz(root / "mnist/t10k-images-idx3-ubyte.gz", test[0])
    write_idx_gz(root / "mnist/t10k-labels-idx1-ubyte.gz", test[1])
    cifar_tar_gz(root / "cifar10/cifar-10-binary.tar.gz", cifar_per_batch, rng)
    write_sha256sums(root)
    return root


def write_sha256sums(root: Path) -> None:
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}"
        for p in sorted(root.rglob("*")) if p.is_file() and p.name != "SHA256SUMS"
    ]
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
