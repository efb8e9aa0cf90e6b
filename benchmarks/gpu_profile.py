"""Where a fused GPU step spends its time: host overhead, graph replay, each kernel.

Run on a GPU machine: ``python -m benchmarks.gpu_profile [rows] [dtype]``.
Prints per-step times for ``net.train_step`` (host + device, throughput),
graph replays alone, each captured kernel launched alone, a few primitive
CuPy host costs, and a cProfile of the Python side of ``train_step``.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from typing import Any

import numpy as np

import fastnet
from fastnet.optimizers import SGD


def per_call(fn: Any, sync: Any, n: int = 2000, repeat: int = 5) -> float:
    """Median over `repeat` of (time for n calls, one sync at the end) / n, in µs."""
    fn()
    sync()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        out.append((time.perf_counter() - t0) / n * 1e6)
    return float(np.median(out))


def main(rows: int = 100, dtype: str = "float32") -> None:
    import cupy

    bk = fastnet.set_backend("cupy")
    sync = bk.synchronize
    rng = np.random.default_rng(0)
    net = fastnet.TwoLayerNet(784, 50, 10, seed=0, dtype=np.dtype(dtype), backend=bk)
    x = bk.asarray(rng.random((rows, 784)).astype(dtype))
    t = bk.asarray(rng.integers(0, 10, rows))
    opt = SGD(0.1)
    X = bk.asarray(rng.random((60000, 784)).astype(dtype))
    T = bk.asarray(rng.integers(0, 10, 60000))
    idx = bk.batch_indices(60000, rows, np.random.default_rng(0))
    print(f"TwoLayerNet 784-50-10, B={rows}, {dtype}")
    print(f"net.train_step            {per_call(lambda: net.train_step(x, t, opt), sync):8.1f} µs/step")
    if idx is not None:
        net.train_batches(X, T, idx, opt)
        print(f"net.train_batches epoch   {per_call(lambda: net.train_batches(X, T, idx, opt), sync, n=3):8.1f} µs/epoch"
              f" ({60000 // rows} steps)")
    eng = bk.engine
    spec = net.spec()
    print(f"engine.train_step         {per_call(lambda: eng.train_step(spec, x, t, opt), sync):8.1f} µs/step")
    plan = next(p for k, p in eng.plans.items() if k[0].stage == "train")
    print("plan:", type(plan).__name__, "launches:", len(plan.ops), plan.names, "bound graphs:", len(plan.bound))
    graphs = [g for g in plan.bound.values() if g is not None] or [plan.graph]
    if graphs[0] is not None:
        g = graphs[0]
        print(f"graph.launch() only       {per_call(g.launch, sync):8.1f} µs/step")
        t0 = time.perf_counter()
        for _ in range(2000):
            g.launch()
        host = (time.perf_counter() - t0) / 2000 * 1e6
        sync()
        print(f"graph.launch() host side  {host:8.1f} µs/call")
    for name, op in zip(plan.names, plan.ops):
        print(f"  op {name:14s} eager    {per_call(op, sync, n=500):8.1f} µs")
    # the two-kernel step in each variant: graph replays of one step, and a whole epoch
    from fastnet.backend.cupy.device import CupyDevice
    from fastnet.backend.cupy.engine import FusedEngine

    old = 8 if rows < 1000 else 16  # kernel B's split before the one-wave rule
    variants = [  # threads, rows per block, prefetch, compact, split
        (1024, None, True, True, 0), (1024, None, False, True, 0), (1024, None, True, False, 0),
        (1024, None, False, False, 0), (1024, None, False, False, old), (512, None, True, True, 0),
        (1024, None, True, True, 2), (1024, None, True, True, 8), (1024, None, True, True, 16),
    ]
    for threads, per, prefetch, compact, split in variants:
        label = (f"threads {threads:4d}, rows/block {per or 'rule'}, prefetch {int(prefetch)},"
                 f" compact {int(compact)}, split {split or 'rule'}")
        e2 = FusedEngine(CupyDevice(), strict=True)
        e2.rows_threads, e2.rows_per_block = threads, per
        e2.rows_prefetch, e2.rows_compact, e2.rows_split = prefetch, compact, split
        n2 = fastnet.TwoLayerNet(784, 50, 10, seed=0, dtype=np.dtype(dtype), backend=bk)
        try:
            for _ in range(3):
                e2.train_step(n2.spec(), x, t, opt)
            p2 = next(iter(e2.plans.values()))
            g2 = next(g for g in p2.bound.values() if g is not None)
            step = per_call(g2.launch, sync)
            e2.train_batches(n2.spec(), X, T, idx, opt)
            epoch = per_call(lambda: e2.train_batches(n2.spec(), X, T, idx, opt), sync, n=3)
            t0 = time.perf_counter()
            e2.train_batches(n2.spec(), X, T, idx, opt)
            host = (time.perf_counter() - t0) * 1e6
            sync()
            print(f"{label}: R={p2.shape.per_block} Q0={p2.shape.first_in_registers()}"
                  f" staged={p2.shape.staged_weights()} B-split={p2.shape.b_split}:"
                  f" step replay {step:6.1f} µs, epoch {epoch / 1000:6.2f} ms (host {host:6.0f} µs)")
        except Exception as exc:
            print(f"{label}: {exc!r}")
    # primitive host costs
    a = cupy.zeros(100 * 784, np.float32)
    b = cupy.zeros(100 * 784, np.float32)
    rt = cupy.cuda.runtime
    s = cupy.cuda.get_current_stream()
    print(f"memcpyAsync d2d 313KB     {per_call(lambda: rt.memcpyAsync(a.data.ptr, b.data.ptr, a.nbytes, rt.memcpyDeviceToDevice, s.ptr), sync):8.1f} µs")
    print(f"get_current_stream()      {per_call(cupy.cuda.get_current_stream, sync):8.1f} µs")
    ring = cupy.zeros(1000, np.float32)
    print(f"ring[i] (0-d view)        {per_call(lambda: ring[5], sync):8.1f} µs")
    print(f"net.spec()                {per_call(net.spec, sync):8.1f} µs")
    print(f"net._xt(x, t)             {per_call(lambda: net._xt(x, t), sync):8.1f} µs")
    # cProfile of the host side
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(3000):
        net.train_step(x, t, opt)
    pr.disable()
    sync()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(30)
    print(buf.getvalue())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100, sys.argv[2] if len(sys.argv) > 2 else "float32")
