"""Reader and writer for the IDX format used by MNIST.

An IDX file is: two zero bytes, one type byte, one byte giving the number of
dimensions, one big-endian uint32 per dimension, then the values in C order,
big-endian. The MNIST files are additionally gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .fileio import atomic_writer

__all__ = ["IDX_TYPES", "read_idx", "write_idx", "encode_idx", "decode_idx", "gunzip_if_needed"]

#: IDX type byte -> big-endian NumPy dtype.
IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_TYPE_OF_DTYPE = {np.dtype(v).newbyteorder("=").str: k for k, v in IDX_TYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"

Source = str | os.PathLike[str] | bytes | bytearray | memoryview


def gunzip_if_needed(data: bytes, name: str) -> bytes:
    """Return ``data`` decompressed if it is gzip, else unchanged.

    Raw IDX data starts with two zero bytes, so the gzip magic cannot be
    mistaken for it.

    Raises:
        DatasetError: the gzip stream is corrupt or truncated.
    """
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"{name}: corrupt or truncated gzip data ({exc}); delete the file and re-download it"
        ) from exc


def decode_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse uncompressed IDX bytes into a native-endian, writable array.

    The declared shape must account for every payload byte: short or
    over-long files are rejected rather than silently cut or padded.

    Raises:
        DatasetError: bad magic, unknown type, or a payload length that does
            not match the declared dimensions. The message names ``name``.
    """
    if len(raw) < 4:
        raise DatasetError(f"{name}: only {len(raw)} bytes, too short for an IDX header")
    zero1, zero2, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero1 or zero2:
        raise DatasetError(
            f"{name}: bad IDX magic {raw[:4].hex()} (expected 0000 then type and rank); "
            "this is not an IDX file"
        )
    if type_code not in IDX_TYPES:
        known = ", ".join(f"0x{k:02X}" for k in IDX_TYPES)
        raise DatasetError(f"{name}: unknown IDX type byte 0x{type_code:02X} (expected one of {known})")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DatasetError(
            f"{name}: header declares {ndim} dimensions ({header_len} header bytes) "
            f"but the file has only {len(raw)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise DatasetError(
            f"{name}: {kind}: dimensions {shape} need {expected} payload bytes "
            f"but the file holds {actual}; delete it and re-download it"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    # astype copies, which also gives a writable array instead of a view of bytes.
    return values.astype(dtype.newbyteorder("="))


def read_idx(source: Source, name: str | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a NumPy array.

    Args:
        source: a path, or the file's bytes.
        name: label used in error messages; defaults to the path, or
            ``"<bytes>"`` for in-memory data.

    Returns:
        The array, with the IDX shape and a native-endian dtype
        (``uint8`` for MNIST).

    Raises:
        DatasetError: the file cannot be read, is not IDX, is corrupt, or its
            length does not match its header.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "<bytes>"
    else:
        label = name or os.fspath(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise DatasetError(f"{label}: cannot read file ({exc})") from exc
    return decode_idx(gunzip_if_needed(data, label), label)


def encode_idx(array: np.ndarray) -> bytes:
    """Return the uncompressed IDX bytes for ``array``.

    Raises:
        ValueError: the dtype has no IDX type code, or the array has more
            than 255 dimensions or a dimension of 2**32 or more.
    """
    arr = np.asarray(array)
    key = arr.dtype.newbyteorder("=").str
    if key not in _TYPE_OF_DTYPE:
        raise ValueError(
            f"array: dtype {arr.dtype} has no IDX type; use uint8, int8, int16, int32, float32 or float64"
        )
    if arr.ndim > 255 or any(d >= 2**32 for d in arr.shape):
        raise ValueError(f"array: shape {arr.shape} does not fit an IDX header")
    type_code = _TYPE_OF_DTYPE[key]
    header = bytes([0, 0, type_code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(arr, dtype=IDX_TYPES[type_code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    The write is atomic (temporary file, then rename). Meant for building test
    fixtures and small custom data sets.

    Returns:
        The path written.
    """
    out = Path(path)
    data = encode_idx(array)
    if out.name.endswith(".gz"):
        # mtime=0 keeps the output byte-for-byte reproducible.
        data = gzip.compress(data, mtime=0)
    with atomic_writer(out) as f:
        f.write(data)
    return out
