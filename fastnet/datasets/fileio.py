"""File-system and download helpers shared by the dataset loaders.

Everything here works on plain paths and bytes; nothing knows about MNIST.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import DatasetError, DownloadError

__all__ = [
    "user_cache_dir",
    "is_writable_dir",
    "ensure_writable_dir",
    "atomic_writer",
    "urlopen",
    "download",
    "Opener",
]

#: ``opener(url, timeout)`` returns a readable, closable response object.
Opener = Callable[[str, float], Any]

_CHUNK = 1 << 16

# Write errors that another mirror cannot fix: stop at once and say so.
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}

# mkstemp makes 0600 files; finished files should get the usual umask-based
# mode instead. Reading the umask means setting it, so do it once at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def user_cache_dir() -> Path:
    """Return fastnet's per-user cache directory (it may not exist yet).

    ``$XDG_CACHE_HOME/fastnet`` when that variable holds an absolute path (the
    XDG spec says to ignore relative ones), else ``~/.cache/fastnet``.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "fastnet"


def is_writable_dir(path: Path) -> bool:
    """True if ``path`` is an existing directory we may write into.

    The permission bits are honoured even for root: root can write into a
    ``r-x`` directory, but such a directory was made read-only on purpose
    (a shared data set, say), so we leave it alone.
    """
    try:
        st = path.stat()
    except OSError:
        return False
    if not path.is_dir() or not st.st_mode & 0o222:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def ensure_writable_dir(path: Path) -> bool:
    """Create ``path`` if needed and report whether we may write into it.

    Never raises: a directory that cannot be created counts as not writable.
    """
    if path.exists():
        return is_writable_dir(path)
    # Only create under an ancestor that is itself writable by our rules,
    # so a read-only tree never gains new sub-directories.
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not is_writable_dir(parent):
        return False
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return is_writable_dir(path)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path``; rename it onto ``path`` on success.

    Readers never see a half-written file: the rename (``os.replace``) is atomic
    on one file system, and on any error the temporary file is removed.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        # Opened by name so that ``f.name`` is the temporary path.
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def urlopen(url: str, timeout: float) -> Any:
    """Default opener: a plain ``urllib`` GET with a timeout."""
    request = urllib.request.Request(url, headers={"User-Agent": "fastnet-datasets"})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https only)


def _progress(total: int | None, desc: str) -> Any:
    """A tqdm bar when tqdm is installed and stderr is a terminal, else None."""
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False)


def _fetch(url: str, out: IO[bytes], opener: Opener, timeout: float, desc: str) -> None:
    """Stream ``url`` into ``out``; raise if the server sent fewer bytes than promised."""
    with opener(url, timeout) as response:
        headers = getattr(response, "headers", None)
        length = headers.get("Content-Length") if headers is not None else None
        expected = int(length) if length and length.isdigit() else None
        bar = _progress(expected, desc)
        received = 0
        try:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    # http.client quietly returns b"" when a connection drops early, so the
    # length check is what catches an interrupted transfer.
    if expected is not None and received != expected:
        raise DownloadError(f"transfer interrupted: got {received} of {expected} bytes")


def download(
    urls: Sequence[str],
    dest: Path,
    *,
    verify: Callable[[Path], None] | None = None,
    opener: Opener | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download the first of ``urls`` that works into ``dest``, atomically.

    Each URL is tried in turn. The bytes go to a temporary file in ``dest``'s
    directory; ``verify(tmp_path)`` (which should raise :class:`DatasetError`
    when the content is wrong) runs before the file is renamed to ``dest``, so
    ``dest`` only ever holds a complete, checked file.

    Raises:
        DownloadError: every URL failed; the message lists why for each one.
    """
    opener = opener or urlopen
    failures: list[str] = []
    for url in urls:
        try:
            with atomic_writer(dest) as out:
                _fetch(url, out, opener, timeout, dest.name)
                out.flush()
                if verify is not None:
                    verify(Path(out.name))
            return dest
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise DownloadError(
                    f"no space left in {dest.parent} for {dest.name!r} ({exc.strerror}); nothing "
                    "was kept. Free some space, or point FASTNET_DATA (or data_dir) at another "
                    "disk, then load again."
                ) from exc
            failures.append(f"  {url}: {type(exc).__name__}: {exc}")
        except (http.client.HTTPException, DatasetError) as exc:
            failures.append(f"  {url}: {type(exc).__name__}: {exc}")
    tried = "\n".join(failures) or "  (no mirrors configured)"
    raise DownloadError(
        f"could not download {dest.name!r}; every mirror failed:\n{tried}\n"
        f"Check the network connection, or fetch the file by hand into {dest.parent} "
        "(or a directory named by FASTNET_DATA)."
    )
