"""Tests for fastnet.datasets on small generated files; no network is used."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import itertools
import os
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnet.datasets import fileio as file_helpers
from fastnet.datasets import (
    MNIST_FILES,
    load_idx_dataset,
    load_mnist,
    mnist_available,
    read_idx,
    spiral_data,
    vertical_data,
    write_idx,
)
from fastnet.datasets import mnist as mnist_mod
from fastnet.datasets.idx import encode_idx
from fastnet.errors import ChecksumError, DatasetError, DownloadError

N_TRAIN, N_TEST = 20, 10


# ----------------------------------------------------------------- fixtures


def fake_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_img": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train_label": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "test_img": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "test_label": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def gz_files(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """File name -> gzip bytes, for serving over (fake) HTTP."""
    return {MNIST_FILES[k]: gzip.compress(encode_idx(a), mtime=0) for k, a in arrays.items()}


def sums(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    return {MNIST_FILES[k]: hashlib.sha256(encode_idx(a)).hexdigest() for k, a in arrays.items()}


def write_set(directory: Path, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    for key, arr in arrays.items():
        write_idx(directory / MNIST_FILES[key], arr)
    return sums(arrays)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every test away from the real home directory and the network."""
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.delenv("FASTNET_DATA", raising=False)
    monkeypatch.delenv("FASTNET_OFFLINE", raising=False)

    def no_network(url: str, timeout: float) -> None:
        raise AssertionError(f"unexpected network access: {url}")

    monkeypatch.setattr(mnist_mod, "urlopen", no_network)
    return xdg


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], dict[str, str]]:
    arrays = fake_arrays()
    data = tmp_path / "data"
    return data, arrays, write_set(data, arrays)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


# --------------------------------------------------------------------- IDX


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", "<i4", "f4", "f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, dtype: str, suffix: str) -> None:
    arr = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", arr)
    back = read_idx(path)
    assert back.shape == arr.shape and back.dtype.isnative
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_array_equal(read_idx(path.read_bytes()), arr)
    assert back.flags.writeable


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=4), data=st.data())
def test_idx_round_trip_any_shape(shape: list[int], data: st.DataObject) -> None:
    values = data.draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=int(np.prod(shape)),
                                max_size=int(np.prod(shape))))
    arr = np.array(values, dtype=np.int32).reshape(shape)
    np.testing.assert_array_equal(read_idx(encode_idx(arr)), arr)


def test_idx_header_is_big_endian() -> None:
    raw = encode_idx(np.array([[1, 2, 3]], dtype=np.uint16).astype(np.int16))
    assert raw[:4] == b"\x00\x00\x0b\x02"
    assert raw[4:12] == b"\x00\x00\x00\x01\x00\x00\x00\x03"
    assert raw[12:] == b"\x00\x01\x00\x02\x00\x03"


def test_write_idx_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dtype"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.uint16))
    assert not list(tmp_path.iterdir())


GOOD = encode_idx(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize(
    ("payload", "pattern"),
    [
        (b"\x01\x00" + GOOD[2:], "bad IDX magic"),
        (GOOD[:2] + b"\x07" + GOOD[3:], "unknown IDX type"),
        (GOOD[:3], "too short"),
        (GOOD[:6], "header declares 2 dimensions"),
        (GOOD[:-1], r"truncated.*need 12 payload bytes but the file holds 11"),
        (GOOD + b"\x00", r"trailing bytes.*need 12 payload bytes but the file holds 13"),
        (gzip.compress(GOOD)[:-10], "corrupt or truncated gzip"),
        (gzip.compress(GOOD)[:12] + b"\xff" * 20 + gzip.compress(GOOD)[32:], "corrupt or truncated gzip"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path: Path, payload: bytes, pattern: str) -> None:
    path = tmp_path / "broken-idx1-ubyte.gz"
    path.write_bytes(payload)
    with pytest.raises(DatasetError, match=pattern) as info:
        read_idx(path)
    assert "broken-idx1-ubyte.gz" in str(info.value)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nope.gz"):
        read_idx(tmp_path / "nope.gz")


# ------------------------------------------------------------ MNIST loading


@pytest.mark.parametrize(
    ("normalize", "flatten", "one_hot"), list(itertools.product([True, False], repeat=3))
)
def test_flag_combinations(dataset, normalize: bool, flatten: bool, one_hot: bool) -> None:
    data, arrays, checksums = dataset
    (x, t), (xt, tt) = load_idx_dataset(
        data, checksums=checksums, normalize=normalize, flatten=flatten, one_hot_label=one_hot
    )
    for img, lab, n, split in [(x, t, N_TRAIN, "train"), (xt, tt, N_TEST, "test")]:
        assert img.shape == ((n, 784) if flatten else (n, 1, 28, 28))
        assert img.dtype == (np.float32 if normalize else np.uint8)
        raw_labels = arrays[f"{split}_label"]
        if one_hot:
            assert lab.shape == (n, 10)
            assert lab.dtype == (np.float32 if normalize else np.uint8)
            np.testing.assert_array_equal(lab.argmax(axis=1), raw_labels)
            np.testing.assert_array_equal(lab.sum(axis=1), 1)
        else:
            assert lab.dtype == np.uint8
            np.testing.assert_array_equal(lab, raw_labels)
        raw = arrays[f"{split}_img"].reshape(img.shape)
        if normalize:
            # The book's order: cast to float32, then divide in place.
            expected = raw.astype(np.float32)
            expected /= 255.0
            np.testing.assert_array_equal(img, expected)
            assert 0.0 <= img.min() and img.max() <= 1.0
        else:
            np.testing.assert_array_equal(img, raw)
        assert img.flags.writeable and lab.flags.writeable


def test_float64_dtype(dataset) -> None:
    data, arrays, checksums = dataset
    (x, t), _ = load_idx_dataset(data, checksums=checksums, dtype=np.float64, one_hot_label=True)
    assert x.dtype == np.float64 and t.dtype == np.float64
    np.testing.assert_array_equal(x, arrays["train_img"].reshape(N_TRAIN, -1) / 255.0)


@pytest.mark.parametrize("bad", [np.int32, "uint8", "not-a-dtype"])
def test_bad_dtype(dataset, bad) -> None:
    data, _, checksums = dataset
    with pytest.raises(ValueError, match="dtype"):
        load_idx_dataset(data, checksums=checksums, dtype=bad)


def test_checksum_mismatch(dataset) -> None:
    data, arrays, checksums = dataset
    name = MNIST_FILES["test_label"]
    wrong = dict(checksums, **{name: "0" * 64})
    with pytest.raises(ChecksumError) as info:
        load_idx_dataset(data, checksums=wrong)
    msg = str(info.value)
    assert name in msg and "0" * 64 in msg and checksums[name] in msg and "delete" in msg
    assert not (data / "mnist-cache.npz").exists()


def test_checksums_none_skips_verification(dataset) -> None:
    data, arrays, _ = dataset
    (x, _), _ = load_idx_dataset(data, checksums=None, normalize=False)
    np.testing.assert_array_equal(x.reshape(N_TRAIN, 28, 28), arrays["train_img"])


@pytest.mark.parametrize(
    ("key", "bad", "pattern"),
    [
        ("train_label", np.array([0, 3, 10] + [1] * (N_TRAIN - 3), np.uint8), "outside 0..9"),
        ("test_label", np.zeros(N_TEST + 1, np.uint8), "10 images but .* holds 11 labels"),
        ("train_img", np.zeros((N_TRAIN, 28, 27), np.uint8), r"shape \(N, 28, 28\)"),
        ("train_img", np.zeros((N_TRAIN, 784), np.uint8), r"shape \(N, 28, 28\)"),
        ("test_label", np.zeros((N_TEST, 1), np.uint8), "1-D uint8"),
        ("test_img", np.zeros((N_TEST, 28, 28), np.int16), "uint8 images"),
    ],
)
def test_structure_errors_name_the_file(dataset, key: str, bad: np.ndarray, pattern: str) -> None:
    data, _, _ = dataset
    write_idx(data / MNIST_FILES[key], bad)
    with pytest.raises(DatasetError, match=pattern) as info:
        load_idx_dataset(data, checksums=None)
    assert MNIST_FILES[key] in str(info.value)


def test_truncated_file_through_loader(dataset) -> None:
    data, _, checksums = dataset
    path = data / MNIST_FILES["train_img"]
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(DatasetError, match="truncated") as info:
        load_idx_dataset(data, checksums=None)
    assert path.name in str(info.value)


def test_uncompressed_files_are_found(tmp_path: Path) -> None:
    arrays = fake_arrays(3)
    data = tmp_path / "raw"
    data.mkdir()
    for key, arr in arrays.items():
        write_idx(data / MNIST_FILES[key][:-3], arr)
    (_, t), _ = load_idx_dataset(data, checksums=sums(arrays))
    np.testing.assert_array_equal(t, arrays["train_label"])


# ---------------------------------------------------------- missing/offline


def test_missing_files_without_download(tmp_path: Path, isolated_env: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as info:
        load_idx_dataset(empty, download=False)
    msg = str(info.value)
    for name in MNIST_FILES.values():
        assert name in msg
    assert str(empty) in msg and str(isolated_env / "fastnet" / "mnist") in msg
    assert "FASTNET_DATA" in msg and "download=True" in msg


def test_offline_env_blocks_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTNET_OFFLINE", "1")
    calls: list[str] = []
    monkeypatch.setattr(mnist_mod, "urlopen", lambda url, timeout: calls.append(url))
    with pytest.raises(DatasetError, match="FASTNET_OFFLINE"):
        load_mnist(data_dir=tmp_path / "nothing", download=True)
    assert calls == []


def test_partial_set_lists_only_missing(dataset) -> None:
    data, _, checksums = dataset
    (data / MNIST_FILES["test_img"]).unlink()
    with pytest.raises(DatasetError) as info:
        load_idx_dataset(data, checksums=checksums)
    msg = str(info.value)
    assert MNIST_FILES["test_img"] in msg and MNIST_FILES["train_img"] not in msg


# ------------------------------------------------------------- downloading


class FakeResponse(io.BytesIO):
    """A response that promises ``length`` bytes but may deliver fewer."""

    def __init__(self, body: bytes, length: int | None = None) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(length if length is not None else len(body))}


def test_download_with_stub_opener(tmp_path: Path) -> None:
    arrays = fake_arrays(1)
    served = gz_files(arrays)
    calls: list[str] = []

    def opener(url: str, timeout: float) -> FakeResponse:
        calls.append(url)
        name = url.rsplit("/", 1)[1]
        if url.startswith("http://down/"):
            raise urllib.error.URLError("mirror is down")
        if url.startswith("http://short/"):
            return FakeResponse(served[name][: len(served[name]) // 2], length=len(served[name]))
        return FakeResponse(served[name])

    data = tmp_path / "dl"
    (x, t), (xt, tt) = load_idx_dataset(
        data,
        checksums=sums(arrays),
        download=True,
        mirrors=["http://down", "http://short/", "http://ok/"],
        opener=opener,
        normalize=False,
    )
    np.testing.assert_array_equal(tt, arrays["test_label"])
    assert len(calls) == 12 and all(c.startswith("http://ok/") for c in calls[2::3])
    assert sorted(p.name for p in data.iterdir()) == sorted([*MNIST_FILES.values(), "mnist-cache.npz"])


def test_download_progress_bar_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    arrays = fake_arrays(1)
    served = gz_files(arrays)
    load_idx_dataset(tmp_path / "dl", checksums=sums(arrays), download=True, mirrors=["http://m/"],
                     opener=lambda url, timeout: FakeResponse(served[url[len("http://m/"):]]))
    assert MNIST_FILES["train_img"] in term.getvalue()


def test_download_connection_reset_midway(tmp_path: Path) -> None:
    arrays = fake_arrays(2)
    served = gz_files(arrays)

    class Resetting(io.BytesIO):
        headers: dict[str, str] = {}

        def read(self, n: int | None = -1) -> bytes:
            raise ConnectionResetError("peer reset")

    def opener(url: str, timeout: float):
        return Resetting() if "bad" in url else FakeResponse(served[url.rsplit("/", 1)[1]])

    data = tmp_path / "dl"
    load_idx_dataset(data, checksums=sums(arrays), download=True, mirrors=["http://bad/", "http://ok/"],
                     opener=opener)
    assert leftovers(data) == []


def test_download_checksum_mismatch_everywhere(tmp_path: Path) -> None:
    arrays = fake_arrays(1)
    served = gz_files(fake_arrays(99))  # valid IDX, wrong content
    data = tmp_path / "dl"
    with pytest.raises(DownloadError) as info:
        load_idx_dataset(
            data, checksums=sums(arrays), download=True, mirrors=["http://a/", "http://b/"],
            opener=lambda url, timeout: FakeResponse(served[url.rsplit("/", 1)[1]]),
        )
    msg = str(info.value)
    assert "ChecksumError" in msg and "http://a/" in msg and "http://b/" in msg
    assert list(data.iterdir()) == []


def test_load_mnist_downloads_via_module_opener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = fake_arrays(4)
    served = gz_files(arrays)
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", sums(arrays))
    monkeypatch.setattr(mnist_mod, "MNIST_MIRRORS", ("http://mirror/",))
    monkeypatch.setattr(mnist_mod, "urlopen", lambda url, timeout: FakeResponse(served[url[len("http://mirror/"):]]))
    monkeypatch.setenv("FASTNET_DATA", str(tmp_path / "env-data"))
    assert not mnist_available()
    (x, t), _ = load_mnist()
    assert x.shape == (N_TRAIN, 784)
    assert (tmp_path / "env-data" / MNIST_FILES["train_img"]).is_file()
    assert mnist_available()


# Local HTTP server: real sockets, real urllib, no internet.


@pytest.fixture
def http_mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Serve ``/good/<name>`` whole, ``/broken/<name>`` cut off half-way, anything else 404."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            _, kind, name = self.path.split("/", 2)
            body = files.get(name)
            if body is None or kind not in ("good", "broken"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if kind == "good":
                self.wfile.write(body)
            else:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_http_interrupted_then_next_mirror(tmp_path: Path, http_mirror, monkeypatch) -> None:
    base, files = http_mirror
    arrays = fake_arrays(5)
    files.update(gz_files(arrays))
    monkeypatch.setattr(mnist_mod, "urlopen", file_helpers.urlopen)  # the real urllib opener
    data = tmp_path / "dl"
    (x, t), _ = load_idx_dataset(
        data, checksums=sums(arrays), download=True, normalize=False, timeout=5,
        mirrors=[f"{base}/broken/", f"{base}/absent/", f"{base}/good/"],
    )
    np.testing.assert_array_equal(t, arrays["train_label"])
    assert leftovers(data) == []
    for name in MNIST_FILES.values():
        assert (data / name).read_bytes() == files[name]


def test_http_interrupted_only_mirror(tmp_path: Path, http_mirror, monkeypatch) -> None:
    base, files = http_mirror
    arrays = fake_arrays(6)
    files.update(gz_files(arrays))
    monkeypatch.setattr(mnist_mod, "urlopen", file_helpers.urlopen)
    data = tmp_path / "dl"
    with pytest.raises(DownloadError, match=r"interrupted: got \d+ of \d+ bytes") as info:
        load_idx_dataset(data, checksums=sums(arrays), download=True, timeout=5, mirrors=[f"{base}/broken/"])
    assert isinstance(info.value, OSError)
    assert list(data.iterdir()) == []  # neither a partial nor a final file


# -------------------------------------------------------------------- cache


def test_cache_round_trip(dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    data, arrays, checksums = dataset
    first = load_idx_dataset(data, checksums=checksums)
    assert (data / "mnist-cache.npz").is_file()

    def must_not_parse(*args: object) -> None:
        raise AssertionError("sources were parsed although the cache is valid")

    monkeypatch.setattr(mnist_mod, "read_checked", must_not_parse)
    second = load_idx_dataset(data, checksums=checksums)
    for a, b in zip(itertools.chain(*first), itertools.chain(*second), strict=True):
        np.testing.assert_array_equal(a, b)
    with np.load(data / "mnist-cache.npz", allow_pickle=False) as npz:
        assert {"meta", "train_img", "train_label", "test_img", "test_label"} <= set(npz.files)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "bad-meta", "rewritten"])
def test_corrupt_cache_is_rebuilt(dataset, damage: str) -> None:
    data, arrays, checksums = dataset
    load_idx_dataset(data, checksums=checksums)
    cache = data / "mnist-cache.npz"
    blob = cache.read_bytes()
    if damage == "truncate":
        cache.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        cache.write_bytes(b"PK\x03\x04" + os.urandom(500))
    elif damage == "empty":
        cache.write_bytes(b"")
    elif damage == "rewritten":  # other labels under the same record of the sources
        with np.load(cache, allow_pickle=False) as npz:
            members = {k: npz[k] for k in npz.files}
        members["train_label"] = (members["train_label"] + 1) % 10
        np.savez(cache, **members)
    else:
        np.savez(cache, meta=np.array("{not json"), **arrays)
    (_, t), _ = load_idx_dataset(data, checksums=checksums)
    np.testing.assert_array_equal(t, arrays["train_label"])
    with np.load(cache, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["train_label"], arrays["train_label"])


def test_a_file_that_is_not_the_cache_is_never_overwritten(dataset) -> None:
    data, arrays, checksums = dataset
    other = data / "mnist-cache.npz"
    np.savez(other, W1=np.ones(3))  # say, a net someone saved under that name
    before = other.read_bytes()
    (_, t), _ = load_idx_dataset(data, checksums=checksums)
    np.testing.assert_array_equal(t, arrays["train_label"])
    assert other.read_bytes() == before


def test_changed_source_invalidates_cache(dataset) -> None:
    data, arrays, checksums = dataset
    load_idx_dataset(data, checksums=checksums)
    new = dict(arrays, test_label=(arrays["test_label"] + 1) % 10)
    write_idx(data / MNIST_FILES["test_label"], new["test_label"])
    # Same expected checksums: the stale cache must not hide the changed file.
    with pytest.raises(ChecksumError, match=MNIST_FILES["test_label"]):
        load_idx_dataset(data, checksums=checksums)
    _, (_, tt) = load_idx_dataset(data, checksums=sums(new))
    np.testing.assert_array_equal(tt, new["test_label"])


def test_cache_alone_is_enough(dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    data, arrays, checksums = dataset
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", checksums)
    load_mnist(data_dir=data, download=False)
    for name in MNIST_FILES.values():
        (data / name).unlink()
    assert mnist_available(data)
    (_, t), _ = load_mnist(data_dir=data, download=False)
    np.testing.assert_array_equal(t, arrays["train_label"])
    # A cache built for other checksums is not "available".
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", {k: "f" * 64 for k in checksums})
    assert not mnist_available(data)


@pytest.fixture
def read_only(request: pytest.FixtureRequest):
    """chmod a directory to r-x and restore it afterwards.

    fastnet honours the mode bits even for root, so this works in root
    containers too.
    """
    changed: list[Path] = []

    def make(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        changed.append(path)
        return path

    yield make
    for path in changed:
        path.chmod(0o755)


def test_read_only_data_dir_uses_user_cache(dataset, read_only, isolated_env: Path) -> None:
    data, arrays, checksums = dataset
    read_only(data)
    before = sorted(p.name for p in data.iterdir())
    load_idx_dataset(data, checksums=checksums)
    assert sorted(p.name for p in data.iterdir()) == before
    cached = isolated_env / "fastnet" / "mnist" / "mnist-cache.npz"
    assert cached.is_file()
    load_idx_dataset(data, checksums=checksums)  # served from the user cache


def test_nothing_writable_skips_cache(dataset, read_only, isolated_env: Path) -> None:
    data, arrays, checksums = dataset
    read_only(data)
    read_only(isolated_env)
    (_, t), _ = load_idx_dataset(data, checksums=checksums)
    np.testing.assert_array_equal(t, arrays["train_label"])
    assert not (isolated_env / "fastnet").exists()


def test_read_only_data_dir_downloads_into_cache(tmp_path, read_only, isolated_env: Path) -> None:
    arrays = fake_arrays(7)
    served = gz_files(arrays)
    data = read_only(tmp_path / "ro")
    load_idx_dataset(data, checksums=sums(arrays), download=True, mirrors=["http://m/"],
                     opener=lambda url, timeout: FakeResponse(served[url[len("http://m/"):]]))
    assert list(data.iterdir()) == []
    target = isolated_env / "fastnet" / "mnist"
    assert all((target / name).is_file() for name in MNIST_FILES.values())


# ------------------------------------------------------------- data_dir


def test_data_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    arrays = fake_arrays(8)
    checksums = sums(arrays)
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", checksums)
    default = isolated_env / "fastnet" / "mnist"
    write_set(default, arrays)
    assert mnist_available()
    (_, t), _ = load_mnist(download=False)  # no argument, no FASTNET_DATA: user cache
    np.testing.assert_array_equal(t, arrays["train_label"])

    other = fake_arrays(9)
    env_dir = tmp_path / "env"
    write_set(env_dir, other)
    monkeypatch.setenv("FASTNET_DATA", str(env_dir))
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", sums(other))
    (_, t), _ = load_mnist(download=False)
    np.testing.assert_array_equal(t, other["train_label"])

    arg_dir = tmp_path / "arg"
    third = fake_arrays(10)
    write_set(arg_dir, third)
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", sums(third))
    (_, t), _ = load_mnist(data_dir=arg_dir, download=False)
    np.testing.assert_array_equal(t, third["train_label"])


def test_mnist_available_false_when_empty(tmp_path: Path) -> None:
    assert not mnist_available(tmp_path / "nothing")


# ----------------------------------------------------------- toy data sets


@pytest.mark.parametrize("make", [spiral_data, vertical_data])
def test_toy_shapes_and_labels(make) -> None:
    X, y = make(50, 4, seed=1)
    assert X.shape == (200, 2) and X.dtype == np.float32
    assert y.shape == (200,) and y.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [50] * 4)
    np.testing.assert_array_equal(y, np.repeat(np.arange(4), 50))


@pytest.mark.parametrize("make", [spiral_data, vertical_data])
def test_toy_seeding(make) -> None:
    a, _ = make(30, 3, seed=123)
    b, _ = make(30, 3, seed=123)
    c, _ = make(30, 3, seed=124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    d, _ = make(30, 3, seed=np.random.default_rng(123))
    np.testing.assert_array_equal(a, d)
    e, _ = make(30, 3)
    f, _ = make(30, 3)
    assert not np.array_equal(e, f)


def test_spiral_geometry() -> None:
    X, y = spiral_data(100, 3, seed=0)
    radius = np.hypot(X[:, 0].astype(np.float64), X[:, 1].astype(np.float64))
    assert radius.min() >= 0 and radius.max() <= 1 + 1e-6
    # Radii are evenly spaced from 0 to 1 within each class, whatever the noise.
    np.testing.assert_allclose(radius[:100], np.linspace(0, 1, 100), atol=1e-6)
    # Without noise the formula is exact.
    X0, _ = spiral_data(5, 2, noise=0.0)
    r = np.linspace(0, 1, 5)
    t = np.linspace(4, 8, 5)
    np.testing.assert_allclose(X0[5:], np.c_[r * np.sin(2.5 * t), r * np.cos(2.5 * t)], atol=1e-6)


def test_vertical_centres() -> None:
    X, y = vertical_data(2000, 3, seed=0)
    for c in range(3):
        centre = X[y == c].mean(axis=0)
        np.testing.assert_allclose(centre, [c / 3, 0.5], atol=0.02)
        np.testing.assert_allclose(X[y == c].std(axis=0), [0.1, 0.1], atol=0.01)


@pytest.mark.parametrize("make", [spiral_data, vertical_data])
@pytest.mark.parametrize(
    ("args", "name"),
    [((0, 3), "samples"), ((-1, 3), "samples"), ((2.5, 3), "samples"), ((True, 3), "samples"),
     ((10, 0), "classes"), ((10, "3"), "classes"), ((10, 257), "classes")],
)
def test_toy_bad_args(make, args, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}:"):
        make(*args)


@pytest.mark.parametrize("noise", [-0.1, float("nan"), "0.2"])
def test_spiral_bad_noise(noise) -> None:
    with pytest.raises(ValueError, match="^noise:"):
        spiral_data(10, 2, noise=noise)


@pytest.mark.parametrize("download", [True, False])
def test_a_data_dir_that_does_not_exist_is_an_error_not_the_user_cache(dataset, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      download: bool) -> None:
    """A typo in data_dir must not quietly load whatever the user cache holds, when nothing can be
    downloaded into it."""
    data, arrays, checksums = dataset
    if download:
        monkeypatch.setenv("FASTNET_OFFLINE", "1")
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", checksums)
    load_idx_dataset(data, checksums=checksums, cache_dir=data)  # something in a cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(data.parent))
    with pytest.raises(DatasetError, match="does not exist"):
        mnist_mod.load_mnist(data_dir=tmp_path / "no-such-folder", download=download)
