"""Same seed, same data: the numpy and numba backends give the same numbers.

Forward outputs, losses, backprop gradients and whole training runs must be
bit-for-bit identical: the numba backend calls NumPy's own matmul, exp and log
and repeats NumPy's order of every other operation. That holds whether NumPy
computes exp/log with libm or with its own SIMD code (AVX-512 machines); the
test reports which of the two this CPU has.

The numerical gradient is the exception by design: the numba backend computes
it with another (incremental, float64) algorithm, so it is compared with the
book's loop within 1e-9.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import fastnet
from fastnet.optimizers import SGD, Adam, AdamW, Momentum, Nesterov, RMSprop

if not fastnet.available_backends()["numba"].available:  # pragma: no cover
    pytest.skip("numba backend unavailable", allow_module_level=True)

import numba

STEPS = 1000
BATCH = 100


@numba.njit
def _libm_exp_log(x, e, lg):
    for i in range(x.size):
        e[i] = math.exp(x[i])
        lg[i] = math.log(abs(x[i]) + 1e-3)


def numpy_exp_case() -> str:
    """Which exp/log NumPy uses here: "libm" (same bits as C's exp/log) or "simd"."""
    x = np.random.default_rng(0).uniform(-20, 5, 100_000)
    e, lg = np.empty_like(x), np.empty_like(x)
    _libm_exp_log(x, e, lg)
    libm = np.array_equal(e, np.exp(x)) and np.array_equal(lg, np.log(np.abs(x) + 1e-3))
    return "libm" if libm else "simd"


@pytest.fixture(scope="module", autouse=True)
def report_case(request: pytest.FixtureRequest):
    case = numpy_exp_case()
    message = (
        "NumPy's exp/log are libm's here" if case == "libm"
        else "NumPy uses its own SIMD exp/log here (not libm's bits)"
    )
    # shown by -rA / in the junit report; the tests below demand bitwise equality either way
    request.config._fastnet_exp_case = message  # type: ignore[attr-defined]
    print(f"\n[test_cpu_identical] {message}; expecting bitwise equality")
    yield


def _nets(**kwargs):
    return [fastnet.TwoLayerNet(seed=11, backend=b, **kwargs) for b in ("numpy", "numba")]


def _bitwise(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("onehot", [False, True])
def test_forward_loss_and_gradients_identical(dtype, activation, onehot):
    rng = np.random.default_rng(1)
    x = rng.random((64, 784)).astype(dtype)
    x[x < 0.6] = 0.0
    labels = rng.integers(0, 10, 64)
    t = np.eye(10, dtype=dtype)[labels] if onehot else labels
    ref, mine = _nets(input_size=784, hidden_size=50, output_size=10, activation=activation,
                      dtype=dtype)
    ref.weight_decay_lambda = mine.weight_decay_lambda = 0.01
    assert _bitwise(ref.predict(x), mine.predict(x))
    assert _bitwise(ref.loss(x, t), mine.loss(x, t))
    assert ref.accuracy(x, t) == mine.accuracy(x, t)
    g_ref, g_mine = ref.gradient(x, t), mine.gradient(x, t)
    for name in g_ref:
        assert _bitwise(g_ref[name], g_mine[name]), name


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_numerical_gradients_agree_within_1e_9(activation):
    rng = np.random.default_rng(2)
    x = rng.random((20, 64))
    t = rng.integers(0, 10, 20)
    ref, mine = _nets(input_size=64, hidden_size=16, output_size=10, activation=activation,
                      weight_init_std=0.3)
    g_ref, g_mine = ref.numerical_gradient(x, t), mine.numerical_gradient(x, t)
    for name in g_ref:
        np.testing.assert_allclose(g_mine[name], g_ref[name], rtol=0, atol=1e-9, err_msg=name)


def _training_data():
    """MNIST (FASTNET_DATA) or generated data of MNIST's shape and sparsity; says which."""
    path = os.environ.get("FASTNET_DATA")
    if path and os.path.exists(os.path.join(path, "train-images-idx3-ubyte.gz")):
        from fastnet.datasets import load_mnist

        (x, t), (x_test, t_test) = load_mnist(data_dir=path, dtype=np.float64, download=False)
        return "MNIST", x, t, x_test, t_test
    rng = np.random.default_rng(3)
    x = rng.random((12_000, 784))
    x[x < 0.8] = 0.0
    t = rng.integers(0, 10, 12_000)
    return "generated", x[:10_000], t[:10_000], x[10_000:], t[10_000:]


def _train_side_by_side(ref, mine, opts, x, t, x_test, t_test, batch, seed):
    """STEPS steps of both nets on the same random batches, every loss, then every parameter,
    prediction and the accuracy compared bit for bit; returns the accuracy."""
    rng = np.random.default_rng(seed)
    for _ in range(STEPS):
        idx = rng.choice(x.shape[0], batch)
        xb, tb = x[idx], t[idx]
        losses = [net.train_step(xb, tb, opt) for net, opt in zip((ref, mine), opts)]
        assert _bitwise(losses[0], losses[1])
    for name in ref.params:
        assert _bitwise(ref.params[name], mine.params[name]), f"{name} after {STEPS} steps"
    assert _bitwise(ref.predict(x_test), mine.predict(x_test))
    acc = ref.accuracy(x_test, t_test)
    assert acc == mine.accuracy(x_test, t_test)
    return acc


def test_thousand_sgd_steps_identical():
    """The book's ch.5 training loop, 1,000 steps: every parameter and prediction identical."""
    source, x, t, x_test, t_test = _training_data()
    ref, mine = _nets(input_size=784, hidden_size=50, output_size=10)
    acc = _train_side_by_side(ref, mine, [SGD(lr=0.1), SGD(lr=0.1)], x, t, x_test, t_test, BATCH, seed=4)
    if source == "MNIST":
        assert acc > 0.85  # it did learn: the comparison is not between two untrained nets


class ClippedSGD(SGD):
    """A user's optimizer overriding the public update (clipped gradients)."""

    def update(self, params, grads):
        super().update(params, {k: np.clip(g, -0.05, 0.05) for k, g in grads.items()})


class Softplus:
    """A user-defined activation: log(1 + exp(x)), written against the array module."""

    name = "softplus"

    def forward(self, xp, x):
        return xp.log1p(xp.exp(x)), x

    def backward(self, xp, dout, x):
        return dout / (1 + xp.exp(-x))


@pytest.mark.parametrize(
    "dtype, activation, optimizer",
    [(np.float32, "relu", SGD), (np.float64, "sigmoid", Momentum), (np.float32, "sigmoid", Adam),
     (np.float64, "tanh", AdamW), (np.float32, "tanh", Nesterov), (np.float64, "relu", ClippedSGD),
     (np.float64, Softplus(), RMSprop), (np.float32, Softplus(), ClippedSGD)],
    ids=lambda v: getattr(v, "__name__", None) or getattr(v, "name", None) or str(v),
)
def test_other_training_runs_identical(dtype, activation, optimizer):
    source, x, t, x_test, _ = _training_data()
    x, x_test = x.astype(dtype), x_test[:2000].astype(dtype)
    ref, mine = _nets(input_size=784, hidden_size=50, output_size=10, activation=activation,
                      dtype=dtype)
    ref.weight_decay_lambda = mine.weight_decay_lambda = 1e-3
    opts = [optimizer(), optimizer()]
    rng = np.random.default_rng(5)
    batches = [rng.choice(x.shape[0], BATCH) for _ in range(200)]
    for idx in batches[:100]:  # one call per step ...
        for net, opt in zip((ref, mine), opts):
            net.train_step(x[idx], t[idx], opt)
    losses = [net.train_batches(x, t, batches[100:], opt) for net, opt in zip((ref, mine), opts)]
    assert all(_bitwise(a, b) for a, b in zip(*losses))  # ... and one call for many steps
    for name in ref.params:
        assert _bitwise(ref.params[name], mine.params[name]), f"{name} ({source})"
    assert _bitwise(ref.predict(x_test), mine.predict(x_test))


@pytest.mark.slow
def test_thousand_convnet_steps_identical():
    """The book's ch.7 SimpleConvNet, 1,000 Adam steps of 50 images: every parameter and
    prediction identical on numpy and numba."""
    source, x, t, x_test, t_test = _training_data()
    x, x_test = x.reshape(-1, 1, 28, 28), x_test[:500].reshape(-1, 1, 28, 28)
    ref, mine = (fastnet.SimpleConvNet(seed=11, backend=b) for b in ("numpy", "numba"))
    acc = _train_side_by_side(ref, mine, [Adam(), Adam()], x, t, x_test, t_test[:500], 50, seed=5)
    if source == "MNIST":
        assert acc > 0.9  # it did learn
