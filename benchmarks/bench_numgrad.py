"""Numerical gradient vs backprop of the same net on the same batch, per backend.

Groups ``numgrad-<net>-B<batch>[-mnist]``; names ``<backend>-numerical`` and
``<backend>-backprop``. All float64 (a central difference with h=1e-4 has no
correct digits in float32).

A backend whose numerical gradient is the book's loop (numpy always; any
backend that does not override it) is timed on ``SUBSET`` consecutive entries
of W1 through its own ``mlp_numerical_gradient_part`` (the same loop, BLAS
thread setting included), and ``extra_info["scale"]`` says by how much to
multiply: every parameter costs the same two forward passes in that loop. The
report applies the scale; pytest-benchmark's own table shows the subset's time.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pytest

import fastnet
from fastnet import Affine, SoftmaxWithLoss, TwoLayerNet

from .workloads import (
    CHECK_SUBSET,
    SIZES,
    SLOW_ROUNDS,
    SUBSET,
    H,
    dense_batch,
    measure,
    mnist_batch,
    mnist_reason,
    runs_book_loop,
)

CLOSE = 1e-6  # numerical vs backprop: the book's +1e-7 in the log alone gives ~1e-7
SAME = 1e-9  # a fast numerical gradient vs the book's loop on the same parameters


class Case(NamedTuple):
    sizes: tuple[int, ...]
    batch: int
    data: str = "dense"  # or "mnist"
    activation: str = "relu"

    @property
    def label(self) -> str:
        tail = "-mnist" if self.data == "mnist" else ""
        tail += "" if self.activation == "relu" else f"-{self.activation}"
        return f"{'-'.join(map(str, self.sizes))}-B{self.batch}{tail}"


CASES = [
    Case((784, 10, 10), 3),
    Case((784, 10, 10), 100),
    Case(SIZES, 3),
    Case(SIZES, 100),
    Case(SIZES, 100, "mnist"),
    Case(SIZES, 100, "dense", "sigmoid"),  # ch.4's net
    Case(SIZES, 100, "mnist", "sigmoid"),
    Case(SIZES, 100, "mnist", "tanh"),
]


def _batch(case: Case) -> tuple[np.ndarray, np.ndarray]:
    if case.data == "mnist":
        batch = mnist_batch(case.batch, np.float64)
        if batch is None:
            pytest.skip(mnist_reason())
        return batch
    return dense_batch(case.batch, np.float64)


def _net(case: Case, backend: Any) -> TwoLayerNet:
    return TwoLayerNet(*case.sizes, activation=case.activation, seed=0, dtype=np.float64, backend=backend)


def _info(case: Case, backend: Any, kind: str, params: int) -> dict[str, Any]:
    return {
        "suite": "numgrad",
        "case": case.label,
        "impl": backend.name,
        "kind": kind,
        "dtype": "float64",
        "data": case.data,
        "activation": case.activation,
        "params_total": params,
    }


def _chunk(net: TwoLayerNet, count: int) -> tuple[int, int]:
    """`count` consecutive entries of W1, from the row of the input's middle pixel
    (the centre of the image for 784 inputs, where MNIST pixels are not all 0)."""
    rows, hidden = net.params["W1"].shape
    n = min(count, rows * hidden)
    start = min((rows // 2 + math.isqrt(rows) // 2) * hidden, rows * hidden - n)
    return start, start + n


def _book_loop(net: TwoLayerNet, x: Any, t: Any, start: int, stop: int) -> Any:
    """The backend's own loop (``mlp_numerical_gradient_part``) on W1's flat entries start:stop."""
    return net.backend.mlp_numerical_gradient_part(net.spec(), x, t, "W1", start, stop, H)


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_numerical(benchmark: Any, backend: Any, case: Case) -> None:
    x_host, t_host = _batch(case)
    net = _net(case, backend)
    x, t = backend.asarray(x_host), backend.asarray(t_host)
    host = fastnet.to_numpy
    backprop = host(net.gradient(x, t)["W1"]).reshape(-1)
    total = sum(int(p.size) for p in net.params.values())
    # --benchmark-disable only checks: a few dozen parameters are enough for that
    start, stop = _chunk(net, CHECK_SUBSET if benchmark.disabled else SUBSET)
    info = _info(case, backend, "numerical", total)
    where = {"group": f"numgrad-{case.label}", "name": f"{backend.name}-numerical"}

    if runs_book_loop(backend):
        # every parameter costs the same two forward passes in this loop: time some, scale
        info.update(method=f"book loop on W1 entries {start}:{stop} (mlp_numerical_gradient_part), scaled",
                    params_timed=stop - start, scale=total / (stop - start))
        got = host(measure(benchmark, lambda: _book_loop(net, x, t, start, stop), **where, info=info,
                           sync=backend.synchronize, rounds=SLOW_ROUNDS))
    else:
        info.update(method="whole net", params_timed=total, scale=1.0)
        grads = measure(benchmark, lambda: net.numerical_gradient(x, t), **where, info=info,
                        sync=backend.synchronize, rounds=SLOW_ROUNDS)
        got = host(grads["W1"]).reshape(-1)[start:stop]
        reference = _net(case, "numpy")  # the book's loop on the same parameters
        book = _book_loop(reference, x_host, t_host, start, stop)
        same = float(np.max(np.abs(got - book)))
        benchmark.extra_info["max_abs_diff_vs_book_loop"] = same
        assert same <= SAME, f"numerical gradient differs from the book's loop by {same:.3g}"

    diff = np.abs(got - backprop[start:stop])
    agree = float(np.mean(diff <= CLOSE))
    benchmark.extra_info["max_abs_diff_vs_backprop"] = float(diff.max())
    benchmark.extra_info["share_within_1e-6_of_backprop"] = agree
    # A ReLU kink inside [w-h, w+h] makes a central difference legitimately differ from
    # backprop (up to ~7% of W1's entries on 784-10-10 at B=100); sigmoid has none.
    assert agree >= (0.9 if case.activation == "relu" else 1.0), (agree, float(diff.max()))


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_backprop(benchmark: Any, backend: Any, case: Case) -> None:
    x_host, t_host = _batch(case)
    net = _net(case, backend)
    x, t = backend.asarray(x_host), backend.asarray(t_host)
    total = sum(int(p.size) for p in net.params.values())
    info = _info(case, backend, "backprop", total)
    grads = measure(benchmark, lambda: net.gradient(x, t), group=f"numgrad-{case.label}",
                    name=f"{backend.name}-backprop", info=info, sync=backend.synchronize)
    assert all(bool(np.isfinite(fastnet.to_numpy(g)).all()) for g in grads.values())


# ------------------------------------------------------------------ the book's simpleNet
class SimpleNet:
    """ch.4's simpleNet: x (1, 2) @ W (2, 3), softmax, cross-entropy; no bias."""

    def __init__(self, backend: Any) -> None:
        xp = backend.xp
        self.W = backend.asarray(np.random.default_rng(0).standard_normal((2, 3)))
        self.x = backend.asarray(np.array([[0.6, 0.9]]))
        self.t = backend.asarray(np.array([[0.0, 0.0, 1.0]]))
        self.affine = Affine(self.W, xp.zeros(3), backend=backend)
        self.last = SoftmaxWithLoss(backend=backend)
        self.xp = xp

    def loss(self) -> Any:
        y = fastnet.softmax(self.xp.dot(self.x, self.W))
        return fastnet.cross_entropy_error(y, self.t)

    def numerical(self) -> Any:
        return fastnet.numerical_gradient(lambda w: self.loss(), self.W)

    def backprop(self) -> Any:
        self.last.forward(self.affine.forward(self.x), self.t)
        self.affine.backward(self.last.backward(1))
        return self.affine.dW


@pytest.mark.parametrize("kind", ["numerical", "backprop"])
def test_simplenet(benchmark: Any, backend: Any, kind: str) -> None:
    net = SimpleNet(backend)
    info = {"suite": "numgrad", "case": "simplenet-2x3", "impl": backend.name, "kind": kind,
            "dtype": "float64", "data": "book", "params_total": 6, "params_timed": 6, "scale": 1.0}
    rounds = SLOW_ROUNDS if kind == "numerical" and backend.is_gpu else None
    got = measure(benchmark, getattr(net, kind), group="numgrad-simplenet-2x3",
                  name=f"{backend.name}-{kind}", info=info, sync=backend.synchronize, rounds=rounds)
    if kind == "numerical":
        diff = float(np.max(np.abs(fastnet.to_numpy(got) - fastnet.to_numpy(net.backprop()))))
        benchmark.extra_info["max_abs_diff_vs_backprop"] = diff
        assert diff < CLOSE
