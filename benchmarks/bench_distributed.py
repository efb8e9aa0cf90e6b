"""Scale-out on dask: speed-up against the number of workers, and the fixed costs.

Two workloads, each run on local clusters of 1, 2, 4, ... workers (up to the
cores here) and beside the single-process call:

* ``distributed-numgrad-<backend>``: the numerical gradient of a
  MultiLayerNet 784-120-100-10 (107,310 parameters): on numba (its exact
  incremental kernel on each shard) for 100 MNIST samples, on numpy (the
  book's loop on each shard, about 20 s in one process) for 10;
* ``distributed-search``: a 32-trial ``tune.random_search`` (784-100-100-10,
  1 epoch on 4,000 samples).

``extra_info`` records the cluster start-up and the cost of one scatter of the
payload, the fixed overhead a cluster adds. With ``--benchmark-disable`` the
nets are small and only one worker count runs: a correctness pass for CI.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import fastnet

distributed = pytest.importorskip("distributed", reason="needs the 'distributed' extra")
from fastnet import distributed as fd  # noqa: E402
from fastnet import tune  # noqa: E402

from .workloads import dense_batch, mnist_batch  # noqa: E402

CORES = os.cpu_count() or 1
WORKERS = [n for n in (1, 2, 4, 8, 16) if n <= CORES]


@pytest.fixture(scope="module")
def clusters() -> Iterator[dict[int, Any]]:
    """Local clusters by worker count, started on first use; start-up seconds kept."""
    made: dict[int, Any] = {}
    yield made
    for client, cluster, _ in made.values():
        client.close()
        cluster.close()


def _client(clusters: dict[int, Any], n: int) -> tuple[Any, float]:
    if n not in clusters:
        start = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=None, env=fd.WORKER_ENV)
        client = distributed.Client(cluster)
        clusters[n] = (client, cluster, time.perf_counter() - start)
    client, _, startup = clusters[n]
    return client, startup


def _scatter_seconds(client: Any, payload: Any) -> float:
    start = time.perf_counter()
    [future] = client.scatter([payload], broadcast=True, hash=False)
    future.result()
    seconds = time.perf_counter() - start
    future.release()
    return seconds


def _batch(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    real = mnist_batch(n)
    if real is not None:
        return real[0], real[1], "mnist"
    x, t = dense_batch(n)
    return x, t, "generated"


@pytest.mark.parametrize("workers", [0, *WORKERS], ids=lambda n: f"workers{n}" if n else "local")
@pytest.mark.parametrize("backend_name", ["numba", "numpy"])
def test_numgrad(benchmark: Any, clusters: dict[int, Any], workers: int, backend_name: str) -> None:
    status = fastnet.available_backends()[backend_name]
    if not status.available:
        pytest.skip(f"backend {backend_name!r} unavailable: {status.reason}")
    if benchmark.disabled and workers not in (0, 1):
        pytest.skip("one worker count is enough for the correctness pass")
    hidden = [8, 8] if benchmark.disabled else [120, 100]
    x, t, data = _batch(10 if benchmark.disabled or backend_name == "numpy" else 100)
    with fastnet.use_backend(backend_name):
        net = fastnet.MultiLayerNet(784, hidden, 10, seed=0, dtype=np.float64)
        params = sum(int(p.size) for p in net.params.values())
        benchmark.group = f"distributed-numgrad-{backend_name}"
        benchmark.name = "local" if workers == 0 else f"workers={workers}"
        benchmark.extra_info.update(group=benchmark.group, name=benchmark.name, backend=backend_name,
                                    params=params, batch=len(x), data=data, workers=workers)
        if workers == 0:
            run = lambda: net.numerical_gradient(x, t)  # noqa: E731
        else:
            client, startup = _client(clusters, workers)
            payload = {**net.params, "x": x, "t": t}
            benchmark.extra_info.update(cluster_start_s=round(startup, 3),
                                        scatter_s=round(_scatter_seconds(client, payload), 4))
            run = lambda: fd.numerical_gradient(net, x, t, client=client)  # noqa: E731
        slow = benchmark.disabled or backend_name == "numpy"
        result = benchmark.pedantic(run, rounds=1 if slow else 3, iterations=1,
                                    warmup_rounds=0 if slow else 1)
    assert set(result) == set(net.params)
    if workers and benchmark.disabled:
        local = net.numerical_gradient(x, t)
        for k in local:
            assert np.array_equal(result[k], local[k]), k


@pytest.mark.parametrize("workers", WORKERS, ids=lambda n: f"workers{n}")
def test_search(benchmark: Any, clusters: dict[int, Any], workers: int) -> None:
    if benchmark.disabled and workers != 1:
        pytest.skip("one worker count is enough for the correctness pass")
    n = 200 if benchmark.disabled else 5000
    x, t, data = _batch(n)
    trials = 4 if benchmark.disabled else 32
    hidden = (16,) if benchmark.disabled else (100, 100)
    space = tune.SearchSpace(lr=(1e-3, 1e-1), hidden_sizes=(hidden,))
    client, startup = _client(clusters, workers)
    benchmark.group = "distributed-search"
    benchmark.name = f"workers={workers}"
    benchmark.extra_info.update(group=benchmark.group, name=benchmark.name, trials=trials, epochs=1,
                                samples=n, data=data, workers=workers, backend=fastnet.get_backend().name,
                                cluster_start_s=round(startup, 3),
                                scatter_s=round(_scatter_seconds(client, {"x": x, "t": t}), 4))

    def run() -> list[Any]:
        return tune.random_search(x, t, trials=trials, epochs=1, space=space, seed=0, client=client,
                                  progress=False)

    result = benchmark.pedantic(run, rounds=1 if benchmark.disabled else 2, iterations=1)
    assert len(result) == trials
