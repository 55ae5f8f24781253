"""Where the datasets come from: their official URLs and checksums (as torchvision lists them), a
mirror with a SHA256SUMS file, downloads retried with backoff and verified, and a safe extraction of
CIFAR-10's archive."""

from __future__ import annotations

import hashlib
import http.client
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..files import atomic_path
from .data import DataError


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
