"""The numba step's compiled passes: NumPy's gemm called from a kernel, same bits as numpy.dot.

``blas.py`` finds the ``cblas_?gemm`` of NumPy's bundled OpenBLAS; ``fused.py``
runs a relu net's forward and backward as one call each around it. Both must
give exactly what the call-by-call path (``numpy.dot`` from Python) gives.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnet

pytest.importorskip("numba")
if not fastnet.available_backends()["numba"].available:  # pragma: no cover
    pytest.skip("numba backend unavailable", allow_module_level=True)

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnet import TwoLayerNet
from fastnet.backend import MLPSpec
from fastnet.backend.numba_kernels import blas
from fastnet.backend.numba_kernels._intrinsics import has_clflushopt
from fastnet.backend.numba_kernels.plan import FasterWay
from fastnet.optimizers import SGD, Adam

NB = fastnet.backend.registry._instance("numba")
FOUND = bool(blas.gemm_address("d")) and bool(blas.gemm_address("f"))
needs_gemm = pytest.mark.skipif(
    not FOUND, reason="NumPy's BLAS is not a bundled ILP64 OpenBLAS here: the step calls numpy.dot instead"
)


def same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@needs_gemm
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(2, 70), n=st.integers(2, 70), k=st.integers(2, 300), trans_a=st.booleans(),
       trans_b=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**32 - 1))
def test_gemm_gives_numpy_dots_bits(m, n, k, trans_a, trans_b, dtype, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    got = np.full((m, n), np.nan, dtype)
    blas.product(a, b, got, trans_a, trans_b)
    assert same(got, np.dot(a.T if trans_a else a, b.T if trans_b else b))
    assert blas.matches_dot(np.dtype(dtype).char, trans_a, trans_b, m, n, k)


def test_vector_shapes_are_left_to_numpy():
    # NumPy uses gemv/dot when a side is a vector, so those products keep numpy.dot
    assert not blas.matches_dot("d", False, False, 1, 10, 50)
    assert not blas.matches_dot("d", False, False, 100, 10, 1)


def _plan(net, x):
    return NB._plan(net.spec(), x)


def _twins(dtype, decay=0.0, hidden=50):
    nets = [TwoLayerNet(784, hidden, 10, seed=3, dtype=dtype, backend="numba") for _ in range(2)]
    for net in nets:
        net.weight_decay_lambda = decay
    rng = np.random.default_rng(0)
    x = rng.random((100, 784)).astype(dtype)
    labels = rng.integers(0, 10, 100)
    return nets, x, labels


@needs_gemm
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("decay", [0.0, 0.05])
@pytest.mark.parametrize("onehot", [False, True])
def test_compiled_passes_train_like_the_call_by_call_path(dtype, decay, onehot):
    (fused, calls), x, labels = _twins(dtype, decay)
    t = np.eye(10, dtype=dtype)[labels] if onehot else labels
    plan = _plan(fused, x)
    assert plan.gemm, "a relu 784-50-10 net at batch 100 should take the compiled passes"
    _plan(calls, x).gemm = 0  # the same plan class, numpy.dot from Python
    opt_a, opt_b = SGD(0.1), SGD(0.1)
    for _ in range(30):
        assert same(fused.train_step(x, t, opt_a), calls.train_step(x, t, opt_b))
    for name in fused.params:
        assert same(fused.params[name], calls.params[name]), name
    grads_a, grads_b = fused.gradient(x, t), calls.gradient(x, t)  # fresh arrays, decay included
    for name in grads_a:
        assert same(grads_a[name], grads_b[name]), name


@needs_gemm
def test_other_optimizers_and_deeper_nets_take_the_compiled_passes_exactly():
    rng = np.random.default_rng(1)
    params = {}
    for i, (a, b) in enumerate([(30, 20), (20, 15), (15, 6)], start=1):
        params[f"W{i}"] = rng.standard_normal((a, b)) * 0.3
        params[f"b{i}"] = rng.standard_normal(b) * 0.1
    copy = {k: v.copy() for k, v in params.items()}
    spec, ref = MLPSpec(params, 3, "relu", 0.01), MLPSpec(copy, 3, "relu", 0.01)
    x, t = rng.random((12, 30)), rng.integers(0, 6, 12)
    assert NB._plan(spec, x).gemm
    NB._plan(ref, x).gemm = 0
    opt_a, opt_b = Adam(0.01), Adam(0.01)
    opt_a.backend = opt_b.backend = NB
    for _ in range(5):
        assert same(NB.mlp_train_step(spec, x, t, opt_a), NB.mlp_train_step(ref, x, t, opt_b))
    for name in params:
        assert same(params[name], copy[name]), name


@needs_gemm
def test_strided_batches_and_flushed_gradients_change_no_bits():
    (fused, calls), x, labels = _twins(np.float64, hidden=40)
    wide = np.zeros((100, 2 * 784))
    wide[:, ::2] = x
    strided = wide[:, ::2]  # not C-contiguous: the plan calls numpy.dot for this batch
    plan = _plan(fused, x)
    assert plan.gemm and _plan(fused, strided) is plan
    assert plan.flush_hidden is not None or not has_clflushopt()
    opt_a, opt_b = SGD(0.1), SGD(0.1)
    _plan(calls, x).gemm = 0
    for step in range(6):
        xa = strided if step % 2 else x
        if plan.flush_hidden is not None:  # flush the hidden gradients first on some steps
            plan.flush_hidden.cost = [2.0, 1.0] if step % 3 else [1.0, 2.0]
        assert same(fused.train_step(xa, labels, opt_a), calls.train_step(x, labels, opt_b))
    for name in fused.params:
        assert same(fused.params[name], calls.params[name]), name


def test_sigmoid_nets_keep_the_call_by_call_path():
    net = TwoLayerNet(20, 8, 3, seed=0, backend="numba", activation="sigmoid")
    x = np.random.default_rng(0).random((5, 20))
    assert _plan(net, x).gemm == 0


def test_faster_way_keeps_the_faster_and_probes_the_other():
    chooser = FasterWay()
    picks = []
    for _ in range(2 * FasterWay.PROBE_EVERY):
        way = chooser.pick()
        picks.append(way)
        chooser.took(1e-6 if way else 3e-6)  # the second way is faster
    assert picks[:2] == [False, True]  # each way tried once first
    assert picks.count(False) == 3  # then only probes of the slower way
    assert chooser.cost[1] < chooser.cost[0]
    for _ in range(FasterWay.PROBE_EVERY):  # the host changes: now the first way is faster
        chooser.took(9e-6) if chooser.pick() else chooser.took(1e-6)
    assert chooser.pick() is False


def test_a_batch_of_the_wrong_width_gets_numpys_error_not_a_wild_read():
    net = TwoLayerNet(20, 8, 3, seed=0, backend="numba")
    x = np.random.default_rng(0).random((5, 20))
    spec = net.spec()
    NB.mlp_loss(spec, x, np.zeros(5, np.int64))  # builds the plan for batch 5
    with pytest.raises(ValueError):
        NB.mlp_loss(spec, np.random.default_rng(1).random((5, 30)), np.zeros(5, np.int64))


def test_frozen_parameters_and_reshaped_weights_are_handled_not_misread():
    rng = np.random.default_rng(2)
    net, ref = (TwoLayerNet(30, 12, 5, seed=1, backend=name) for name in ("numba", "numpy"))
    x, t = rng.random((8, 30)), rng.integers(0, 5, 8)
    for params in (net.params, ref.params):
        for value in params.values():
            value.flags.writeable = False  # read-only parameters: loss and gradient still work
    assert same(net.loss(x, t), ref.loss(x, t))
    for name, grad in net.gradient(x, t).items():
        assert same(grad, ref.gradient(x, t)[name]), name
    net.params["W2"].flags.writeable = True  # a plan built for these arrays, then one flag changes
    net.params["W2"].shape = (5, 12)  # the same array, another shape: no plan may keep trusting it
    with pytest.raises(ValueError):
        net.loss(x, t)


@needs_gemm
def test_a_parameter_frozen_after_the_plan_was_built_falls_back_to_the_calls():
    rng = np.random.default_rng(3)
    net, ref = (TwoLayerNet(30, 12, 5, seed=1, backend=name) for name in ("numba", "numpy"))
    x, t = rng.random((8, 30)), rng.integers(0, 5, 8)
    assert same(net.loss(x, t), ref.loss(x, t))
    plan = _plan(net, x)
    assert plan.gemm  # built for writable parameters: the compiled passes
    net.params["W1"].flags.writeable = False
    ref.params["W1"].flags.writeable = False
    assert same(net.loss(x, t), ref.loss(x, t))
    grads, want = net.gradient(x, t), ref.gradient(x, t)
    for name in grads:
        assert same(grads[name], want[name]), name
    assert plan.gemm == 0  # the compiled pass could not take a read-only W1; the calls did
