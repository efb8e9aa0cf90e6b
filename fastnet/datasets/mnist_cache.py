"""Checks and the parsed-array cache of the MNIST loader.

Every IDX file is checked against its SHA-256 and the MNIST structure; the
parsed arrays are cached as ``mnist-cache.npz`` (no pickle) beside a record of
the sources they came from, so a changed source invalidates the cache, and each
cached array is checked against its source's SHA-256 when read. A file of
that name that is not such a cache is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ChecksumError, DatasetError
from . import fileio
from .idx import decode_idx, encode_idx, gunzip_if_needed

__all__ = ["CACHE_NAME", "CACHE_VERSION", "IMAGE_SIDE", "NUM_CLASSES", "check_structure", "first_writable",
           "read_cache", "read_checked", "source_key", "write_cache"]

IMAGE_SIDE = 28
NUM_CLASSES = 10
CACHE_NAME = "mnist-cache.npz"
CACHE_VERSION = 1


def first_writable(dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        if fileio.ensure_writable_dir(d):
            return d
    return None


# ------------------------------------------------------------------ verification


def read_checked(path: Path, filename: str, expected: str | None) -> tuple[np.ndarray, str]:
    """Parse one IDX file, checking the SHA-256 of its decompressed bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read file ({exc})") from exc
    raw = gunzip_if_needed(data, str(path))
    digest = hashlib.sha256(raw).hexdigest()
    if expected is not None and digest != expected.lower():
        raise ChecksumError(
            f"{path}: SHA-256 of the decompressed content is {digest}, expected {expected} "
            f"(for {filename}). The file is corrupt or not the right file: delete it and "
            "load again with download allowed to fetch a fresh copy."
        )
    return decode_idx(raw, str(path)), digest


def check_structure(arrays: Mapping[str, np.ndarray], where: Mapping[str, str]) -> None:
    """MNIST-format checks: 28x28 uint8 images, uint8 labels 0..9, equal counts."""
    for split in ("train", "test"):
        img, lab = arrays[f"{split}_img"], arrays[f"{split}_label"]
        img_name, lab_name = where[f"{split}_img"], where[f"{split}_label"]
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise DatasetError(
                f"{img_name}: expected uint8 images of shape (N, {IMAGE_SIDE}, {IMAGE_SIDE}), "
                f"got {img.dtype} {img.shape}"
            )
        if lab.dtype != np.uint8 or lab.ndim != 1:
            raise DatasetError(f"{lab_name}: expected a 1-D uint8 label vector, got {lab.dtype} {lab.shape}")
        if lab.size and int(lab.max()) >= NUM_CLASSES:
            bad = int(np.count_nonzero(lab >= NUM_CLASSES))
            raise DatasetError(
                f"{lab_name}: {bad} labels outside 0..{NUM_CLASSES - 1} (max {int(lab.max())})"
            )
        if img.shape[0] != lab.shape[0]:
            raise DatasetError(
                f"{img_name} holds {img.shape[0]} images but {lab_name} holds {lab.shape[0]} labels; "
                "the two files must come from the same release"
            )


# ------------------------------------------------------------------------- cache


def source_key(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    st = path.stat()
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_cache(
    path: Path,
    files: Mapping[str, str],
    checksums: Mapping[str, str | None] | None,
    sources: Mapping[str, Path | None],
    *,
    load_arrays: bool = True,
) -> dict[str, np.ndarray] | None:
    """Return the cached arrays if ``path`` is a valid, current cache, else None.

    Any problem (truncated zip, wrong keys, stale sources) means "no cache":
    the caller rebuilds it, so a damaged cache never stops a load.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"][()]))
            if meta.get("version") != CACHE_VERSION or meta.get("files") != dict(files):
                return None
            for key, filename in files.items():
                entry = meta["sources"][key]
                want = (checksums or {}).get(filename)
                if want is not None and entry["sha256"] != want.lower():
                    return None
                here = source_key(sources.get(key))
                if here is not None and here != entry["stat"]:
                    return None
            if not load_arrays:
                return {}
            arrays = {key: npz[key] for key in files}
        for key in files:  # the arrays themselves, not just the record: a rewritten cache is rebuilt
            if hashlib.sha256(encode_idx(arrays[key])).hexdigest() != meta["sources"][key]["sha256"]:
                return None
        check_structure(arrays, {k: f"{path} [{k}]" for k in files})
        return arrays
    except Exception:  # noqa: BLE001 -- any failure just means "rebuild"
        return None


def _replaceable(path: Path) -> bool:
    """Whether the cache may be written at `path`: nothing there, or a cache of ours (stale or
    damaged). Any other file (a net someone saved under that name) is left alone."""
    if not path.exists():
        return True
    try:
        with np.load(path, allow_pickle=False) as npz:
            return "meta" in npz.files and "files" in json.loads(str(npz["meta"][()]))
    except Exception:  # noqa: BLE001 -- unreadable as an archive: a damaged cache
        return path.is_file()


def write_cache(dirs: Sequence[Path], arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Save the arrays atomically in the first writable directory; skip if none."""
    target = first_writable(dirs)
    if target is None or not _replaceable(target / CACHE_NAME):
        return
    try:
        with fileio.atomic_writer(target / CACHE_NAME) as f:
            members: dict[str, Any] = dict(arrays, meta=np.array(json.dumps(meta, sort_keys=True)))
            np.savez(f, **members)
    except OSError:
        # A cache is an optimisation; a full disk must not fail the load.
        pass
