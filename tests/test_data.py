import hashlib
import http.server
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from dlcourse.course import data, sources
from fakedata import cifar_tar_gz, idx_bytes, write_idx_gz

FAST = dict(retries=2, backoff_s=0.01, timeout_s=5)


def test_download_from_mirror_checks_sha256(mirror, tmp_path):
    paths = sources.download("mnist", tmp_path, mirror=str(mirror), **FAST)
    assert [p.name for p in paths] == [f.name for f in sources.SOURCES["mnist"]]
    for p in paths:
        assert p.read_bytes() == (mirror / "mnist" / p.name).read_bytes()


def test_checksum_mismatch_names_file_expected_and_found_and_keeps_nothing(mirror, tmp_path):
    bad = tmp_path / "mirror"
    bad.mkdir()
    for p in mirror.rglob("*"):
        if p.is_file():
            (bad / p.relative_to(mirror)).parent.mkdir(parents=True, exist_ok=True)
            (bad / p.relative_to(mirror)).write_bytes(p.read_bytes())
    tampered = bad / "mnist/t10k-labels-idx1-ubyte.gz"
    tampered.write_bytes(tampered.read_bytes()[:-5])  # truncated after SHA256SUMS was written
    out = tmp_path / "raw"
    with pytest.raises(data.DataError) as err:
        sources.download("mnist", out, mirror=str(bad), **FAST)
    message = str(err.value)
    expected = (mirror / "SHA256SUMS").read_text().split("  mnist/t10k-labels")[0].split()[-1]
    found = hashlib.sha256(tampered.read_bytes()).hexdigest()
    assert "t10k-labels-idx1-ubyte.gz" in message and expected in message and found in message
    assert not (out / "mnist/t10k-labels-idx1-ubyte.gz").exists()
    assert not list(out.rglob("*.part"))


def test_mirror_without_entry_in_sha256sums(mirror, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m/SHA256SUMS").write_text("")
    with pytest.raises(data.DataError, match="no entry for mnist/train-images-idx3-ubyte.gz"):
        sources.download("mnist", tmp_path / "raw", mirror=str(tmp_path / "m"), **FAST)


@pytest.mark.parametrize("prefix, marker", [("./", " "), ("", "*"), ("./", "*")])
def test_sha256sums_written_by_sha256sum_in_the_mirror_is_accepted(mirror, tmp_path, prefix, marker):
    """`sha256sum ./*/*` writes `<hash>  ./mnist/<file>`; `sha256sum -b` marks names with `*`."""
    copy = tmp_path / "mirror"
    copy.mkdir()
    (copy / "mnist").symlink_to(mirror / "mnist")
    lines = [f"{digest} {marker}{prefix}{name}" for digest, name in
             (line.split() for line in (mirror / "SHA256SUMS").read_text().splitlines())]
    (copy / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    assert sources.read_sha256sums(str(copy), 5) == sources.read_sha256sums(str(mirror), 5)
    assert "mnist/train-images-idx3-ubyte.gz" in sources.read_sha256sums(str(copy), 5)
    paths = sources.download("mnist", tmp_path / "raw", mirror=str(copy), **FAST)
    assert [p.read_bytes() for p in paths] == [(mirror / "mnist" / p.name).read_bytes() for p in paths]


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Serves `body`; the first `failures` requests get a 503, and with `truncate` the body is cut short."""

    body, failures, truncate, requests = b"", 0, False, 0

    def do_GET(self):
        cls = type(self)
        cls.requests += 1
        if cls.requests <= cls.failures:
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(cls.body)))
        self.end_headers()
        self.wfile.write(cls.body[: len(cls.body) // 2] if cls.truncate else cls.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("Handler", (FlakyHandler,), {})
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_port}/file.gz"
    httpd.shutdown()


def test_network_errors_are_retried_with_backoff(server, tmp_path):
    handler, url = server
    handler.body, handler.failures = b"payload" * 1000, 2
    target = tmp_path / "file.gz"
    sources.fetch((url,), target, algorithm="md5", expected=hashlib.md5(handler.body).hexdigest(), **FAST)
    assert target.read_bytes() == handler.body and handler.requests == 3


def test_truncated_download_leaves_no_file(server, tmp_path):
    handler, url = server
    handler.body, handler.truncate = b"payload" * 1000, True
    target = tmp_path / "file.gz"
    with pytest.raises(data.DataError, match="file.gz: could not be downloaded"):
        sources.fetch((url,), target, algorithm="md5", expected=hashlib.md5(handler.body).hexdigest(), **FAST)
    assert list(tmp_path.iterdir()) == []
    assert handler.requests == 3  # the first try and two retries


def test_extract_tar_refuses_entry_escaping_its_folder(tmp_path):
    archive = cifar_tar_gz(tmp_path / "evil.tar.gz", 2, np.random.default_rng(0), extra={"../escaped.txt": b"x"})
    destination = tmp_path / "out" / "extracted"
    with pytest.raises(data.DataError, match="evil.tar.gz: refused to extract"):
        sources.extract_tar(archive, destination)
    assert not destination.exists() and not (tmp_path / "out" / "escaped.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_extract_tar_refuses_absolute_and_link_entries(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(data.DataError, match="refused to extract"):
        sources.extract_tar(archive, tmp_path / "extracted")
    assert not (tmp_path / "extracted").exists()


@pytest.mark.parametrize("member", ["/etc/x", "/abs/file"])
def test_extract_tar_refuses_an_archive_with_an_absolute_member_and_keeps_what_was_extracted(tmp_path, member):
    destination = tmp_path / "out" / "extracted"
    destination.mkdir(parents=True)
    (destination / "earlier.bin").write_bytes(b"kept")
    archive = cifar_tar_gz(tmp_path / "abs.tar.gz", 2, np.random.default_rng(0), extra={member: b"x"})
    with pytest.raises(data.DataError) as err:
        sources.extract_tar(archive, destination)
    assert str(err.value) == f"{archive}: refused to extract: member {member!r} has an absolute path"
    assert [p.name for p in destination.iterdir()] == ["earlier.bin"]  # the earlier extraction is untouched
    assert (destination / "earlier.bin").read_bytes() == b"kept"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["extracted"]  # no staging folder left


def test_read_idx_roundtrip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    path = write_idx_gz(tmp_path / "x.gz", images)
    np.testing.assert_array_equal(data.read_idx(path, expected_magic=data.IDX_IMAGES_MAGIC), images)


def test_read_idx_wrong_magic(tmp_path):
    path = write_idx_gz(tmp_path / "labels.gz", np.zeros(5), magic=2051)
    with pytest.raises(data.DataError, match="labels.gz: wrong IDX magic number: expected 2049, found 2051"):
        data.read_idx(path, expected_magic=data.IDX_LABELS_MAGIC)


def test_read_idx_count_does_not_match_header(tmp_path):
    raw = idx_bytes(np.zeros((4, 28, 28)))
    path = tmp_path / "short"
    path.write_bytes(raw[:-28])  # one row missing
    with pytest.raises(data.DataError, match=r"announces shape \(4, 28, 28\) .* holds"):
        data.read_idx(path, expected_magic=data.IDX_IMAGES_MAGIC)


@pytest.mark.parametrize("magic, ndim", [(data.IDX_IMAGES_MAGIC, 3), (0x0804, 4)])
def test_read_idx_huge_dimensions_are_inconsistent_with_the_size_not_an_overflow(tmp_path, magic, ndim):
    path = tmp_path / "huge-idx"
    path.write_bytes(magic.to_bytes(4, "big") + b"\xff\xff\xff\xff" * ndim + bytes(100))
    with pytest.raises(data.DataError) as err:
        data.read_idx(path, expected_magic=magic)
    announced = 4 + 4 * ndim + 0xFFFFFFFF**ndim
    assert str(err.value) == (
        f"{path}: header inconsistent with the file's size: it announces shape {(0xFFFFFFFF,) * ndim} "
        f"({announced} bytes in all) but the file holds {4 + 4 * ndim + 100} bytes")


def test_read_idx_header_cut_short(tmp_path):
    path = tmp_path / "cut"
    path.write_bytes(data.IDX_IMAGES_MAGIC.to_bytes(4, "big") + (4).to_bytes(4, "big"))  # 1 of 3 dimensions
    with pytest.raises(data.DataError, match="cut: too short for an IDX header of 3 dimensions \\(8 bytes\\)"):
        data.read_idx(path, expected_magic=data.IDX_IMAGES_MAGIC)


def test_read_mnist_checks_labels_and_counts(tmp_path):
    write_idx_gz(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    write_idx_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2]))
    with pytest.raises(data.DataError, match="3 images but 2 labels"):
        data.read_mnist(tmp_path, "test")
    write_idx_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 12]))
    with pytest.raises(data.DataError, match="label 12 out of range 0..9"):
        data.read_mnist(tmp_path, "test")


def test_read_cifar10_batch(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([3, 7], dtype=np.uint8)
    pixels = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    path = tmp_path / "b.bin"
    path.write_bytes(np.concatenate([labels[:, None], pixels.reshape(2, -1)], axis=1).tobytes())
    images, read_labels = data.read_cifar10_batch(path)
    np.testing.assert_array_equal(images, pixels)
    np.testing.assert_array_equal(read_labels, labels)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(data.DataError, match="not a positive multiple of the 3073-byte record"):
        data.read_cifar10_batch(path)


def test_prepared_split_roundtrip(tmp_path):
    images = np.zeros((4, 1, 28, 28), np.uint8)
    data.save_split(tmp_path / "mnist" / "test.pt", images, np.arange(4, dtype=np.uint8), data.MNIST_CLASSES)
    split = data.load_split(tmp_path, "mnist", "test")
    assert split.images.dtype.is_floating_point is False and split.labels.tolist() == [0, 1, 2, 3]
    with pytest.raises(data.DataError, match="missing; run `dvc repro preprocess`"):
        data.load_split(tmp_path, "cifar10", "test")


REAL = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.mark.skipif(not REAL.exists(), reason="no ../shared/datasets here")
def test_real_mnist_files_read_as_the_course_says(tmp_path):
    paths = sources.download("mnist", tmp_path, mirror=str(REAL), **FAST)
    train_images, train_labels = data.read_mnist(paths[0].parent, "train")
    test_images, _ = data.read_mnist(paths[0].parent, "test")
    assert train_images.shape == (60000, 1, 28, 28) and test_images.shape == (10000, 1, 28, 28)
    assert train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert round(float(train_images.mean() / 255), 4) == 0.1307
