"""Where a fused GPU step spends its time: host overhead, graph replay, each kernel.

Run on a GPU machine: ``python -m benchmarks.gpu_profile [rows] [dtype]``.
Prints per-step times for ``net.train_step`` (host + device, throughput),
graph replays alone, each kernel launched alone, the two-kernel step's
shape, a few primitive CuPy host costs, and a cProfile of the Python side
of ``train_step``.
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
    plan = next(p for layout, p in eng.plans.items() if layout.stage == "train" and not layout.gather)
    binding = next(b for b in plan.bindings.values() if b.graph is not None)
    print("plan:", type(plan).__name__, "launches:", plan.names, "bindings:", len(plan.bindings))
    if getattr(plan, "shape", None) is not None:
        shape = plan.shape
        print(f"rows per block {shape.per_block}, rows_b threads per parameter {shape.b_split}")
    g = binding.graph
    print(f"graph.launch() only       {per_call(g.launch, sync):8.1f} µs/step")
    t0 = time.perf_counter()
    for _ in range(2000):
        g.launch()
    host = (time.perf_counter() - t0) / 2000 * 1e6
    sync()
    print(f"graph.launch() host side  {host:8.1f} µs/call")
    for name, op in zip(plan.names, binding.ops):
        if op[0] is not None:
            print(f"  op {name:14s} eager    {per_call(lambda: bk.engine.device.launch(*op), sync, n=500):8.1f} µs")
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
