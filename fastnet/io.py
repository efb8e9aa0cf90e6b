"""Save and load a net's parameters as ``.npz``, with its architecture beside them.

The file holds one array per parameter (``W1``, ``b1``, ...), the batch-norm
running averages when there are any, and ``__fastnet__``: a JSON string (a
plain unicode array, so ``allow_pickle=False`` can read it) recording the net
class, its constructor arguments, the dtype, every array's shape and dtype and
a SHA-256 of its bytes. Arrays are always stored as NumPy arrays, so a net
saved on one backend loads on any other.

Writes are atomic: the file is written under a temporary name in the same
folder, read back and checked, then renamed over the target, so a crash never
leaves a half-written file under the real name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy

from .backend import NumpyBackend, to_numpy
from .errors import FastnetError
from .backend import lookup as _backend
from .layers import BatchNormalization
from .conv_config import param_shapes
from .nets import NETS, Net

__all__ = ["save_params", "load_params", "load_net", "read_header", "ModelFileError", "FORMAT"]

FORMAT = "fastnet-params"
VERSION = 1
HEADER_KEY = "__fastnet__"
PathLike = str | os.PathLike


class ModelFileError(FastnetError, ValueError):
    """A saved-parameters file is unreadable, tampered with, or does not fit the net."""


def _arrays(net: Net) -> dict[str, numpy.ndarray]:
    """Everything that defines the trained net: params plus batch-norm running averages."""
    out = {name: numpy.ascontiguousarray(to_numpy(p)) for name, p in net.params.items()}
    for name, layer in net.layers.items():
        if isinstance(layer, BatchNormalization) and layer.running_mean is not None:
            i = name[len("BatchNorm"):]
            out[f"running_mean{i}"] = numpy.ascontiguousarray(to_numpy(layer.running_mean))
            out[f"running_var{i}"] = numpy.ascontiguousarray(to_numpy(layer.running_var))
    return out


def _layer_list(net: Net) -> list[str]:
    """Each layer as "name: kind" ("Conv1: Convolution stride=1 pad=0", "Relu1: activation relu").

    A file records it: a net whose layers were swapped after it was built
    must not load as the net its constructor builds.
    """
    from .activations import builtin
    from .layers import Activation, plain_layer

    out = []
    for name, layer in [*net.layers.items(), ("last", net.last_layer)]:
        if isinstance(layer, Activation):
            kind = "activation " + (builtin(layer.activation) or type(layer.activation).__name__)
        else:
            kind = type(layer).__name__
        if not plain_layer(layer):  # a subclass, or methods replaced: not what the constructor builds
            kind = f"{type(layer).__qualname__} (own methods) {kind}"
        for attr in ("stride", "pad", "pool_h", "pool_w", "dropout_ratio"):
            if hasattr(layer, attr):
                kind += f" {attr}={getattr(layer, attr)}"
        out.append(f"{name}: {kind}")
    return out


def _check_layers(path: PathLike, header: dict[str, Any], net: Net, advice: str) -> None:
    """The saved layer list (files written before it existed have none) against `net`'s."""
    saved, mine = header.get("layers"), _layer_list(net)
    if saved is None or saved == mine:
        return
    if not isinstance(saved, list):
        raise ModelFileError(f"{path}: the header's layer list is not a list")
    diff = next((f"{a!r} saved, {b!r} here" for a, b in zip(saved, mine) if a != b),
                f"{len(saved)} layers saved, {len(mine)} here")
    raise ModelFileError(f"{path} holds a net whose layers differ from {advice} ({diff})")


def _digest(a: numpy.ndarray) -> str:
    return hashlib.sha256(numpy.ascontiguousarray(a).tobytes()).hexdigest()


def save_params(path: PathLike, net: Net) -> Path:
    """Write `net`'s parameters and architecture to `path` (exactly that name).

    Returns the path. The file is verified (read back, every array compared by
    checksum) before it replaces any existing file.
    """
    if not isinstance(net, Net):
        raise TypeError(f"net must be a fastnet net, got {type(net).__name__}")
    path = Path(path)
    arrays = _arrays(net)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "class": type(net).__name__,
        "config": net.config(),
        "dtype": net.dtype.name,
        "layers": _layer_list(net),
        "saved_on": net.backend.name,
        "arrays": {
            k: {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": _digest(a)} for k, a in arrays.items()
        },
    }
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {path}: folder {folder} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"cannot save to {path}: it is a folder; give a file name such as {path / 'net.npz'}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot save to {path}: folder {folder} is not writable ({exc.strerror})") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make saved nets private to the user
        with os.fdopen(fd, "wb") as f:
            numpy.savez(f, **arrays, **{HEADER_KEY: numpy.array(json.dumps(header))})  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        _read(Path(tmp))  # verify what is on disk before it takes the real name
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, FastnetError) and exc.errno is not None:
            # e.g. a full disk: the old file (if any) is untouched and nothing half-written is left
            raise type(exc)(
                exc.errno, f"cannot save to {path}: {exc.strerror}; nothing was written"
            ) from None
        raise
    return path


def _read(path: Path) -> tuple[dict[str, Any], dict[str, numpy.ndarray]]:
    """Header and arrays of a saved file, every array checked against the header."""
    if not path.exists():
        raise FileNotFoundError(f"no saved parameters at {path}: the file does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a saved parameters file (.npz)")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except PermissionError as exc:
        raise PermissionError(exc.errno, f"cannot read {path}: {exc.strerror}") from None
    if magic.startswith(b"\x80"):
        raise ModelFileError(
            f"{path} is a Python pickle; fastnet never writes those and will not load them "
            f"(they can run code): the file was not written by fastnet.io"
        )
    if magic != b"PK\x03\x04":
        raise ModelFileError(f"{path} is not a .npz file (it does not start like a zip archive)")
    # Everything is checked from the small npy headers before any array is read,
    # so a tampered file cannot make this allocate more than the file holds.
    members = _members(path)
    header = _header(path, members)
    if header.get("version") != VERSION:
        raise ModelFileError(f"{path} has format version {header.get('version')!r}; this fastnet reads {VERSION}")
    expected = header.get("arrays")
    if not isinstance(expected, dict) or not all(isinstance(m, dict) for m in expected.values()):
        raise ModelFileError(f"{path} has a malformed header (its 'arrays' entry is not a table of arrays)")
    stored = {k: v for k, v in members.items() if k != HEADER_KEY}
    if set(expected) != set(stored):
        raise ModelFileError(
            f"{path} is inconsistent: header lists {sorted(expected)}, file holds {sorted(stored)}"
        )
    for k, (shape, dtype) in stored.items():
        if not {"shape", "dtype", "sha256"} <= set(expected[k]):
            raise ModelFileError(f"{path} has a malformed header (array {k} lacks its shape, dtype or sha256)")
        if list(shape) != expected[k].get("shape") or dtype.str != expected[k].get("dtype"):
            raise ModelFileError(
                f"{path}: array {k} is {dtype.str}{list(shape)} but the header says "
                f"{expected[k].get('dtype')}{expected[k].get('shape')}"
            )
        if dtype.kind != "f":
            raise ModelFileError(f"{path}: array {k} has dtype {dtype}, expected floating point")
    declared = sum(math.prod(shape) * dtype.itemsize for shape, dtype in stored.values())
    if declared > path.stat().st_size:  # fastnet writes uncompressed: the bytes must be in the file
        raise ModelFileError(f"{path} declares {declared} bytes of arrays but the file holds fewer (tampered)")
    try:
        with numpy.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in stored}
    except PermissionError as exc:
        raise PermissionError(exc.errno, f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise ModelFileError(
            f"{path} is damaged or truncated ({type(exc).__name__}: {exc}); save the net again"
        ) from None
    try:
        _check_arrays(path, expected, arrays)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"{path} has a malformed header ({type(exc).__name__}: {exc})") from None
    return header, arrays


MAX_HEADER_CHARS = 1 << 20  # a real header is a few kB


def _members(path: Path) -> dict[str, tuple[tuple[int, ...], numpy.dtype]]:
    """Shape and dtype of every entry, read from the npy headers alone."""
    out = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    raise ModelFileError(f"{path}: entry {name!r} is not a NumPy array (.npy); the file was tampered with")
                with archive.open(name) as f:
                    major, _ = numpy.lib.format.read_magic(f)
                    read = numpy.lib.format.read_array_header_1_0 if major == 1 else numpy.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                if dtype.hasobject:
                    raise ModelFileError(
                        f"{path} holds pickled Python objects ({name}); fastnet never writes those and will "
                        f"not load them (they can run code): the file was not written by fastnet.io"
                    )
                out[name[: -len(".npy")]] = (tuple(shape), dtype)
    except ModelFileError:
        raise
    except PermissionError as exc:
        raise PermissionError(exc.errno, f"cannot read {path}: {exc.strerror}") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelFileError(
            f"{path} is damaged or truncated ({type(exc).__name__}: {exc}); save the net again"
        ) from None
    return out


def _header(path: Path, members: dict[str, tuple[tuple[int, ...], numpy.dtype]]) -> dict[str, Any]:
    """The JSON header, refused unless it is a small text array holding a flat-enough object."""
    if HEADER_KEY not in members:
        raise ModelFileError(f"{path} is not a fastnet parameter file (no {HEADER_KEY} entry)")
    shape, dtype = members[HEADER_KEY]
    if shape != () or dtype.kind != "U" or dtype.itemsize // 4 > MAX_HEADER_CHARS:
        raise ModelFileError(f"{path}: its {HEADER_KEY} entry is not a short text (got {dtype}{list(shape)})")
    try:
        with numpy.load(path, allow_pickle=False) as data:
            text = str(data[HEADER_KEY][()])
        header = json.loads(text)
    except RecursionError:
        raise ModelFileError(f"{path} has a malformed header (nested too deeply)") from None
    except (ValueError, zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise ModelFileError(f"{path} has a malformed header ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise ModelFileError(f"{path} is not a fastnet parameter file (format {found!r})")
    return header


def _check_config(path: PathLike, header: dict[str, Any], name: str) -> None:
    """The config's layer sizes must give exactly the stored weight shapes (checked before building)."""
    config, arrays = header.get("config"), header["arrays"]
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: cannot rebuild {name}: the header's config is not a table of constructor arguments")
    if name in ("SimpleConvNet", "DeepConvNet"):
        try:
            expected = param_shapes(name, config)
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelFileError(f"{path}: cannot rebuild {name}: {exc}") from None
        for key, shape in expected.items():
            saved = arrays.get(key, {}).get("shape") if isinstance(arrays.get(key), dict) else None
            if saved != list(shape):
                raise ModelFileError(
                    f"{path}: the config needs {key} of shape {list(shape)} but the file holds {saved}; "
                    f"header and weights disagree (tampered)"
                )
        return
    hidden = config.get("hidden_size_list", [config.get("hidden_size")])
    sizes = [config.get("input_size"), *(hidden if isinstance(hidden, list) else [hidden]), config.get("output_size")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        raise ModelFileError(f"{path}: the header's layer sizes {sizes} are not positive integers")
    for i in range(1, len(sizes)):
        for key, shape in ((f"W{i}", [sizes[i - 1], sizes[i]]), (f"b{i}", [sizes[i]])):
            saved = arrays.get(key, {}).get("shape")
            if saved != shape:
                raise ModelFileError(
                    f"{path}: the config needs {key} of shape {shape} but the file holds {saved}; "
                    f"header and weights disagree (tampered)"
                )


def _check_arrays(path: Path, expected: dict[str, Any], arrays: dict[str, numpy.ndarray]) -> None:
    if set(expected) != set(arrays):
        raise ModelFileError(
            f"{path} is inconsistent: header lists {sorted(expected)}, file holds {sorted(arrays)}"
        )
    for k, a in arrays.items():
        meta = expected[k]
        if list(a.shape) != meta["shape"] or a.dtype.str != meta["dtype"]:
            raise ModelFileError(
                f"{path}: array {k} is {a.dtype.str}{list(a.shape)} but the header says "
                f"{meta['dtype']}{meta['shape']}"
            )
        if a.dtype.kind != "f":
            raise ModelFileError(f"{path}: array {k} has dtype {a.dtype}, expected floating point")
        if _digest(a) != meta["sha256"]:
            raise ModelFileError(f"{path}: array {k} does not match its checksum (file corrupted or edited)")


def read_header(path: PathLike) -> dict[str, Any]:
    """The architecture record of a saved file (class, config, dtype, arrays)."""
    return _read(Path(path))[0]


def load_net(path: PathLike, backend: NumpyBackend | str | None = None, dtype: Any = None) -> Net:
    """Rebuild the saved net on `backend` (default: the active one) and load its weights.

    `dtype` defaults to the dtype it was saved with.
    """
    if dtype is not None and numpy.dtype(dtype).kind != "f":
        raise TypeError(f"dtype must be a floating-point type, got {numpy.dtype(dtype)}")
    bk = _backend(backend)
    header, arrays = _read(Path(path))
    name = header.get("class")
    cls = NETS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ModelFileError(f"{path}: unknown net class {header.get('class')!r}; known: {', '.join(NETS)}")
    _check_config(path, header, cls.__name__)
    try:
        net = cls(**header["config"], dtype=header["dtype"] if dtype is None else dtype, backend=bk)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot rebuild {cls.__name__} from {header.get('config')!r}: {exc}") from None
    _check_layers(path, header, net, f"what {cls.__name__}(...) builds; build that net, change its layers "
                                     f"as they were, and read the weights with load_params(path, net)")
    _assign(net, arrays, path)
    return net


def load_params(path: PathLike, net: Net) -> Net:
    """Load saved weights into an existing `net` of the same architecture (in place).

    The saved class and constructor arguments must match the net's; values
    are cast to the net's dtype and moved to its backend.
    """
    if not isinstance(net, Net):
        raise TypeError(f"net must be a fastnet net to load into, got {type(net).__name__}")
    header, arrays = _read(Path(path))
    mine = {"class": type(net).__name__, "config": net.config()}
    saved = {"class": header.get("class"), "config": header.get("config")}
    if mine != saved:
        raise ModelFileError(
            f"{path} holds a different architecture: saved {_describe(saved)}, this net is {_describe(mine)}"
        )
    _check_layers(path, header, net, "this net's")
    _assign(net, arrays, path)
    return net


def _describe(arch: dict[str, Any]) -> str:
    config = ", ".join(f"{k}={v!r}" for k, v in (arch["config"] or {}).items())
    return f"{arch['class']}({config})"


def _assign(net: Net, arrays: dict[str, numpy.ndarray], path: PathLike) -> None:
    """Copy into the live parameter arrays (so layers and optimizers keep their references)."""
    stats = [name[len("BatchNorm"):] for name, layer in net.layers.items() if isinstance(layer, BatchNormalization)]
    optional = {f"running_{w}{i}" for i in stats for w in ("mean", "var")}
    missing = [k for k in net.params if k not in arrays]
    extra = [k for k in arrays if k not in net.params and k not in optional]
    if missing or extra:
        raise ModelFileError(
            f"{path} does not fit the net: missing {missing or 'nothing'}, unexpected {extra or 'nothing'}"
        )
    for k, p in net.params.items():
        if arrays[k].shape != tuple(p.shape):
            raise ModelFileError(f"{path}: {k} has shape {arrays[k].shape}, the net needs {tuple(p.shape)}")
    bk = net.backend
    for k, p in net.params.items():
        p[...] = bk.asarray(arrays[k], dtype=net.dtype)
    for name, layer in net.layers.items():
        if isinstance(layer, BatchNormalization):
            i = name[len("BatchNorm"):]
            if f"running_mean{i}" in arrays:
                layer.running_mean = bk.asarray(arrays[f"running_mean{i}"], dtype=net.dtype)
                layer.running_var = bk.asarray(arrays[f"running_var{i}"], dtype=net.dtype)
