"""One SGD step of TwoLayerNet 784-50-10 (ReLU), per backend, with the book and the floor.

Groups ``step-B<batch>-<dtype>``; names:

* ``<backend>``: the public API, ``net.train_step(x, t, SGD(lr))``;
* ``<backend>-bookstyle``: ``grads = net.gradient(x, t)`` then
  ``params[key] -= lr * grads[key]``, the book's training loop on fastnet;
* ``<backend>-layers``: the book's ch.5 net written layer by layer on
  ``fastnet.layers`` (``workloads.BookLayerNet``), its gradient and SGD;
* ``book``: the book's step written flat in plain NumPy (``workloads.book_step``);
* ``matmul-floor``: the step's five matrix products alone, preallocated.

Before timing, each case takes one step from the same start as the book's
step and must land on the same parameters (the correctness check that
``--benchmark-disable`` keeps).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import fastnet
from fastnet import TwoLayerNet
from fastnet.optimizers import SGD

from .workloads import (
    LR,
    BookLayerNet,
    StepMatmuls,
    book_step,
    dense_batch,
    max_abs_diff,
    measure,
    start_params,
    step_group,
)

BATCHES = (100, 1000)
DTYPES = (np.float64, np.float32)
TOLERANCE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-6}  # on params ~1e-2

batches = pytest.mark.parametrize("batch", BATCHES, ids=[f"B{b}" for b in BATCHES])
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=[np.dtype(d).name for d in DTYPES])


def step_info(batch: int, dtype: Any, impl: str) -> dict[str, Any]:
    return {"suite": "step", "case": f"B{batch}-{np.dtype(dtype).name}", "impl": impl,
            "batch": batch, "dtype": np.dtype(dtype).name, "net": "784-50-10 relu"}


def after_one_book_step(batch: int, dtype: Any) -> dict[str, np.ndarray]:
    params = start_params(dtype)
    x, t = dense_batch(batch, dtype)
    book_step(params, x, t)
    return params


@pytest.mark.parametrize("style", ["api", "bookstyle", "layers"])
@dtypes
@batches
def test_step(benchmark: Any, backend: Any, batch: int, dtype: Any, style: str) -> None:
    x_host, t_host = dense_batch(batch, dtype)
    net = TwoLayerNet(784, 50, 10, seed=0, dtype=dtype, backend=backend)
    x, t = backend.asarray(x_host), backend.asarray(t_host)
    if style == "api":
        optimizer = SGD(LR)

        def step() -> Any:
            return net.train_step(x, t, optimizer)

        impl = backend.name
    elif style == "layers":
        layered = BookLayerNet(net.params, backend)

        def step() -> Any:
            layered.step(x, t)

        impl = f"{backend.name}-layers"
    else:

        def step() -> Any:
            grads = net.gradient(x, t)
            for key in net.params:
                net.params[key] -= LR * grads[key]

        impl = f"{backend.name}-bookstyle"

    step()  # one step from the book's start, checked below; also compiles/warms up
    backend.synchronize()
    diff = max_abs_diff(net.params, after_one_book_step(batch, dtype))
    assert diff <= TOLERANCE[np.dtype(dtype)], f"{impl} step differs from the book's by {diff:.3g}"
    info = step_info(batch, dtype, impl)
    api = {"api": "train_step", "bookstyle": "gradient + params -= lr*g", "layers": "fastnet.layers, ch.5"}
    info.update(backend=backend.name, api=api[style],
                max_abs_diff_vs_book=diff)
    measure(benchmark, step, group=step_group(batch, dtype), name=impl, info=info,
            sync=backend.synchronize)


@dtypes
@batches
def test_book(benchmark: Any, batch: int, dtype: Any) -> None:
    params = start_params(dtype)
    x, t = dense_batch(batch, dtype)
    info = step_info(batch, dtype, "book")
    info["what"] = "the book's step in plain NumPy (ch.5 ReLU/softmax-with-loss, ch.4 backprop)"
    loss = measure(benchmark, lambda: book_step(params, x, t), group=step_group(batch, dtype),
                   name="book", info=info)
    assert np.isfinite(loss)


@dtypes
@batches
def test_matmul_floor(benchmark: Any, batch: int, dtype: Any) -> None:
    params = start_params(dtype)
    x, _ = dense_batch(batch, dtype)
    products = StepMatmuls(x, params["W1"], params["W2"])
    info = step_info(batch, dtype, "matmul-floor")
    info["what"] = "x@W1, h@W2, h.T@dy, dy@W2.T, x.T@dh into preallocated outputs (NumPy)"
    measure(benchmark, products, group=step_group(batch, dtype), name="matmul-floor", info=info)
    np.testing.assert_allclose(products.dW1, x.T @ products.dh, rtol=1e-4)


ROUND_REPEATS = 20  # steps of each kind per round: long enough to warm caches, short next to a state flip
ROUNDS = 40


@dtypes
@batches
def test_step_rounds(benchmark: Any, batch: int, dtype: Any) -> None:
    """numba's ``train_step``, the matmul floor and the book's step, in turn within every round.

    This host's two vCPUs switch every few seconds or minutes between states
    with different costs for cache traffic between the cores, and separate
    cases run seconds apart can land in different states. Here each round
    times ROUND_REPEATS of each, one after another, and the ratios are taken
    round by round (medians in ``extra_info``), so both sides of a ratio see
    the same state. The benchmark's own time is one whole round.
    """
    status = fastnet.available_backends()["numba"]
    if not status.available:
        pytest.skip(f"backend 'numba' unavailable: {status.reason}")
    x, t = dense_batch(batch, dtype)
    net = TwoLayerNet(784, 50, 10, seed=0, dtype=dtype, backend="numba")
    optimizer = SGD(LR)
    book_params = start_params(dtype)
    floor_params = start_params(dtype)
    products = StepMatmuls(x, floor_params["W1"], floor_params["W2"])
    kinds: dict[str, Callable[[], Any]] = {
        "numba": lambda: net.train_step(x, t, optimizer),
        "matmul-floor": products,
        "book": lambda: book_step(book_params, x, t),
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}

    def one_round() -> None:
        for name, fn in kinds.items():
            fn()  # the first call after another kind's work pays for cold caches
            start = time.perf_counter()
            for _ in range(ROUND_REPEATS):
                fn()
            times[name].append((time.perf_counter() - start) / ROUND_REPEATS)

    info = step_info(batch, dtype, "rounds")
    info["what"] = f"{ROUND_REPEATS} steps each of numba, matmul-floor and book per round, in turn"
    measure(benchmark, one_round, group=f"{step_group(batch, dtype)}-rounds", name="rounds", info=info,
            rounds=ROUNDS)
    assert max_abs_diff(net.params, book_params) < 1e-3  # the same steps from the same start
    per_round = {name: np.array(v) for name, v in times.items()}
    benchmark.extra_info["medians"] = {name: float(np.median(v)) for name, v in per_round.items()}
    benchmark.extra_info["ratios"] = {
        "numba/matmul-floor": float(np.median(per_round["numba"] / per_round["matmul-floor"])),
        "book/numba": float(np.median(per_round["book"] / per_round["numba"])),
    }


@dtypes
@batches
def test_layers_rounds(benchmark: Any, batch: int, dtype: Any) -> None:
    """The book's layer-by-layer ch.5 net on numba and on numpy, in turn within every round.

    Both sides of the ratio see the same host state (see ``test_step_rounds``);
    ``extra_info["ratios"]["numpy-layers/numba-layers"]`` is the median of the
    per-round ratios.
    """
    status = fastnet.available_backends()["numba"]
    if not status.available:
        pytest.skip(f"backend 'numba' unavailable: {status.reason}")
    x, t = dense_batch(batch, dtype)
    nets = {name: BookLayerNet(start_params(dtype), fastnet.backend.instance(name))
            for name in ("numba", "numpy")}
    times: dict[str, list[float]] = {name: [] for name in nets}

    def one_round() -> None:
        for name, net in nets.items():
            net.step(x, t)
            start = time.perf_counter()
            for _ in range(ROUND_REPEATS):
                net.step(x, t)
            times[name].append((time.perf_counter() - start) / ROUND_REPEATS)

    info = step_info(batch, dtype, "layers-rounds")
    info["what"] = f"{ROUND_REPEATS} steps each of the ch.5 layer net on numba and numpy per round, in turn"
    measure(benchmark, one_round, group=f"{step_group(batch, dtype)}-layers-rounds", name="layers-rounds",
            info=info, rounds=ROUNDS)
    for name in nets["numpy"].params:  # the same steps from the same start: the same bits
        assert np.array_equal(nets["numpy"].params[name], nets["numba"].params[name]), name
    per_round = {name: np.array(v) for name, v in times.items()}
    benchmark.extra_info["medians"] = {f"{name}-layers": float(np.median(v)) for name, v in per_round.items()}
    benchmark.extra_info["ratios"] = {
        "numpy-layers/numba-layers": float(np.median(per_round["numpy"] / per_round["numba"])),
    }
