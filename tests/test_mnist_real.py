"""Checks against the real MNIST files; run only when FASTNET_DATA points at them.

Example: ``FASTNET_DATA=/path/to/mnist python -m pytest tests/test_mnist_real.py``.
Nothing is downloaded, and the parsed cache goes to a temporary directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fastnet.datasets import MNIST_FILES, MNIST_SHA256, load_mnist, mnist_available

_DIR = os.environ.get("FASTNET_DATA", "")
_HAVE = bool(_DIR) and all((Path(_DIR) / name).is_file() for name in MNIST_FILES.values())

pytestmark = [
    pytest.mark.mnist,
    pytest.mark.skipif(
        not _HAVE,
        reason="real MNIST not found: set FASTNET_DATA to a directory holding the four MNIST .gz files",
    ),
]


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg")


@pytest.fixture(autouse=True)
def offline(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.setenv("FASTNET_OFFLINE", "1")


def _listing(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


def test_load_counts_and_dtypes() -> None:
    before = _listing(Path(_DIR))
    (x, t), (xt, tt) = load_mnist()  # checksums verified on this first parse
    assert x.shape == (60000, 784) and x.dtype == np.float32
    assert xt.shape == (10000, 784)
    assert t.shape == (60000,) and tt.shape == (10000,) and t.dtype == np.uint8
    assert 0.0 == x.min() and x.max() == 1.0
    assert int(t[0]) == 5  # the first training digit of MNIST is a 5
    assert list(tt[:3]) == [7, 2, 1]
    if os.access(_DIR, os.W_OK) and Path(_DIR).stat().st_mode & 0o222:
        return  # a writable data dir may receive the cache; nothing more to check
    assert _listing(Path(_DIR)) == before  # read-only data dir untouched


def test_label_histogram_is_plausible() -> None:
    (_, t), (_, tt) = load_mnist(normalize=False)
    for labels, n in [(t, 60000), (tt, 10000)]:
        counts = np.bincount(labels, minlength=10)
        assert counts.sum() == n and counts.size == 10
        # Every digit is between 8% and 12% of the set.
        assert (counts > 0.08 * n).all() and (counts < 0.12 * n).all()


def test_raw_pixels_and_book_shapes() -> None:
    (x, t), (xt, tt) = load_mnist(normalize=False, flatten=False, one_hot_label=True)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.uint8
    assert x.min() == 0 and x.max() == 255
    assert t.shape == (60000, 10) and t.dtype == np.uint8
    assert int(t[0].argmax()) == 5


def test_cache_was_written_and_is_available(cache_home: Path) -> None:
    load_mnist()
    assert mnist_available()
    data_cache = Path(_DIR) / "mnist-cache.npz"
    user_cache = cache_home / "fastnet" / "mnist" / "mnist-cache.npz"
    cache = data_cache if data_cache.is_file() else user_cache
    assert cache.is_file()
    # The cache records the digests computed while parsing: the verified ones.
    with np.load(cache, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"][()]))
    for key, name in MNIST_FILES.items():
        assert meta["sources"][key]["sha256"] == MNIST_SHA256[name]


def test_checksums_match_published_list() -> None:
    listing = Path(_DIR) / "SHA256SUMS.raw"
    if not listing.is_file():
        pytest.skip("no SHA256SUMS.raw next to the data")
    published = dict(line.split()[::-1] for line in listing.read_text().splitlines() if line.strip())
    for name, digest in MNIST_SHA256.items():
        assert published[name.removesuffix(".gz")] == digest
