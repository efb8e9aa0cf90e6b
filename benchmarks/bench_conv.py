"""Steps of the book's conv nets (SimpleConvNet, DeepConvNet), per backend, with PyTorch beside them.

Groups ``conv-<net>-B100-<dtype>``; names:

* ``numpy``: ``net.train_step(x, t, Adam())`` on the NumPy backend, the
  book's im2col algorithm (the reference);
* ``numba``: the same call on the Numba backend;
* ``torch``: the same net in PyTorch on the CPU (autograd, ``torch.optim.Adam``),
  when PyTorch is importable (skipped otherwise).

``test_conv_rounds`` runs all three in turn within every round and takes the
ratios round by round (a busy or drifting machine then affects both sides of
a ratio alike); its medians and ratios are in ``extra_info``. On a small
machine that other work keeps busy, threaded BLAS and thread pools wait on
descheduled threads; pinning every library to one thread
(``OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1``) compares
the work itself. Started as ``OPENBLAS_THREAD_TIMEOUT=4 OMP_WAIT_POLICY=passive
pytest ...``, idle threads sleep at once and the numba kernels use every core
beside threaded BLAS (``fastnet.backend.loops.idle_threads_sleep``); PyTorch's
own thread pool is slower in that setting, so take its figures from a default run.
``test_conv_numgrad`` times the book's numerical-gradient loop of
SimpleConvNet at B=10 on a sample of entries of every parameter array and
scales each to the array's size (``extra_info["scale"]`` and
``extra_info["estimated_s"]``): every entry costs the same two forward passes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import fastnet
from fastnet import DeepConvNet, SimpleConvNet
from fastnet.backend.loops import numerical_gradient_loop
from fastnet.optimizers import Adam

from .peers import torch_reason
from .workloads import QUICK, measure

BATCH = 100
NETS = {"simple": SimpleConvNet, "deep": DeepConvNet}
DTYPES = (np.float64, np.float32)
nets = pytest.mark.parametrize("net_name", list(NETS))
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=[np.dtype(d).name for d in DTYPES])


def images(batch: int, dtype: Any, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-like inputs: values in [0, 1), labels 0..9 (timing does not depend on the data)."""
    rng = np.random.default_rng(seed)
    return rng.random((batch, 1, 28, 28)).astype(dtype), rng.integers(0, 10, batch)


def group(net_name: str, dtype: Any) -> str:
    return f"conv-{net_name}-B{BATCH}-{np.dtype(dtype).name}"


class TorchConvStep:
    """The same net and Adam step in PyTorch (on `device`), from the same starting parameters."""

    def __init__(self, net: Any, x: np.ndarray, t: np.ndarray, device: str = "cpu", capturable: bool = False) -> None:
        import torch

        self.torch = torch
        self.deep = isinstance(net, DeepConvNet)
        self.p = {k: torch.tensor(net.backend.to_numpy(v), device=device, requires_grad=True)
                  for k, v in net.params.items()}
        self.convs = [(lay.stride, lay.pad) for name, lay in net.layers.items() if name.startswith("Conv")]
        self.x, self.t = torch.tensor(x, device=device), torch.tensor(t, device=device)
        # capturable: Adam keeps its step count on the device, as torch.cuda.graph needs
        self.optimizer = torch.optim.Adam(list(self.p.values()), lr=0.001, capturable=capturable)

    def loss(self) -> Any:
        F, p = self.torch.nn.functional, self.p
        h = self.x
        for i, (stride, pad) in enumerate(self.convs, start=1):
            h = F.relu(F.conv2d(h, p[f"W{i}"], p[f"b{i}"], stride=stride, padding=pad))
            if not self.deep or i % 2 == 0:
                h = F.max_pool2d(h, 2, 2)
        n = len(self.convs)
        h = F.relu(h.flatten(1) @ p[f"W{n + 1}"] + p[f"b{n + 1}"])
        if self.deep:
            h = F.dropout(h, 0.5)
        h = h @ p[f"W{n + 2}"] + p[f"b{n + 2}"]
        if self.deep:
            h = F.dropout(h, 0.5)
        return F.cross_entropy(h, self.t)

    def __call__(self) -> Any:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def info(net_name: str, dtype: Any, impl: str) -> dict[str, Any]:
    return {"suite": "conv-step", "case": f"{net_name}-B{BATCH}-{np.dtype(dtype).name}", "impl": impl,
            "batch": BATCH, "dtype": np.dtype(dtype).name, "net": NETS[net_name].__name__,
            "optimizer": "Adam(lr=0.001)"}


def first_step_agrees(net_name: str, dtype: Any, net: Any, optimizer: Any, x: Any, t: Any) -> None:
    """One step from the same start as the NumPy backend's must land on the same bits."""
    ref = NETS[net_name](seed=0, dtype=dtype, backend="numpy")
    ref.train_step(x, t, Adam())
    net.train_step(x, t, optimizer)
    for k in ref.params:
        assert np.array_equal(net.backend.to_numpy(net.params[k]), ref.params[k]), f"{k} differs from numpy"


@nets
@dtypes
def test_conv_step(benchmark: Any, backend: Any, net_name: str, dtype: Any) -> None:
    x, t = images(BATCH, dtype)
    net = NETS[net_name](seed=0, dtype=dtype, backend=backend)
    optimizer = Adam()
    xb, tb = backend.asarray(x), backend.asarray(t)
    if backend.name == "numba":
        first_step_agrees(net_name, dtype, net, optimizer, x, t)
    else:
        net.train_step(xb, tb, optimizer)
    measure(benchmark, lambda: net.train_step(xb, tb, optimizer), group=group(net_name, dtype),
            name=backend.name, info=info(net_name, dtype, backend.name), sync=backend.synchronize,
            rounds=3 if net_name == "deep" else None)


@nets
@dtypes
def test_conv_step_torch(benchmark: Any, net_name: str, dtype: Any) -> None:
    reason = torch_reason("cpu")
    if reason:
        pytest.skip(reason)
    x, t = images(BATCH, dtype)
    net = NETS[net_name](seed=0, dtype=dtype, backend="numpy")
    step = TorchConvStep(net, x, t)
    if net_name == "simple":  # no dropout: the first loss is the book's (PyTorch has no +1e-7 in the log)
        assert abs(float(step.loss()) - float(net.loss(x, t))) < 1e-5
    step()
    measure(benchmark, step, group=group(net_name, dtype), name="torch", info=info(net_name, dtype, "torch"),
            rounds=3 if net_name == "deep" else None)


def fastnet_step(net: Any, x: np.ndarray, t: np.ndarray) -> Any:
    optimizer = Adam()
    return lambda: net.train_step(x, t, optimizer)


ROUNDS = {"simple": 3 if QUICK else 10, "deep": 2 if QUICK else 5}
REPEATS = {"simple": 3, "deep": 1}


@nets
@dtypes
def test_conv_rounds(benchmark: Any, net_name: str, dtype: Any) -> None:
    """numpy, numba and (when importable) torch steps in turn within every round; ratios per round."""
    status = fastnet.available_backends()["numba"]
    if not status.available:
        pytest.skip(f"backend 'numba' unavailable: {status.reason}")
    x, t = images(BATCH, dtype)
    kinds: dict[str, Any] = {name: fastnet_step(NETS[net_name](seed=0, dtype=dtype, backend=name), x, t)
                             for name in ("numpy", "numba")}
    if torch_reason("cpu") is None:
        kinds["torch"] = TorchConvStep(NETS[net_name](seed=0, dtype=dtype, backend="numpy"), x, t)
    times: dict[str, list[float]] = {name: [] for name in kinds}
    repeats = REPEATS[net_name]

    def one_round() -> None:
        for name, fn in kinds.items():
            fn()  # the first call after another kind's work pays for cold caches
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            times[name].append((time.perf_counter() - start) / repeats)

    details = info(net_name, dtype, "rounds")
    details["what"] = f"{repeats} step(s) each of {', '.join(kinds)} per round, in turn"
    measure(benchmark, one_round, group=f"{group(net_name, dtype)}-rounds", name="rounds", info=details,
            rounds=ROUNDS[net_name])
    per = {name: np.array(v) for name, v in times.items()}
    benchmark.extra_info["medians_ms"] = {name: round(float(np.median(v)) * 1e3, 2) for name, v in per.items()}
    ratios = {"numpy/numba": float(np.median(per["numpy"] / per["numba"]))}
    if "torch" in per:
        ratios["torch/numba"] = float(np.median(per["torch"] / per["numba"]))
    benchmark.extra_info["ratios"] = {k: round(v, 3) for k, v in ratios.items()}


SAMPLE = 4 if QUICK else 16  # entries timed per parameter array


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_conv_numgrad(benchmark: Any, backend_name: str) -> None:
    """The book's loop over SimpleConvNet's 433,890 parameters at B=10, from a timed sample."""
    status = fastnet.available_backends()[backend_name]
    if not status.available:
        pytest.skip(f"backend {backend_name!r} unavailable: {status.reason}")
    x, t = images(10, np.float64, seed=1)
    net = SimpleConvNet(seed=0, backend=backend_name)
    net.loss(x, t)  # compile / warm up

    def f(_: Any) -> Any:
        return net.loss(x, t)

    flats = {k: p.reshape(-1) for k, p in net.params.items()}
    got: dict[str, np.ndarray] = {}

    def sample() -> None:
        for k, flat in flats.items():
            got[k] = numerical_gradient_loop(f, flat[:SAMPLE], 1e-4)

    details = {"suite": "conv-numgrad", "case": "SimpleConvNet-B10-float64", "impl": f"{backend_name}-book-loop",
               "batch": 10, "params_total": int(sum(p.size for p in net.params.values())),
               "params_timed": SAMPLE * len(flats)}
    start = time.perf_counter()
    measure(benchmark, sample, group="conv-numgrad-simple-B10", name=f"{backend_name}-book-loop",
            info=details, rounds=1 if QUICK else 2)
    elapsed = time.perf_counter() - start
    per_entry = elapsed / (SAMPLE * len(flats) * (1 if benchmark.disabled else (1 if QUICK else 2) + 1))
    details["scale"] = details["params_total"] / details["params_timed"]
    details["estimated_s"] = round(per_entry * details["params_total"], 1)
    benchmark.extra_info.update(details)
    grads = net.gradient(x, t)
    # With the book's small weights, h=1e-4 moves some units across a ReLU kink or a pooling tie,
    # and those entries differ from backprop by up to ~20%; most agree closely.
    close = [np.isclose(g, grads[k].reshape(-1)[:SAMPLE], rtol=1e-2, atol=1e-6) for k, g in got.items()]
    agree = float(np.mean(np.concatenate(close)))
    benchmark.extra_info["agree_with_backprop"] = agree
    assert agree >= 0.75, f"only {agree:.0%} of the sampled entries agree with backprop within 1%"


def test_conv_numgrad_incremental(benchmark: Any) -> None:
    """The Numba backend's exact incremental numerical gradient of the whole SimpleConvNet at B=10."""
    status = fastnet.available_backends()["numba"]
    if not status.available:
        pytest.skip(f"backend 'numba' unavailable: {status.reason}")
    x, t = images(10, np.float64, seed=1)
    net = SimpleConvNet(seed=0, backend="numba")
    ref = SimpleConvNet(seed=0, backend="numpy")
    details = {"suite": "conv-numgrad", "case": "SimpleConvNet-B10-float64", "impl": "numba-incremental",
               "batch": 10, "params_total": int(sum(p.size for p in net.params.values())), "scale": 1.0}
    grads = measure(benchmark, lambda: net.numerical_gradient(x, t), group="conv-numgrad-simple-B10",
                    name="numba-incremental", info=details, rounds=1 if QUICK else 3)

    def f(_: Any) -> Any:
        return ref.loss(x, t)

    for k, p in ref.params.items():  # the first entries of each array against the book's loop
        want = numerical_gradient_loop(f, p.reshape(-1)[:4], 1e-4)
        np.testing.assert_allclose(grads[k].reshape(-1)[:4], want, rtol=0, atol=1e-9, err_msg=k)


DEEP_STRIDE = 4096 if QUICK else 1024  # every DEEP_STRIDE-th entry of each array is timed


@pytest.mark.parametrize("impl", ["numpy-book-loop", "numba-book-loop", "numba"])
def test_conv_numgrad_deep(benchmark: Any, impl: str) -> None:
    """DeepConvNet's numerical gradient at B=10, float64.

    ``*-book-loop``: the book's loop (a full forward pass per loss), timed on
    every DEEP_STRIDE-th entry of each array and scaled; ``numba``:
    ``net.numerical_gradient`` on numba, whole (the filters' losses one
    output channel at a time, ``channel_numgrad``; the dense layers' from the
    layer holding the entry), checked against the book's loop on a sample.
    """
    backend_name = impl.split("-")[0]
    status = fastnet.available_backends()[backend_name]
    if not status.available:
        pytest.skip(f"backend {backend_name!r} unavailable: {status.reason}")
    x, t = images(10, np.float64, seed=1)
    net = DeepConvNet(seed=0, backend=backend_name)
    net.loss(x, t, train_flg=False)  # compile / warm up
    total = int(sum(p.size for p in net.params.values()))
    if impl == "numba":
        if benchmark.disabled:  # a check, not a timing: one image keeps the whole call short
            x, t = x[:1], t[:1]
        details = {"suite": "conv-numgrad", "case": "DeepConvNet-B10-float64", "impl": impl, "batch": 10,
                   "params_total": total, "scale": 1.0}
        grads = measure(benchmark, lambda: net.numerical_gradient(x, t), group="conv-numgrad-deep-B10",
                        name=impl, info=details, rounds=1, warm_up=False)
        ref = DeepConvNet(seed=0, backend="numpy")
        for k, p in ref.params.items():  # the first entries of each array against the book's loop
            want = numerical_gradient_loop(lambda _: ref.loss(x, t, train_flg=False), p.reshape(-1)[:2], 1e-4)
            np.testing.assert_allclose(grads[k].reshape(-1)[:2], want, rtol=0, atol=1e-9, err_msg=k)
        return
    flats = {k: p.reshape(-1) for k, p in net.params.items()}

    def sample() -> None:
        for flat in flats.values():
            numerical_gradient_loop(lambda _: net.loss(x, t, train_flg=False), flat[::DEEP_STRIDE], 1e-4)

    timed = sum(flat[::DEEP_STRIDE].size for flat in flats.values())
    details = {"suite": "conv-numgrad", "case": "DeepConvNet-B10-float64", "impl": impl, "batch": 10,
               "params_total": total, "params_timed": timed, "scale": total / timed}
    measure(benchmark, sample, group="conv-numgrad-deep-B10", name=impl, info=details, rounds=1 if QUICK else 2)
    benchmark.extra_info.update(details)
