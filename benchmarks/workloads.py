"""What the suites time, besides fastnet itself: data, the book's code, the floors.

* ``book_step`` / ``book_accuracy``: the book's algorithm (ch.5's ReLU net,
  ch.4's five-product backprop) written flat in plain NumPy, our own code.
* ``StepMatmuls`` / ``PredictMatmuls``: only the matrix products of a step or
  of a prediction, into preallocated outputs: the CPU floor a backend can
  approach but not beat.
* ``loop_subset``: the book's numerical-gradient loop on a stated subset of
  parameters, so a 25-second case can be timed in a fraction of a second and
  scaled (every parameter costs the same two forward passes in that loop).
* ``measure``: names, groups and times one case, synchronising the device.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np

import fastnet
from fastnet.datasets import load_mnist, mnist_available

Array = Any
LR = 0.1
H = 1e-4
SIZES = (784, 50, 10)

# FASTNET_BENCH_QUICK=1 (``fastnet bench --quick``): fewer rounds everywhere.
QUICK = os.environ.get("FASTNET_BENCH_QUICK", "") == "1"
SLOW_ROUNDS = 2 if QUICK else 5  # rounds of the numerical-gradient cases
SUBSET = 64 if QUICK else 256  # parameters timed when a backend runs the book's loop
CHECK_SUBSET = 24  # parameters checked with --benchmark-disable


# ------------------------------------------------------------------ cases
def measure(
    benchmark: Any,
    fn: Callable[[], Any],
    *,
    group: str,
    name: str,
    info: dict[str, Any],
    sync: Callable[[], None] | None = None,
    rounds: int | None = None,
    warm_up: bool = True,
) -> Any:
    """Time ``fn`` as case `name` of `group`; returns fn's last result.

    ``rounds`` set: a fixed number of rounds after one warm-up (slow cases; ``warm_up=False``:
    none, for a case whose caller warmed up what it compiles);
    otherwise pytest-benchmark calibrates. With ``--benchmark-disable`` fn runs once.
    """
    benchmark.group = group
    benchmark.name = name
    benchmark.extra_info.update(info)
    benchmark.extra_info.setdefault("group", group)
    benchmark.extra_info.setdefault("name", name)

    if sync is None:
        timed = fn
    else:

        def timed() -> Any:
            out = fn()
            sync()
            return out

    if rounds is None:
        return benchmark(timed)
    warmup = 1 if warm_up and not benchmark.disabled else 0
    return benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=warmup)


def step_group(batch: int, dtype: Any) -> str:
    return f"step-B{batch}-{np.dtype(dtype).name}"


def predict_group(dtype: Any) -> str:
    return f"predict-10k-{np.dtype(dtype).name}"


# ------------------------------------------------------------------ data
def dense_batch(n: int, dtype: Any = np.float64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dense random inputs in [0, 1) and one-hot targets, as host arrays."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, SIZES[0])).astype(dtype)
    t = np.eye(SIZES[-1], dtype=dtype)[rng.integers(0, SIZES[-1], n)]
    return x, t


@functools.lru_cache(maxsize=2)
def _mnist(dtype_name: str) -> Any:
    if not mnist_available():
        return None
    return load_mnist(normalize=True, one_hot_label=True, download=False, dtype=np.dtype(dtype_name))


def mnist_reason() -> str:
    return "real MNIST not found: set FASTNET_DATA to a folder with the four IDX .gz files"


def mnist_batch(n: int, dtype: Any = np.float64, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """`n` training images (one-hot targets) picked with `seed`, or None without MNIST."""
    data = _mnist(np.dtype(dtype).name)
    if data is None:
        return None
    (x_train, t_train), _ = data
    idx = np.random.default_rng(seed).choice(x_train.shape[0], n, replace=False)
    return x_train[idx], t_train[idx]


def eval_images(dtype: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """The 10,000 MNIST test images and labels, or generated data of that shape."""
    data = _mnist(np.dtype(dtype).name)
    if data is not None:
        _, (x_test, t_test) = data
        return x_test, t_test.argmax(axis=1), "mnist"
    rng = np.random.default_rng(1)
    x = rng.random((10000, SIZES[0])).astype(dtype)
    return x, rng.integers(0, SIZES[-1], 10000), "generated"


def start_params(dtype: Any, seed: int = 0, sizes: tuple[int, ...] = SIZES) -> dict[str, np.ndarray]:
    """The starting parameters of ``TwoLayerNet(*sizes, seed=seed)`` as host arrays."""
    net = fastnet.TwoLayerNet(*sizes, seed=seed, dtype=dtype, backend="numpy")
    return {k: v.copy() for k, v in net.params.items()}


def max_abs_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    return max(float(np.max(np.abs(fastnet.to_numpy(a[k]) - fastnet.to_numpy(b[k])))) for k in b)


# ------------------------------------------------------------------ the book's code, flat
def book_softmax(a: np.ndarray) -> np.ndarray:
    a = a - np.max(a, axis=-1, keepdims=True)
    return np.exp(a) / np.sum(np.exp(a), axis=-1, keepdims=True)


def book_cross_entropy(y: np.ndarray, t: np.ndarray) -> Any:
    labels = t.argmax(axis=1)
    return -np.sum(np.log(y[np.arange(y.shape[0]), labels] + 1e-7)) / y.shape[0]


def book_step(params: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray, lr: float = LR) -> Any:
    """One SGD step of the ReLU TwoLayerNet, the book's way; returns the loss.

    Forward with ch.5's Relu (copy, mask) and SoftmaxWithLoss; ch.4's backprop
    (five matrix products: the first layer's dx is not computed); then
    ``params[key] -= lr * grad[key]``. Fresh arrays every call, as in the book.
    """
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    batch = x.shape[0]
    a1 = np.dot(x, W1) + b1
    mask = a1 <= 0
    z1 = a1.copy()
    z1[mask] = 0
    a2 = np.dot(z1, W2) + b2
    y = book_softmax(a2)
    loss = book_cross_entropy(y, t)
    dy = (y - t) / batch
    grads = {"W2": np.dot(z1.T, dy), "b2": np.sum(dy, axis=0)}
    dz1 = np.dot(dy, W2.T)
    dz1[mask] = 0
    grads["W1"] = np.dot(x.T, dz1)
    grads["b1"] = np.sum(dz1, axis=0)
    for key in ("W1", "b1", "W2", "b2"):
        params[key] -= lr * grads[key]
    return loss


def book_accuracy(params: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray) -> float:
    """The book's ``accuracy``: predict, argmax, compare."""
    a1 = np.dot(x, params["W1"]) + params["b1"]
    z1 = np.maximum(0, a1)
    y = np.dot(z1, params["W2"]) + params["b2"]
    return float(np.sum(np.argmax(y, axis=1) == labels)) / x.shape[0]


# ------------------------------------------------------------------ floors
class StepMatmuls:
    """The five matrix products of one step, into preallocated outputs.

    x@W1, h@W2 (forward), h.T@dy, dy@W2.T, x.T@dh (backprop): everything the
    step must compute that is not elementwise work.
    """

    def __init__(self, x: np.ndarray, W1: np.ndarray, W2: np.ndarray) -> None:
        batch, dtype = x.shape[0], x.dtype
        self.x, self.W1, self.W2 = x, W1, W2
        self.h = np.empty((batch, W1.shape[1]), dtype)
        self.dy = np.empty((batch, W2.shape[1]), dtype)
        self.dW2 = np.empty_like(W2)
        self.dh = np.empty_like(self.h)
        self.dW1 = np.empty_like(W1)

    def __call__(self) -> None:
        np.matmul(self.x, self.W1, out=self.h)
        np.matmul(self.h, self.W2, out=self.dy)  # the scores stand in for dy
        np.matmul(self.h.T, self.dy, out=self.dW2)
        np.matmul(self.dy, self.W2.T, out=self.dh)
        np.matmul(self.x.T, self.dh, out=self.dW1)


class PredictMatmuls:
    """The two matrix products of a prediction, into preallocated outputs."""

    def __init__(self, x: np.ndarray, W1: np.ndarray, W2: np.ndarray) -> None:
        self.x, self.W1, self.W2 = x, W1, W2
        self.h = np.empty((x.shape[0], W1.shape[1]), x.dtype)
        self.y = np.empty((x.shape[0], W2.shape[1]), x.dtype)

    def __call__(self) -> None:
        np.matmul(self.x, self.W1, out=self.h)
        np.matmul(self.h, self.W2, out=self.y)


# ------------------------------------------------------------------ numerical gradient
def runs_book_loop(backend: Any) -> bool:
    """True when the backend's whole-net numerical gradient is the inherited book loop."""
    from fastnet.backend import NumpyBackend

    return type(backend).mlp_numerical_gradient is NumpyBackend.mlp_numerical_gradient


def pick_parameters(params: dict[str, Any], count: int) -> list[tuple[str, tuple[int, ...]]]:
    """About `count` parameters spread evenly over every array (at least one each)."""
    total = sum(int(np.prod(p.shape)) for p in params.values())
    picks: list[tuple[str, tuple[int, ...]]] = []
    for name, p in params.items():
        size = int(np.prod(p.shape))
        n = max(1, min(size, round(count * size / total)))
        for flat in np.linspace(0, size - 1, n).round().astype(int):
            picks.append((name, tuple(int(i) for i in np.unravel_index(flat, p.shape))))
    return picks


def loop_subset(
    loss: Callable[[], Any], params: dict[str, Array], picks: list[tuple[str, tuple[int, ...]]], xp: Any
) -> Array:
    """The book's ``numerical_gradient`` loop body, run on the picked parameters only."""
    grad = xp.zeros(len(picks))
    for i, (name, idx) in enumerate(picks):
        x = params[name]
        tmp_val = x[idx]
        x[idx] = float(tmp_val) + H
        fxh1 = loss()
        x[idx] = tmp_val - H
        fxh2 = loss()
        grad[i] = (fxh1 - fxh2) / (2 * H)
        x[idx] = tmp_val
    return grad


class BookLayerNet:
    """The book's ch.5 TwoLayerNet as a reader writes it, on fastnet's layers.

    An OrderedDict of Affine, Relu, Affine and a SoftmaxWithLoss, a forward
    pass through them and a backward pass in reverse, exactly the structure
    of ``ch05/two_layer_net.py``; only the imports are fastnet's. The layers
    bind to `backend`.
    """

    def __init__(self, params: dict[str, Any], backend: Any) -> None:
        from collections import OrderedDict

        from fastnet import layers

        self.params = params
        self.layers = OrderedDict()
        self.layers["Affine1"] = layers.Affine(params["W1"], params["b1"], backend=backend)
        self.layers["Relu1"] = layers.Relu(backend=backend)
        self.layers["Affine2"] = layers.Affine(params["W2"], params["b2"], backend=backend)
        self.last_layer = layers.SoftmaxWithLoss(backend=backend)

    def loss(self, x: Any, t: Any) -> Any:
        for layer in self.layers.values():
            x = layer.forward(x)
        return self.last_layer.forward(x, t)

    def gradient(self, x: Any, t: Any) -> dict[str, Any]:
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}

    def step(self, x: Any, t: Any, lr: float = LR) -> None:
        grads = self.gradient(x, t)
        for key in ("W1", "b1", "W2", "b2"):
            self.params[key] -= lr * grads[key]
