"""Scale-out on dask.distributed: a net's numerical gradient split into shards.

Needs the optional extra: ``pip install 'fastnet[distributed]'``. Nothing
else in fastnet imports dask.

With no address, ``client()`` starts (or reuses) a ``LocalCluster`` of
processes, one single-threaded worker per core, with BLAS and Numba held to
one thread each so workers do not fight over cores. With an address (or
``FASTNET_SCHEDULER``) it connects to a running scheduler. Every function
also accepts a ``dask.distributed.Client`` of your own.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterator

import numpy

from .backend import MLPSpec, use_backend
from .errors import FastnetError

__all__ = ["client", "shutdown", "numerical_gradient", "shard_ranges", "as_client", "import_distributed",
           "SchedulerUnreachableError", "EXTRA_HINT"]

EXTRA_HINT = "install it with: pip install 'fastnet[distributed]'"

# Workers get one thread each; these keep the libraries under them to one too.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}

_local_lock = threading.Lock()
_local: dict[str, Any] = {}


class SchedulerUnreachableError(FastnetError, ConnectionError):
    """No dask scheduler answered at the given address in time."""


def import_distributed() -> Any:
    """dask's ``distributed`` module, or an ImportError naming the extra that installs it."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            f"fastnet.distributed needs dask's 'distributed' package ({exc}); {EXTRA_HINT}"
        ) from None
    return distributed


def client(address: str | None = None, n_workers: int | None = None, *, timeout: float = 10.0) -> Any:
    """A dask ``Client``: connected to `address`, or to a local cluster started on demand.

    `address` falls back to ``$FASTNET_SCHEDULER``; without either, one
    ``LocalCluster`` per process is started (``n_workers`` defaults to the
    number of cores) and reused by later calls.
    """
    distributed = import_distributed()
    address = address or os.environ.get("FASTNET_SCHEDULER") or None
    if address:
        try:
            return distributed.Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise SchedulerUnreachableError(
                f"no dask scheduler answered at {address} within {timeout:g} s ({exc}); "
                f"start one with 'dask scheduler' or check the address"
            ) from None
    if n_workers is not None and (not isinstance(n_workers, int) or n_workers < 1):
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
    with _local_lock:
        current = _local.get("client")
        wanted = n_workers or os.cpu_count() or 1
        if current is not None and current.status == "running" and _local.get("n") == wanted:
            return current
        if current is not None:
            _close_local()
        cluster = distributed.LocalCluster(
            n_workers=wanted,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env=WORKER_ENV,
        )
        _local.update(client=distributed.Client(cluster), cluster=cluster, n=wanted)
        return _local["client"]


def shutdown() -> None:
    """Close the local cluster ``client()`` started, if any (a remote one is left running)."""
    with _local_lock:
        _close_local()


def _close_local() -> None:
    for key in ("client", "cluster"):
        obj = _local.pop(key, None)
        if obj is not None:
            obj.close()
    _local.pop("n", None)


def as_client(value: Any) -> Any:
    """A Client from None (local cluster or FASTNET_SCHEDULER), an address, or a Client as is."""
    if value is None or isinstance(value, str):
        return client(value)
    return value  # a user's own Client


def shard_ranges(sizes: dict[str, int], chunks: int) -> list[tuple[str, int, int]]:
    """Split each parameter's flat index space into about `chunks` pieces in all.

    Pieces never cross parameters; bigger parameters get more of them.
    """
    if not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunks must be a positive integer, got {chunks!r}")
    total = sum(sizes.values())
    step = max(1, -(-total // chunks))  # ceil: at most `chunks` pieces of the largest size
    out = []
    for name, size in sizes.items():
        out += [(name, a, min(a + step, size)) for a in range(0, size, step)]
    return out


def _shard(payload: dict[str, Any], name: str, start: int, stop: int, h: float) -> numpy.ndarray:
    """On a worker: entries start:stop of the numerical gradient of params[name]."""
    with use_backend(payload["backend"]) as backend:
        # Copies: the kernel perturbs params in place, and a worker with
        # several threads may run other shards on the same payload meanwhile.
        params = {k: backend.asarray(v.copy()) for k, v in payload["params"].items()}
        spec = MLPSpec(params, payload["depth"], payload["activation"], payload["weight_decay"])
        x, t = backend.asarray(payload["x"]), backend.asarray(payload["t"])
        part = backend.mlp_numerical_gradient_part(spec, x, t, name, start, stop, h)
        return backend.to_numpy(part)


def numerical_gradient(
    net: Any,
    x: Any,
    t: Any,
    client: Any = None,
    chunks: int | None = None,
    *,
    h: float = 1e-4,
    progress: bool = False,
) -> dict[str, Any]:
    """``net.numerical_gradient(x, t)`` computed on a dask cluster.

    The parameters and the batch are sent to every worker once; each task
    runs the net backend's own kernel on one slice of one parameter, and the
    slices are put back together here. On the numpy and numba backends the
    result is bit-for-bit the local one, whatever the number of workers or
    `chunks` (default: 4 tasks per worker). A worker lost mid-run has its
    tasks rerun elsewhere, which cannot change the answer.
    """
    spec = net.spec()
    if spec is None:
        raise ValueError(
            "the distributed numerical gradient needs a plain fully connected net "
            "(no dropout or batch normalization); use net.numerical_gradient(x, t) instead"
        )
    x, t = net.checked_batch(x, t)  # the same checks as the local call
    backend = net.backend
    dask = as_client(client)
    if chunks is None:
        chunks = 4 * max(1, len(dask.scheduler_info().get("workers", {})))
    host = backend.to_numpy
    payload = {
        "backend": backend.name,
        "params": {k: host(v) for k, v in spec.params.items()},
        "depth": spec.depth,
        "activation": spec.activation,
        "weight_decay": spec.weight_decay,
        "x": host(x),
        "t": host(t),
    }
    [payload_future] = dask.scatter([payload], broadcast=True, hash=False)  # unique key per call
    sizes = {name: int(spec.params[name].size) for name in spec.names()}
    pieces = shard_ranges(sizes, chunks)
    futures = {
        dask.submit(_shard, payload_future, name, a, b, h, pure=False, retries=2): (name, a, b)
        for name, a, b in pieces
    }
    grads = {name: numpy.zeros(size, dtype=payload["params"][name].dtype) for name, size in sizes.items()}
    distributed = import_distributed()
    done = distributed.as_completed(list(futures))
    for future in _maybe_progress(done, len(futures), progress):
        name, a, b = futures[future]
        grads[name][a:b] = future.result()
    return {
        name: backend.asarray(grads[name].reshape(spec.params[name].shape)) for name in spec.names()
    }


def _maybe_progress(items: Any, total: int, enabled: bool) -> Iterator[Any]:
    if enabled:
        try:
            from tqdm.auto import tqdm

            yield from tqdm(items, total=total, desc="numerical gradient", unit="shard")
            return
        except ImportError:
            pass
    yield from items

