"""The datasets: official sources, verified downloads, the IDX and CIFAR-10 binary readers,
and the compact tensors every training stage reads."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..files import atomic_path, load_torch, save_torch


class DataError(RuntimeError):
    """A dataset file is missing, corrupt or not in the expected format."""


@dataclass(frozen=True)
class RemoteFile:
    dataset: str  # also the sub-folder in a mirror and under data/raw
    name: str
    md5: str  # official checksum, as torchvision lists it
    urls: tuple[str, ...]

    @property
    def mirror_path(self) -> str:
        return f"{self.dataset}/{self.name}"


_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
SOURCES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": tuple(
        RemoteFile("mnist", name, md5, tuple(base + name for base in _MNIST_URLS))
        for name, md5 in [
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ]
    ),
    "cifar10": (
        RemoteFile(
            "cifar10",
            "cifar-10-binary.tar.gz",
            "c32a1d4ab5d03f1284b67883e8d87530",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
        ),
    ),
}
CIFAR10_FOLDER = Path("extracted/cifar-10-batches-bin")  # under data/raw/cifar10
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"


# --- download -------------------------------------------------------------------------------

def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://", "file://"))


def _open(location: str, timeout: float):
    if _is_url(location):
        return urllib.request.urlopen(location, timeout=timeout)
    return open(location, "rb")


def _copy_with_checksum(location: str, target: Path, algorithm: str, timeout: float, label: str) -> str:
    digest = hashlib.new(algorithm)
    with _open(location, timeout) as source, open(target, "wb") as sink:
        total = getattr(source, "length", None) or (None if _is_url(location) else Path(location).stat().st_size)
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False) as bar:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise ConnectionError(f"truncated transfer: received {received} of {total} bytes")
    return digest.hexdigest()


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    return isinstance(exc, (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError))


def fetch(
    locations: tuple[str, ...],
    target: Path,
    *,
    algorithm: str,
    expected: str,
    retries: int,
    backoff_s: float,
    timeout_s: float,
) -> None:
    """Copy the first reachable location to `target`, checking its digest.

    Network errors are retried with exponential backoff; a file is only ever moved into
    place whole and verified, so a failure leaves nothing at `target`.
    """
    errors = []
    for location in locations:
        for attempt in range(retries + 1):
            try:
                with atomic_path(target) as tmp:
                    found = _copy_with_checksum(location, tmp, algorithm, timeout_s, target.name)
                    if found != expected:
                        raise DataError(
                            f"{target.name}: checksum mismatch for {location}: "
                            f"expected {algorithm} {expected}, found {found}; the file was not kept"
                        )
                return
            except DataError:
                raise
            except FileNotFoundError:
                errors.append(f"{location}: no such file")
                break
            except Exception as exc:  # noqa: BLE001 - reported below with its location
                errors.append(f"{location}: {exc}")
                if not _retryable(exc) or attempt == retries:
                    break
                time.sleep(backoff_s * 2**attempt)
    raise DataError(f"{target.name}: could not be downloaded:\n  " + "\n  ".join(errors))


def read_sha256sums(mirror: str, timeout_s: float) -> dict[str, str]:
    location = mirror.rstrip("/") + "/SHA256SUMS"
    try:
        with _open(location, timeout_s) as f:
            text = f.read().decode()
    except (OSError, urllib.error.URLError) as exc:
        raise DataError(f"mirror {mirror}: cannot read its SHA256SUMS ({exc})") from None
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{location}, line {number}: expected '<sha256>  <path>', got {line!r}")
        # `sha256sum -b` marks names with `*`; `sha256sum ./*/*` writes them as `./<dataset>/<file>`
        sums[parts[1].removeprefix("*").removeprefix("./")] = parts[0].lower()
    return sums


def download(dataset: str, raw_dir: Path, *, mirror: str | None, retries: int, backoff_s: float, timeout_s: float) -> list[Path]:
    """Download one dataset's official files into `raw_dir/<dataset>/`.

    With a mirror (a folder or URL laid out as `<dataset>/<file>` plus `SHA256SUMS`), files
    come from there and are checked against its SHA256SUMS; otherwise from the official
    URLs, checked against the official MD5s.
    """
    sums = read_sha256sums(mirror, timeout_s) if mirror else {}
    paths = []
    for remote in SOURCES[dataset]:
        target = raw_dir / dataset / remote.name
        if mirror:
            if remote.mirror_path not in sums:
                raise DataError(f"mirror {mirror}: SHA256SUMS has no entry for {remote.mirror_path}")
            locations = (mirror.rstrip("/") + "/" + remote.mirror_path,)
            algorithm, expected = "sha256", sums[remote.mirror_path]
        else:
            locations, algorithm, expected = remote.urls, "md5", remote.md5
        fetch(locations, target, algorithm=algorithm, expected=expected,
              retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)
        paths.append(target)
    return paths


def extract_tar(archive: Path, destination: Path) -> None:
    """Extract the entries of `archive` into the folder `destination`, refusing any entry that
    would land outside it.

    Extraction goes to a temporary folder first, so a refused or broken archive leaves
    `destination` untouched.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.with_name(f".{destination.name}.part")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter=_refuse_absolute)
        shutil.rmtree(destination, ignore_errors=True)
        staging.rename(destination)
    except tarfile.FilterError as exc:
        raise DataError(f"{archive}: refused to extract: {exc}") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: not a readable tar archive ({exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _refuse_absolute(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    """The "data" filter, except that an absolute member refuses the archive: "data" would strip its
    leading slash and extract it anyway."""
    if member.name.startswith("/"):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, path)


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
