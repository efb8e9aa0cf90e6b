"""MNIST loader with the same return values as the book's ``load_mnist``.

Where files are looked for, in order:

1. ``data_dir`` if given, else ``$FASTNET_DATA``, else the user cache
   directory (``$XDG_CACHE_HOME/fastnet/mnist`` or ``~/.cache/fastnet/mnist``);
2. the user cache directory, which is also where downloads and the parsed
   ``mnist-cache.npz`` go when the data directory is read-only.

The SHA-256 of each file's *decompressed* content is checked, because mirrors
ship differently compressed ``.gz`` files of the same data. The check runs
once: the parsed arrays are then cached in ``mnist-cache.npz`` together with the
checksums and the size and mtime of the source files, so a changed source
invalidates the cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..errors import DatasetError
from . import fileio
from .mnist_cache import (
    CACHE_NAME,
    CACHE_VERSION,
    IMAGE_SIDE,
    NUM_CLASSES,
    check_structure,
    first_writable,
    read_cache,
    read_checked,
    source_key,
    write_cache,
)

__all__ = [
    "MNIST_FILES",
    "MNIST_SHA256",
    "MNIST_MIRRORS",
    "load_mnist",
    "load_idx_dataset",
    "load_raw_idx_dataset",
    "mnist_available",
    "default_data_dir",
]

#: Book key -> file name (the keys of the book's ``key_file``).
MNIST_FILES: Mapping[str, str] = MappingProxyType(
    {
        "train_img": "train-images-idx3-ubyte.gz",
        "train_label": "train-labels-idx1-ubyte.gz",
        "test_img": "t10k-images-idx3-ubyte.gz",
        "test_label": "t10k-labels-idx1-ubyte.gz",
    }
)

#: File name -> SHA-256 of the file's decompressed (raw IDX) content.
MNIST_SHA256: Mapping[str, str] = MappingProxyType(
    {
        "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    }
)

#: Base URLs tried in order; the file name is appended.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_DEFAULT_TIMEOUT = 30.0

# Module-level so tests can monkeypatch it; signature ``(url, timeout)``.
urlopen: fileio.Opener = fileio.urlopen


# --------------------------------------------------------------------------- paths


def default_data_dir() -> Path:
    """Return ``$FASTNET_DATA`` if set, else the per-user cache directory for MNIST."""
    env = os.environ.get("FASTNET_DATA", "")
    if env:
        return Path(env).expanduser()
    return fileio.user_cache_dir() / "mnist"


def _offline() -> bool:
    return os.environ.get("FASTNET_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _search_dirs(data_dir: Path, cache_dir: Path) -> list[Path]:
    dirs = [data_dir]
    if cache_dir.resolve() != data_dir.resolve():
        dirs.append(cache_dir)
    return dirs


def _locate(dirs: Sequence[Path], filename: str) -> Path | None:
    """Find ``filename`` (or its decompressed twin without ``.gz``) in ``dirs``."""
    names = [filename]
    if filename.endswith(".gz"):
        names.append(filename[:-3])
    for d in dirs:
        for n in names:
            p = d / n
            if p.is_file():
                return p
    return None


# ----------------------------------------------------------------------- loading


def _to_book_format(
    arrays: Mapping[str, np.ndarray],
    normalize: bool,
    flatten: bool,
    one_hot_label: bool,
    dtype: np.dtype,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    # ``arrays`` is fresh for every load, so reshaping it in place hands the
    # caller writable arrays without another copy.
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        x = arrays[f"{split}_img"]
        if normalize:
            # Same order as the book (cast, then divide in place) so values match.
            x = x.astype(dtype)
            x /= 255.0
        side = IMAGE_SIDE
        x = x.reshape(-1, side * side) if flatten else x.reshape(-1, 1, side, side)
        t = arrays[f"{split}_label"]
        if one_hot_label:
            onehot = np.zeros((t.size, NUM_CLASSES), dtype=dtype if normalize else np.uint8)
            onehot[np.arange(t.size), t] = 1
            t = onehot
        out[f"{split}_img"], out[f"{split}_label"] = x, t
    return (out["train_img"], out["train_label"]), (out["test_img"], out["test_label"])


def _float_dtype(dtype: DTypeLike) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype: {dtype!r} is not a NumPy dtype") from exc
    if dt.kind != "f":
        raise ValueError(f"dtype: expected a floating dtype such as numpy.float32, got {dt}")
    return dt


def _missing_message(missing: Sequence[str], dirs: Sequence[Path], why: str) -> str:
    where = ", ".join(str(d) for d in dirs)
    return (
        f"data files missing: {', '.join(missing)}. Looked in: {where}. {why} "
        "To fix: copy the files into one of those directories or point FASTNET_DATA "
        "at a directory that holds them, or allow downloading (download=True and "
        "FASTNET_OFFLINE unset)."
    )


def load_raw_idx_dataset(
    data_dir: str | os.PathLike,
    *,
    files: Mapping[str, str] = MNIST_FILES,
    checksums: Mapping[str, str | None] | None = MNIST_SHA256,
    download: bool = False,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    cache_dir: str | os.PathLike | None = None,
    opener: fileio.Opener | None = None,
    timeout: float = _DEFAULT_TIMEOUT,
) -> dict[str, np.ndarray]:
    """Load an MNIST-format data set as raw arrays keyed like ``files``.

    Returns ``uint8`` arrays: images ``(N, 28, 28)`` and labels ``(N,)``.
    See :func:`load_idx_dataset` for the arguments.
    """
    data_path = Path(data_dir).expanduser()
    if data_path.exists() and not data_path.is_dir():
        raise DatasetError(
            f"data folder {data_path} is a file, not a folder; point data_dir (or FASTNET_DATA) "
            "at the folder that holds the MNIST .gz files"
        )
    cache_path = Path(cache_dir).expanduser() if cache_dir is not None else fileio.user_cache_dir() / "mnist"
    dirs = _search_dirs(data_path, cache_path)
    sources = {key: _locate(dirs, name) for key, name in files.items()}

    for d in dirs:
        cached = d / CACHE_NAME
        if cached.is_file():
            hit = read_cache(cached, files, checksums, sources)
            if hit is not None:
                return hit

    missing = [key for key, path in sources.items() if path is None]
    if missing:
        names = [files[k] for k in missing]
        if not download or _offline():
            why = "Downloading is off (download=False)." if not download else "Downloading is off (FASTNET_OFFLINE=1)."
            raise DatasetError(_missing_message(names, dirs, why))
        target = first_writable(dirs)
        if target is None:
            raise DatasetError(
                _missing_message(names, dirs, "None of these directories is writable, so nothing could be downloaded.")
            )
        for key in missing:
            name = files[key]
            want = (checksums or {}).get(name)

            def verify(tmp: Path, name: str = name, want: str | None = want) -> None:
                read_checked(tmp, name, want)

            urls = [m if m.endswith("/") else m + "/" for m in mirrors]
            sources[key] = fileio.download(
                [u + name for u in urls],
                target / name,
                verify=verify,
                opener=opener or urlopen,
                timeout=timeout,
            )

    arrays: dict[str, np.ndarray] = {}
    meta_sources: dict[str, Any] = {}
    for key, name in files.items():
        path = sources[key]
        assert path is not None
        arrays[key], digest = read_checked(path, name, (checksums or {}).get(name))
        meta_sources[key] = {"sha256": digest, "stat": source_key(path)}
    check_structure(arrays, {k: str(sources[k]) for k in files})

    meta = {"version": CACHE_VERSION, "files": dict(files), "sources": meta_sources}
    write_cache(dirs, arrays, meta)
    return arrays


def load_idx_dataset(
    data_dir: str | os.PathLike,
    *,
    files: Mapping[str, str] = MNIST_FILES,
    checksums: Mapping[str, str | None] | None = MNIST_SHA256,
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    dtype: DTypeLike = np.float32,
    download: bool = False,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    cache_dir: str | os.PathLike | None = None,
    opener: fileio.Opener | None = None,
    timeout: float = _DEFAULT_TIMEOUT,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load an MNIST-format data set (four IDX files) from ``data_dir``.

    This is the engine behind :func:`load_mnist`, with every policy exposed so
    that other MNIST-format sets and generated test fixtures use the same path.

    Args:
        data_dir: directory that holds (or will receive) the files.
        files: book key (``train_img``, ``train_label``, ``test_img``,
            ``test_label``) -> file name.
        checksums: file name -> SHA-256 of the decompressed content. A file
            that is absent from the mapping or maps to None is not checked;
            ``None`` skips every check.
        normalize, flatten, one_hot_label, dtype: as in :func:`load_mnist`.
        download: fetch missing files from ``mirrors`` (unless
            ``FASTNET_OFFLINE=1``).
        mirrors: base URLs tried in order; the file name is appended.
        cache_dir: fallback directory for downloads and the ``mnist-cache.npz``
            cache when ``data_dir`` is read-only; defaults to the user cache.
        opener: ``opener(url, timeout)`` returning a response; defaults to
            :data:`urlopen` (``urllib``).
        timeout: seconds allowed per connection attempt.

    Returns:
        ``((x_train, t_train), (x_test, t_test))``.

    Raises:
        DatasetError: files missing with downloading off, or malformed.
        ChecksumError: a file's content does not match ``checksums``.
        DownloadError: every mirror failed for some file.
        ValueError: ``dtype`` is not a floating dtype.
    """
    dt = _float_dtype(dtype)
    arrays = load_raw_idx_dataset(
        data_dir,
        files=files,
        checksums=checksums,
        download=download,
        mirrors=mirrors,
        cache_dir=cache_dir,
        opener=opener,
        timeout=timeout,
    )
    return _to_book_format(arrays, normalize, flatten, one_hot_label, dt)


def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    dtype: DTypeLike = np.float32,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST the way the book's ``dataset.mnist.load_mnist`` does.

    Args:
        normalize: images as ``dtype`` scaled to [0, 1] (cast first, then
            divided by 255.0, exactly as the book); if False, raw ``uint8``.
        flatten: images shaped ``(N, 784)``; if False, ``(N, 1, 28, 28)``.
        one_hot_label: labels as ``(N, 10)`` one-hot rows, in ``dtype`` when
            ``normalize`` is true and in ``uint8`` otherwise (the book uses
            float64 here; matching the image dtype avoids silent upcasts).
            If False, labels are ``uint8`` class numbers, as in the book.
        data_dir: where the four ``.gz`` files live; defaults to
            ``$FASTNET_DATA``, then ``$XDG_CACHE_HOME/fastnet/mnist`` (or
            ``~/.cache/fastnet/mnist``).
        download: fetch missing files from the public mirrors. Ignored when the
            environment sets ``FASTNET_OFFLINE=1``.
        dtype: floating dtype of normalized images (default float32, as the book).

    Returns:
        ``((x_train, t_train), (x_test, t_test))`` with 60000 training and
        10000 test examples. The arrays are fresh and writable.

    Raises:
        DatasetError: files missing and downloading is off, or a file is malformed.
        ChecksumError: a file's decompressed content has the wrong SHA-256.
        DownloadError: a missing file could not be fetched from any mirror.
        ValueError: ``dtype`` is not a floating dtype.
    """
    if data_dir is not None and not Path(data_dir).expanduser().exists() and (not download or _offline()):
        # a typo in an explicit path must not be covered up by the user cache
        why = "download=False" if not download else "FASTNET_OFFLINE=1"
        raise DatasetError(f"data_dir {os.fspath(data_dir)!r} does not exist, and downloading into it is "
                           f"off ({why})")
    return load_idx_dataset(
        data_dir if data_dir is not None else default_data_dir(),
        checksums=MNIST_SHA256,
        normalize=normalize,
        flatten=flatten,
        one_hot_label=one_hot_label,
        dtype=dtype,
        download=download,
        mirrors=MNIST_MIRRORS,
    )


def mnist_available(data_dir: str | os.PathLike | None = None) -> bool:
    """True when MNIST can be loaded without the network.

    That is: the four files are present (in ``data_dir``, ``$FASTNET_DATA``
    or the user cache) or a current ``mnist-cache.npz`` cache is. Checksums of the
    files are not computed here; :func:`load_mnist` does that.
    """
    data_path = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    dirs = _search_dirs(data_path, fileio.user_cache_dir() / "mnist")
    sources = {key: _locate(dirs, name) for key, name in MNIST_FILES.items()}
    if all(p is not None for p in sources.values()):
        return True
    return any(
        (d / CACHE_NAME).is_file()
        and read_cache(d / CACHE_NAME, MNIST_FILES, MNIST_SHA256, sources, load_arrays=False) is not None
        for d in dirs
    )
