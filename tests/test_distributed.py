"""Scale-out on dask.distributed: sharded numerical gradients, real clusters, faults."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnet

distributed = pytest.importorskip("distributed", reason="needs the 'distributed' extra")
from fastnet import distributed as fd  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=fd.WORKER_ENV
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _problem(seed=0, n_in=40, hidden=12, n_out=10, batch=20, activation="relu"):
    rng = np.random.default_rng(seed)
    net = fastnet.TwoLayerNet(n_in, hidden, n_out, weight_init_std=0.5, seed=seed, dtype=np.float64,
                              activation=activation)
    x = net.backend.asarray(rng.random((batch, n_in)))
    t = net.backend.asarray(rng.integers(0, n_out, batch))
    return net, x, t


def test_shard_ranges_cover_every_index_once():
    sizes = {"W1": 10, "b1": 3, "W2": 7}
    pieces = fd.shard_ranges(sizes, 4)
    for name, size in sizes.items():
        covered = [i for n, a, b in pieces if n == name for i in range(a, b)]
        assert covered == list(range(size))
    with pytest.raises(ValueError, match="chunks"):
        fd.shard_ranges(sizes, 0)


@pytest.mark.parametrize("chunks", [1, 3, 17, 200])
def test_sharded_gradient_is_bitwise_local(cpu_backend, local_client, chunks):
    net, x, t = _problem()
    local = net.numerical_gradient(x, t)
    remote = fd.numerical_gradient(net, x, t, client=local_client, chunks=chunks)
    assert set(remote) == set(local)
    for key in local:
        assert np.array_equal(fastnet.to_numpy(remote[key]), fastnet.to_numpy(local[key])), key


def test_sharded_gradient_with_weight_decay_and_sigmoid(local_client):
    net, x, t = _problem(seed=4, activation="sigmoid")
    net.weight_decay_lambda = 0.1
    local = net.numerical_gradient(x, t)
    remote = fd.numerical_gradient(net, x, t, client=local_client, chunks=5)
    for key in local:
        assert np.array_equal(remote[key], local[key]), key


def test_params_unchanged_after_remote_run(local_client):
    net, x, t = _problem(seed=2)
    before = {k: v.copy() for k, v in net.params.items()}
    fd.numerical_gradient(net, x, t, client=local_client, chunks=3)
    for k in before:
        assert np.array_equal(net.params[k], before[k])


def test_bad_input_checked_before_anything_is_sent(local_client):
    net, x, t = _problem()
    with pytest.raises(ValueError, match="x must have shape"):
        fd.numerical_gradient(net, x[:, :5], t, client=local_client)


def test_unreachable_scheduler_fails_fast():
    port = _free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(fd.SchedulerUnreachableError, match=f"127.0.0.1:{port}"):
        fd.client(f"tcp://127.0.0.1:{port}", timeout=2)
    assert time.monotonic() - start < 30


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"fastnet\[distributed\]"):
        fd.client()


class _Cluster:
    """A real `dask scheduler` and workers as separate processes on loopback."""

    def __init__(self, n_workers: int) -> None:
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        env = {**os.environ, **fd.WORKER_ENV}
        bindir = os.path.dirname(sys.executable)
        dask = os.path.join(bindir, "dask")
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        self.scheduler = subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"], **quiet
        )
        self.workers = [
            subprocess.Popen(
                [dask, "worker", self.address, "--nthreads", "1", "--nworkers", "1",
                 "--no-dashboard", "--no-nanny", "--host", "127.0.0.1"],
                **quiet,
            )
            for _ in range(n_workers)
        ]

    def close(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def real_cluster():
    cluster = _Cluster(2)
    try:
        client = fd.client(cluster.address, timeout=30)
        client.wait_for_workers(2, timeout=60)
        yield cluster, client
        client.close()
    finally:
        cluster.close()


def test_killed_worker_loses_nothing(real_cluster, monkeypatch):
    cluster, client = real_cluster
    net, x, t = _problem(seed=7, n_in=200, hidden=30, batch=50)
    local = net.numerical_gradient(x, t)

    pids = client.run(os.getpid)  # worker address -> process id
    real_progress = fd._maybe_progress
    killed: list[int] = []

    def kill_after_first(items, total, enabled):
        for i, item in enumerate(real_progress(items, total, enabled)):
            if i == 0:
                busy = {w: keys for w, keys in client.processing().items() if keys}
                victim = next(iter(busy))  # a worker that is running shards right now
                os.kill(pids[victim], signal.SIGKILL)
                killed.append(len(busy[victim]))
            yield item

    monkeypatch.setattr(fd, "_maybe_progress", kill_after_first)
    remote = fd.numerical_gradient(net, x, t, client=client, chunks=40)
    assert killed and killed[0] >= 1  # it died holding work
    assert sum(p.poll() is not None for p in cluster.workers) == 1
    for key in local:
        assert np.array_equal(remote[key], local[key]), key
