"""GPU suite: the fused CuPy path, the book's algorithm on CuPy, and PyTorch CUDA.

Every case synchronises the device at the end of each timed call. Step cases
time CHUNK steps per call (one sync per chunk: throughput, as the issue's
figures are) and record ``scale = 1/CHUNK`` so reports show one step.

Groups and names:

* ``gpu-step-B<rows>-<dtype>`` (B100 and B1000 float32, B100 float64),
  TwoLayerNet 784-50-10 ReLU, SGD:
  ``cupy`` (``net.train_step``: fused kernels replayed as a CUDA graph),
  ``cupy-eager`` (the same kernels launched one by one), ``cupy-bookstyle``
  (``grads = net.gradient(x, t)`` then ``params[k] -= lr * grads[k]``),
  ``cupy-book`` (the book's algorithm on CuPy arrays: the inherited code),
  ``torch-cuda-autograd``, ``torch-cuda-manual``, ``torch-cuda-graph`` (the
  manual step captured with ``torch.cuda.graph``, PyTorch's fastest form here);
* ``gpu-epoch-600x100-float32``: one epoch, data on the device:
  ``cupy`` (``net.train_batches``) and ``torch-cuda-graph`` (index_select
  into static inputs, then a graph replay, per step);
* ``gpu-numgrad-B100-float64``: the whole net's numerical gradient:
  ``cupy`` (batched exact kernel) and ``cupy-book-loop`` (the book's loop on
  CuPy, timed on SUBSET parameters and scaled to all 39,760);
* ``gpu-crossover-<sizes>-B1000-float32``: a step of a small and a large net
  with the two-kernel row step forced (``cupy-rows``), the tiled kernels
  forced (``cupy-tiled``, graph), cuBLAS forced (``cupy-blas``, eager), the
  size rule (``cupy-auto``) and ``cupy-book``.

The conv nets' GPU cases are in ``bench_gpu_conv.py``.

Skipped with a reason when CuPy has no usable GPU (and PyTorch cases when
PyTorch has no CUDA).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import fastnet
from fastnet.optimizers import SGD, Adam

from .bench_step import after_one_book_step
from .peers import TorchStep, torch_reason
from .workloads import (
    LR,
    SUBSET,
    dense_batch,
    loop_subset,
    max_abs_diff,
    measure,
    pick_parameters,
    start_params,
)

CHUNK = 50  # steps per timed call
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-6}  # |params - book's|, params ~1e-2
STEP_CASES = [(100, np.float32), (1000, np.float32), (100, np.float64)]
CROSSOVER_NETS = [(784, 50, 10), (784, 1000, 1000, 10)]


def _gpu_reason() -> str | None:
    status = fastnet.available_backends()["cupy"]
    return None if status.available else f"no usable GPU for CuPy: {status.reason}"


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))]

steps = pytest.mark.parametrize(
    "rows,dtype", STEP_CASES, ids=[f"B{r}-{np.dtype(d).name}" for r, d in STEP_CASES]
)


@pytest.fixture
def gpu() -> Any:
    with fastnet.use_backend("cupy") as bk:
        yield bk


def book_backend() -> Any:
    """A CuPy backend running the inherited (book's) algorithm, not the fused kernels."""
    from fastnet.backend.cupy import CupyBackend

    bk = CupyBackend()
    bk.fused = False
    return bk


def gpu_info(suite: str, case: str, impl: str, **extra: Any) -> dict[str, Any]:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return {"suite": suite, "case": case, "impl": impl, "device": name,
            "cupy": cupy.__version__, **extra}


def chunk(step: Any, steps: int = CHUNK) -> Any:
    """`step` run `steps` times per call."""

    def run() -> Any:
        for _ in range(steps):
            out = step()
        return out

    return run


def _check_one_step(params: dict[str, Any], rows: int, dtype: Any, impl: str) -> float:
    diff = max_abs_diff(params, after_one_book_step(rows, dtype))
    assert diff <= TOLERANCE[np.dtype(dtype)], f"{impl}: one step differs from the book's by {diff:.3g}"
    return diff


# ------------------------------------------------------------------ one step
@pytest.mark.parametrize("impl", ["cupy", "cupy-eager", "cupy-bookstyle", "cupy-book"])
@steps
def test_gpu_step(benchmark: Any, gpu: Any, rows: int, dtype: Any, impl: str) -> None:
    bk = book_backend() if impl == "cupy-book" else gpu
    net = fastnet.TwoLayerNet(784, 50, 10, seed=0, dtype=dtype, backend=bk)
    x_host, t_host = dense_batch(rows, dtype)
    x, t = bk.asarray(x_host), bk.asarray(t_host)
    optimizer = SGD(LR)
    if impl == "cupy-eager":
        from fastnet.backend.cupy.device import CupyDevice
        from fastnet.backend.cupy.engine import FusedEngine

        engine = FusedEngine(CupyDevice(), use_graphs=False, strict=True)

        def step() -> Any:
            return engine.train_step(net.spec(), x, t, optimizer)
    elif impl == "cupy-bookstyle":

        def step() -> Any:
            grads = net.gradient(x, t)
            for key in net.params:
                net.params[key] -= LR * grads[key]
    else:

        def step() -> Any:
            return net.train_step(x, t, optimizer)

    step()
    bk.synchronize()
    diff = _check_one_step(net.params, rows, dtype, impl)
    info = gpu_info("gpu-step", f"B{rows}-{np.dtype(dtype).name}", impl, batch=rows,
                 dtype=np.dtype(dtype).name, steps_per_call=CHUNK, scale=1 / CHUNK,
                 max_abs_diff_vs_book=diff)
    measure(benchmark, chunk(step), group=f"gpu-step-B{rows}-{np.dtype(dtype).name}", name=impl,
            info=info, sync=bk.synchronize)


class TorchGraphStep:
    """The manual step captured once with ``torch.cuda.graph`` and replayed."""

    def __init__(self, params: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray) -> None:
        self.inner = TorchStep(params, x, t, device="cuda", autograd=False)
        torch = self.torch = self.inner.torch
        start = {k: v.clone() for k, v in self.inner.p.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up on a side stream, as PyTorch asks before capture
                self.inner()
        torch.cuda.current_stream().wait_stream(side)
        for k, v in self.inner.p.items():
            v.copy_(start[k])  # undo the warm-up steps
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self.inner()

    def __call__(self) -> Any:
        self.graph.replay()
        return self.loss

    def sync(self) -> None:
        self.torch.cuda.synchronize()

    def params(self) -> dict[str, np.ndarray]:
        return self.inner.params()


@pytest.mark.parametrize("impl", ["torch-cuda-autograd", "torch-cuda-manual", "torch-cuda-graph"])
@steps
def test_gpu_step_torch(benchmark: Any, rows: int, dtype: Any, impl: str) -> None:
    reason = torch_reason("cuda")
    if reason:
        pytest.skip(reason)
    import torch

    x, t = dense_batch(rows, dtype)
    if impl == "torch-cuda-graph":
        step: Any = TorchGraphStep(start_params(dtype), x, t)
    else:
        step = TorchStep(start_params(dtype), x, t, device="cuda", autograd=impl.endswith("autograd"))
    step()
    step.sync()
    diff = max_abs_diff(step.params(), after_one_book_step(rows, dtype))
    assert diff <= 1e-6, f"{impl} step differs from the book's by {diff:.3g}"  # no +1e-7 in autograd's loss
    info = gpu_info("gpu-step", f"B{rows}-{np.dtype(dtype).name}", impl, batch=rows,
                 dtype=np.dtype(dtype).name, steps_per_call=CHUNK, scale=1 / CHUNK,
                 peer="torch", peer_version=torch.__version__, max_abs_diff_vs_book=diff)
    measure(benchmark, chunk(step), group=f"gpu-step-B{rows}-{np.dtype(dtype).name}", name=impl,
            info=info, sync=step.sync)


# ------------------------------------------------------------------ one epoch
def _epoch_data(rows: int = 60000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((rows, 784), dtype=np.float32)
    labels = rng.integers(0, 10, rows)
    batches = rng.permutation(rows).reshape(-1, 100)
    return x, labels, batches


def test_gpu_epoch(benchmark: Any, gpu: Any) -> None:
    x_host, labels, batch_host = _epoch_data()
    net = fastnet.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float32, backend=gpu)
    x, t = gpu.asarray(x_host), gpu.asarray(labels)
    batches = gpu.asarray(batch_host)
    optimizer = SGD(LR)

    def epoch() -> Any:
        return net.train_batches(x, t, batches, optimizer)

    losses = epoch()
    gpu.synchronize()
    assert losses.shape == (batch_host.shape[0],) and np.isfinite(float(losses[-1]))
    info = gpu_info("gpu-epoch", "600x100-float32", "cupy", steps=batch_host.shape[0],
                 data="random, on the device; batches indexed on the device")
    measure(benchmark, epoch, group="gpu-epoch-600x100-float32", name="cupy", info=info,
            sync=gpu.synchronize)


def test_gpu_epoch_torch(benchmark: Any) -> None:
    reason = torch_reason("cuda")
    if reason:
        pytest.skip(reason)
    import torch

    x_host, labels, batch_host = _epoch_data()
    onehot = np.eye(10, dtype=np.float32)[labels]
    step = TorchGraphStep(start_params(np.float32), x_host[:100], onehot[:100])
    X = torch.tensor(x_host, device="cuda")
    T = torch.tensor(onehot, device="cuda")
    L = torch.tensor(labels, device="cuda")
    idx = torch.tensor(batch_host, device="cuda")
    inner = step.inner

    def epoch() -> Any:
        for i in range(idx.shape[0]):
            torch.index_select(X, 0, idx[i], out=inner.x)
            torch.index_select(T, 0, idx[i], out=inner.t)
            torch.index_select(L, 0, idx[i], out=inner.labels)
            step.graph.replay()
        return step.loss

    epoch()
    step.sync()
    info = gpu_info("gpu-epoch", "600x100-float32", "torch-cuda-graph", steps=batch_host.shape[0],
                 peer="torch", peer_version=torch.__version__)
    measure(benchmark, epoch, group="gpu-epoch-600x100-float32", name="torch-cuda-graph", info=info,
            sync=step.sync)


# ------------------------------------------------------------------ numerical gradient
@pytest.mark.parametrize("impl", ["cupy", "cupy-book-loop"])
def test_gpu_numgrad(benchmark: Any, gpu: Any, impl: str) -> None:
    bk = book_backend() if impl == "cupy-book-loop" else gpu
    net = fastnet.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float64, backend=bk)
    x_host, t_host = dense_batch(100, np.float64)
    x, t = bk.asarray(x_host), bk.asarray(t_host)
    total = sum(int(p.size) for p in net.params.values())
    info = gpu_info("gpu-numgrad", "B100-float64", impl, params=total, precision="float64")
    if impl == "cupy":
        grads = measure(benchmark, lambda: net.numerical_gradient(x, t), group="gpu-numgrad-B100-float64",
                        name=impl, info=info, sync=bk.synchronize, rounds=20)
        backprop = net.gradient(x, t)
        diff = max(float(abs(grads[k] - backprop[k]).max()) for k in grads)
        assert diff < 1e-6, f"numerical vs backprop gradient differ by {diff:.3g}"  # the book's +1e-7
        return
    picks = pick_parameters(net.params, SUBSET)
    info.update(scale=total / len(picks), params_timed=len(picks))
    measure(benchmark, lambda: loop_subset(lambda: net.loss(x, t), net.params, picks, bk.xp),
            group="gpu-numgrad-B100-float64", name=impl, info=info, sync=bk.synchronize, rounds=3)


# ------------------------------------------------------------------ size crossover
@pytest.mark.parametrize("impl", ["cupy-rows", "cupy-tiled", "cupy-blas", "cupy-auto", "cupy-book"])
@pytest.mark.parametrize("sizes", CROSSOVER_NETS, ids=["-".join(map(str, s)) for s in CROSSOVER_NETS])
def test_gpu_crossover(benchmark: Any, gpu: Any, sizes: tuple[int, ...], impl: str) -> None:
    from fastnet.backend.cupy.device import CupyDevice
    from fastnet.backend.cupy.engine import FusedEngine

    rows = 1000
    bk = book_backend() if impl == "cupy-book" else gpu
    net = fastnet.MultiLayerNet(sizes[0], list(sizes[1:-1]), sizes[-1], seed=0, dtype=np.float32, backend=bk)
    rng = np.random.default_rng(0)
    x = bk.asarray(rng.random((rows, sizes[0]), dtype=np.float32))
    t = bk.asarray(rng.integers(0, sizes[-1], rows))
    optimizer = SGD(LR)
    if impl in ("cupy-rows", "cupy-tiled", "cupy-blas"):
        forced = {  # each layout alone, whatever the size rule would pick
            "cupy-rows": dict(blas_min_flops=float("inf"), rows_max_traffic=float("inf")),
            "cupy-tiled": dict(blas_min_flops=float("inf"), rows_max_traffic=0.0),
            "cupy-blas": dict(blas_min_flops=0.0),
        }[impl]
        engine = FusedEngine(CupyDevice(), strict=True, **forced)

        def step() -> Any:
            return engine.train_step(net.spec(), x, t, optimizer)
    else:

        def step() -> Any:
            return net.train_step(x, t, optimizer)

    assert np.isfinite(float(step()))
    name = "-".join(map(str, sizes))
    info = gpu_info("gpu-crossover", f"{name}-B{rows}-float32", impl, batch=rows, dtype="float32",
                 steps_per_call=CHUNK, scale=1 / CHUNK,
                 blas_min_flops=gpu.engine.blas_min_flops)
    measure(benchmark, chunk(step), group=f"gpu-crossover-{name}-B{rows}-float32", name=impl, info=info,
            sync=bk.synchronize)


# ------------------------------------------------------------------ split-K
SPLIT_NET = (784, 100, 100, 100, 100, 100, 10)  # the book's ch.6 MultiLayerNet


@pytest.mark.parametrize("impl", ["cupy-tiled", "cupy-tiled-unsplit"])
def test_gpu_split_k(benchmark: Any, gpu: Any, impl: str) -> None:
    """The tiled layout with and without split-K (launch.choose_split) on the book's ch.6 net, B=100.

    "unsplit" gives the launch policy a device with no multiprocessors to
    fill, so it never splits K; everything else is the same plan.
    """
    from fastnet.backend.cupy.device import CupyDevice
    from fastnet.backend.cupy.engine import FusedEngine
    from fastnet.backend.cupy.launch import Hardware

    rows, dtype = 100, np.float32
    device = CupyDevice()
    hw = device.hardware() if impl == "cupy-tiled" else Hardware(sms=0, threads_per_sm=device.hardware().threads_per_sm)
    engine = FusedEngine(device, hardware=hw, strict=True, blas_min_flops=float("inf"), rows_max_traffic=0.0)
    net = fastnet.MultiLayerNet(SPLIT_NET[0], list(SPLIT_NET[1:-1]), SPLIT_NET[-1], seed=0, dtype=dtype, backend=gpu)
    rng = np.random.default_rng(0)
    x = gpu.asarray(rng.random((rows, SPLIT_NET[0]), dtype=dtype))
    t = gpu.asarray(rng.integers(0, SPLIT_NET[-1], rows))
    optimizer = SGD(LR)

    def step() -> Any:
        return engine.train_step(net.spec(), x, t, optimizer)

    assert np.isfinite(float(step()))
    name = "-".join(map(str, SPLIT_NET))
    info = gpu_info("gpu-split-k", f"{name}-B{rows}-float32", impl, batch=rows, dtype="float32",
                 steps_per_call=CHUNK, scale=1 / CHUNK)
    measure(benchmark, chunk(step), group=f"gpu-split-k-{name}-B{rows}-float32", name=impl, info=info,
            sync=gpu.synchronize)
