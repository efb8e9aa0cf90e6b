"""No input gives a silently wrong result or an internal error: the same answer or the same
clear error on every CPU backend."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastnet
from fastnet import MultiLayerNet, TwoLayerNet


def test_nan_input_stays_nan_in_the_numerical_gradient(cpu_backend):
    net = TwoLayerNet(2, 3, 2, seed=0)
    grad = net.numerical_gradient(np.array([[1.0, np.nan], [0.5, -1.0]]), np.array([0, 1]))
    assert np.isnan(grad["b2"]).all()


def test_a_perturbation_that_moves_scores_by_hundreds_gives_numpys_zero(cpu_backend):
    """x = 8e6: h moves each score by ~800, past where exp underflows; the loss does not change."""
    for net in (MultiLayerNet(1, [], 2, seed=0), TwoLayerNet(1, 3, 2, seed=0)):
        grad = net.numerical_gradient(np.array([[8e6]]), np.array([0]))
        assert np.array_equal(grad["W1"], np.zeros_like(grad["W1"]))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_matrix_inputs_are_plain_arrays(cpu_backend):
    rng = np.random.default_rng(0)
    net = TwoLayerNet(4, 5, 3, seed=0, weight_init_std=1.0)
    x, t = rng.random((8, 4)), rng.integers(0, 3, 8)
    assert net.accuracy(np.asmatrix(x), t) == net.accuracy(x, t)
    assert net.loss(np.asmatrix(x), t) == net.loss(x, t)


def test_threads_sharing_one_net_get_the_single_threaded_gradient(cpu_backend):
    rng = np.random.default_rng(1)
    net = TwoLayerNet(6, 4, 3, seed=0, weight_init_std=1.0)
    x, t = rng.random((5, 6)), rng.integers(0, 3, 5)
    before = {k: v.copy() for k, v in net.params.items()}
    want = net.numerical_gradient(x, t)
    results = []

    def work():
        results.append(net.numerical_gradient(x, t))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for got in results:
        for k in want:
            assert np.array_equal(got[k], want[k]), k
    for k in before:
        assert np.array_equal(net.params[k], before[k]), k


def test_threads_leave_blas_threads_as_they_found_them(cpu_backend):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    start = [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]
    net = TwoLayerNet(6, 4, 3, seed=0)
    x, t = np.random.default_rng(2).random((5, 6)), np.array([0, 1, 2, 0, 1])
    threads = [threading.Thread(target=net.numerical_gradient, args=(x, t)) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    after = [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]
    assert after == start


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda p: p.update(W1=np.zeros((4, 7))), ValueError, r"params\['b1'\] must have shape \(7,\)"),
        (lambda p: p.pop("b2"), ValueError, r"params has no 'b2'"),
        (lambda p: p.update(W1=[[0.0] * 5] * 4), TypeError, r"params\['W1'\] must be a"),
        (lambda p: p.update(b2=np.zeros((1, 3))), ValueError, r"params\['b2'\] must have shape \(3,\)"),
        (lambda p: p.update(W2=np.zeros((5, 3), np.int64)), TypeError, r"params\['W2'\] must be floating"),
    ],
)
def test_replaced_parameters_are_named(cpu_backend, change, error, match):
    net = TwoLayerNet(4, 5, 3, seed=0)
    change(net.params)
    x, t = np.zeros((2, 4)), np.array([0, 1])
    for call in (lambda: net.loss(x, t), lambda: net.numerical_gradient(x, t),
                 lambda: net.train_step(x, t, fastnet.SGD(0.1))):
        with pytest.raises(error, match=match):
            call()


@pytest.mark.parametrize("h", [0, -1e-4, float("nan"), "1e-4", float("inf")])
def test_bad_h_is_refused(cpu_backend, h):
    net = TwoLayerNet(4, 5, 3, seed=0)
    with pytest.raises(ValueError, match="h must be"):
        net.numerical_gradient(np.zeros((2, 4)), np.array([0, 1]), h=h)


def test_empty_batches_are_refused(cpu_backend):
    net = TwoLayerNet(4, 5, 3, seed=0)
    x, t = np.zeros((6, 4)), np.zeros(6, np.int64)
    for batches in ([np.array([], np.int64)], np.zeros((3, 0), np.int64)):
        with pytest.raises(ValueError, match="empty|0 indices"):
            net.train_batches(x, t, batches, fastnet.SGD(0.1))


def test_read_only_parameters_are_refused_before_training(cpu_backend):
    net = TwoLayerNet(4, 5, 3, seed=0)
    net.params["W1"].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['W1'\] is read-only"):
        net.train_step(np.zeros((2, 4)), np.array([0, 1]), fastnet.SGD(0.1))
    with pytest.raises(ValueError, match=r"params\['W1'\] is read-only"):
        fastnet.SGD(0.1).update(net.params, {k: np.zeros_like(v) for k, v in net.params.items()})
