"""The Numba backend's convolution and pooling give the NumPy backend's bits."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastnet
from fastnet import DeepConvNet, SimpleConvNet
from fastnet.backend import lookup
from fastnet.backend.loops import blas_threads, idle_threads_sleep, one_blas_thread
from fastnet.layers import Convolution, Pooling
from fastnet.optimizers import SGD, Adam

if not fastnet.available_backends()["numba"].available:
    pytest.skip("numba unavailable", allow_module_level=True)

NUMPY, NUMBA = lookup("numpy"), lookup("numba")


@pytest.fixture(autouse=True, params=["blas-threads", "one-blas-thread", "idle-threads-sleep"])
def kernel_threads(request, monkeypatch):
    """Every test three times: beside threaded BLAS (one-thread kernels), with BLAS held to one
    thread, and beside threaded BLAS whose idle threads sleep (threaded kernels for the big cases)."""
    from fastnet.backend import loops

    monkeypatch.setattr(loops, "idle_threads_sleep", lambda: request.param == "idle-threads-sleep")
    if request.param == "one-blas-thread":
        with one_blas_thread():
            yield
    else:
        yield


def test_kernels_thread_only_when_blas_does_not(monkeypatch):
    from fastnet.backend import loops
    from fastnet.backend.numba import conv_kernels

    used, locked = [], []

    def lock_held_elsewhere() -> None:  # a threaded kernel runs under the backend's lock
        got = NUMBA._parallel_lock.acquire(blocking=False)
        if got:
            NUMBA._parallel_lock.release()
        locked.append(not got)

    def record(i: int) -> None:
        used.append(i)
        probe = threading.Thread(target=lock_held_elsewhere)
        probe.start()
        probe.join()

    for name, pair in list(conv_kernels.KERNELS.items()):
        wrapped = tuple((lambda *a, _f=f, _i=i: record(_i) or _f(*a)) for i, f in enumerate(pair))
        monkeypatch.setitem(conv_kernels.KERNELS, name, wrapped)
    big, small = np.random.default_rng(0).random((20, 6, 24, 24)), np.ones((2, 1, 4, 4))
    monkeypatch.setattr(loops, "idle_threads_sleep", lambda: False)
    for threads in (2, 1):
        monkeypatch.setattr(loops, "blas_threads", lambda threads=threads: threads)
        NUMBA.im2col(big, 3, 3, 1, 1)
        NUMBA.im2col(small, 3, 3, 1, 1)  # too small to thread whatever BLAS does
    assert used == [0, 0, 1, 0]
    monkeypatch.setattr(loops, "blas_threads", lambda: 2)
    monkeypatch.setattr(loops, "idle_threads_sleep", lambda: True)  # threaded beside two BLAS threads
    NUMBA.im2col(big, 3, 3, 1, 1)
    NUMBA.im2col(small, 3, 3, 1, 1)
    assert used == [0, 0, 1, 0, 1, 0]
    assert locked == [bool(i) for i in used]
    with one_blas_thread():  # what the gate reads: threadpoolctl's view of the BLAS threads
        assert blas_threads() == 1


@pytest.mark.parametrize("env, sleeps", [
    ({}, False),
    ({"OPENBLAS_THREAD_TIMEOUT": "4"}, False),  # Numba's OpenMP threads still spin
    ({"OMP_WAIT_POLICY": "passive"}, False),  # OpenBLAS's threads still spin
    ({"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}, True),
    ({"OPENBLAS_THREAD_TIMEOUT": " 16 ", "OMP_WAIT_POLICY": "passive"}, True),
    ({"OPENBLAS_THREAD_TIMEOUT": "17", "OMP_WAIT_POLICY": "passive"}, False),
    ({"OPENBLAS_THREAD_TIMEOUT": "0", "OMP_WAIT_POLICY": "passive"}, False),  # 0: OpenBLAS's default
    ({"OPENBLAS_THREAD_TIMEOUT": "short", "OMP_WAIT_POLICY": "passive"}, False),
    ({"OPENBLAS_THREAD_TIMEOUT": "\u00b2", "OMP_WAIT_POLICY": "passive"}, False),
    ({"OPENBLAS_THREAD_TIMEOUT": "4", "NUMBA_THREADING_LAYER": "workqueue"}, False),
])
def test_idle_threads_sleep_reads_the_environment(monkeypatch, env, sleeps):
    for name in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    idle_threads_sleep.cache_clear()
    try:
        assert idle_threads_sleep() is sleeps
    finally:
        monkeypatch.undo()
        idle_threads_sleep.cache_clear()
DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["fp64", "fp32"])
CASES = [  # (x shape, filter/pool h, w, stride, pad): small ones run on one thread, big ones threaded
    ((2, 3, 7, 6), 3, 3, 1, 0),
    ((2, 2, 8, 8), 3, 2, 2, 1),
    ((3, 2, 6, 7), 2, 3, 3, 2),
    ((16, 8, 24, 24), 3, 3, 1, 1),
    ((20, 6, 24, 24), 2, 2, 2, 0),
]


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b), f"max difference {np.max(np.abs(a - b))}"


def noncontiguous(x):
    return np.asfortranarray(x)[:, :, ::1, :]


@DTYPES
@pytest.mark.parametrize("shape, fh, fw, stride, pad", CASES)
def test_im2col_col2im(dtype, shape, fh, fw, stride, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    for arr in (x, noncontiguous(x)):
        col = NUMBA.im2col(arr, fh, fw, stride, pad)
        same(col, NUMPY.im2col(arr, fh, fw, stride, pad))
    c = rng.standard_normal(col.shape).astype(dtype)
    same(NUMBA.col2im(c, shape, fh, fw, stride, pad), NUMPY.col2im(c, shape, fh, fw, stride, pad))


@DTYPES
@pytest.mark.parametrize("shape, fh, fw, stride, pad", CASES)
def test_convolution_layer(dtype, shape, fh, fw, stride, pad):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    W = rng.standard_normal((5, shape[1], fh, fw)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    layers = [Convolution(W, b, stride, pad, backend=bk) for bk in (NUMPY, NUMBA)]
    outs = [layer.forward(x) for layer in layers]
    same(outs[1], outs[0])
    g = rng.standard_normal(outs[0].shape).astype(dtype)
    dxs = [layer.backward(g) for layer in layers]
    same(dxs[1], dxs[0])
    same(layers[1].dW, layers[0].dW)
    same(layers[1].db, layers[0].db)
    same(layers[1].col, layers[0].col)


def test_a_second_forward_overwrites_the_first_col():
    rng = np.random.default_rng(5)
    W, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    fast, ref = Convolution(W, b, pad=1, backend=NUMBA), Convolution(W, b, pad=1, backend=NUMPY)
    x1, x2 = rng.standard_normal((2, 2, 3, 6, 6))
    fast.forward(x1)
    first = fast.col
    for layer in (fast, ref):
        out = layer.forward(x2)
    assert fast.col is first  # the layer's array, written again
    same(fast.col, ref.col)
    same(fast.backward(out), ref.backward(out))
    same(fast.dW, ref.dW)


@DTYPES
@pytest.mark.parametrize("shape, ph, pw, stride, pad", CASES)
def test_pooling_layer(dtype, shape, ph, pw, stride, pad):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, :3, :3] = 1.5  # ties: the first position wins
    layers = [Pooling(ph, pw, stride, pad, backend=bk) for bk in (NUMPY, NUMBA)]
    outs = [layer.forward(x) for layer in layers]
    same(outs[1], outs[0])
    same(layers[1].arg_max, layers[0].arg_max)
    g = rng.standard_normal(outs[0].shape).astype(dtype)
    g[0, 0, 0, 0] = -0.0  # -0.0 sent back: 0.0 + -0.0 is 0.0 in the reference
    same(layers[1].backward(g), layers[0].backward(g))


@pytest.mark.parametrize("signed_zeros", [False, True])
def test_pooling_nan_and_signed_zeros(signed_zeros):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 0, 2:] = [5.0, np.nan]  # a NaN after a positive maximum
    x[0, 0, 3, :2] = [np.inf, -np.inf]
    if signed_zeros:
        x[0, 0, 2, 2] = -0.0  # a window of 0.0 and -0.0: NumPy decides the sign, so numba defers to it
    outs, args = [], []
    for bk in (NUMPY, NUMBA):
        layer = Pooling(2, 2, backend=bk)
        outs.append(layer.forward(x))
        args.append(layer.arg_max)
    assert np.isnan(outs[1][0, 0, 0, 0]) and np.isnan(outs[1][0, 0, 0, 1])
    same(args[1], args[0])
    assert np.array_equal(np.signbit(outs[1]), np.signbit(outs[0]))
    assert np.array_equal(outs[1], outs[0], equal_nan=True)


def test_integer_images_take_the_reference_path():
    x = np.arange(2 * 1 * 5 * 5).reshape(2, 1, 5, 5)
    W, b = np.ones((2, 1, 3, 3)), np.zeros(2)
    same(Convolution(W, b, backend=NUMBA).forward(x), Convolution(W, b, backend=NUMPY).forward(x))
    same(NUMBA.im2col(x, 2, 2, 1, 0), NUMPY.im2col(x, 2, 2, 1, 0))


def run_steps(cls, backend, dtype, x, t, optimizer, steps, **kw):
    net = cls(seed=0, dtype=dtype, backend=backend, **kw)
    losses = [float(net.train_step(x, t, optimizer)) for _ in range(steps)]
    return net, losses


@DTYPES
@pytest.mark.parametrize("make_opt", [lambda: SGD(0.1), lambda: Adam()], ids=["sgd", "adam"])
def test_simple_convnet_steps(dtype, make_opt):
    rng = np.random.default_rng(3)
    x, t = rng.random((20, 1, 28, 28)).astype(dtype), rng.integers(0, 10, 20)
    a, la = run_steps(SimpleConvNet, "numpy", dtype, x, t, make_opt(), 4)
    b, lb = run_steps(SimpleConvNet, "numba", dtype, x, t, make_opt(), 4)
    assert la == lb
    for k in a.params:
        same(b.params[k], a.params[k])
    same(b.predict(x), a.predict(x))


@pytest.mark.slow
@DTYPES
def test_deep_convnet_steps(dtype):
    rng = np.random.default_rng(4)
    x, t = rng.random((8, 1, 28, 28)).astype(dtype), rng.integers(0, 10, 8)
    a, la = run_steps(DeepConvNet, "numpy", dtype, x, t, Adam(), 3)
    b, lb = run_steps(DeepConvNet, "numba", dtype, x, t, Adam(), 3)
    assert la == lb  # dropout masks come from the same seeded generator on both
    for k in a.params:
        same(b.params[k], a.params[k])
    assert a.accuracy(x, t, batch_size=3) == b.accuracy(x, t, batch_size=3)


def test_train_batches_and_evaluate():
    rng = np.random.default_rng(6)
    x, t = rng.random((40, 1, 28, 28)), rng.integers(0, 10, 40)
    batches = rng.permutation(40).reshape(4, 10)
    nets = [SimpleConvNet(seed=1, backend=bk) for bk in ("numpy", "numba")]
    losses = [[float(v) for v in net.train_batches(x, t, batches, Adam())] for net in nets]
    assert losses[0] == losses[1]
    assert nets[0].evaluate(x, t, batch_size=15) == nets[1].evaluate(x, t, batch_size=15)
    for k in nets[0].params:
        same(nets[1].params[k], nets[0].params[k])


@DTYPES
@pytest.mark.parametrize("cls", [SimpleConvNet, DeepConvNet])
def test_one_image_gives_numpys_bits(dtype, cls):
    """With one image the reference's im2col rows and backward rows are transposed views, whose
    products and sums round differently from a copy's: the numba backend keeps that layout."""
    conv = {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1}
    kw = ({"conv_param": conv, "hidden_size": 5, "output_size": 4} if cls is SimpleConvNet else
          {f"conv_param_{i}": {**conv, "pad": 2 if i == 4 else 1} for i in range(1, 7)})
    dim = (2, 9, 10) if cls is SimpleConvNet else (1, 10, 10)
    nets = [cls(dim, **kw, seed=0, dtype=dtype, backend=bk) for bk in ("numpy", "numba")]
    x = np.random.default_rng(9).standard_normal((1,) + dim).astype(dtype)
    t = np.array([1])
    ga, gb = (net.gradient(x, t) for net in nets)
    for k in ga:
        same(gb[k], ga[k])
    opts = [Adam(), Adam()]
    losses = [net.train_step(x, t, o) for net, o in zip(nets, opts)]
    assert losses[0].tobytes() == losses[1].tobytes()
    for k in nets[0].params:
        same(nets[1].params[k], nets[0].params[k])
