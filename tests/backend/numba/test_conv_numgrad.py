"""The Numba backend's numerical gradient of conv nets: SimpleConvNet's incremental kernel (true losses,
the loop's gradient), any other conv net from the layer holding each entry (the loop's bits)."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet import SimpleConvNet
from fastnet.layers import Sigmoid

if not fastnet.available_backends()["numba"].available:
    pytest.skip("numba unavailable", allow_module_level=True)

from fastnet.backend.numba.conv_numgrad import simple_convnet_losses

H = 1e-4


def small(backend, **kw):
    conv = {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1}
    conv.update(kw.pop("conv", {}))
    return SimpleConvNet((2, 9, 10), conv, hidden_size=8, output_size=4, weight_init_std=0.3, seed=0,
                         backend=backend, **kw)


def data(net, n=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + net.input_dim), rng.integers(0, net.output_size, n)


@pytest.mark.parametrize("conv", [{}, {"stride": 2, "pad": 0}], ids=["pad1", "stride2"])
def test_gradient_equals_the_numpy_loop(conv):
    a, b = small("numpy", conv=conv), small("numba", conv=conv)
    x, t = data(a)
    want, got = a.numerical_gradient(x, t), b.numerical_gradient(x, t)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-9, err_msg=k)
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape


def check_losses_against_plain_passes(net, x, t, per_array, seed=2):
    """f(p + h) and f(p - h) of sampled entries, each against the loss of the whole perturbed net."""
    plus, minus = simple_convnet_losses(net.params, net.layers["Conv1"].stride, net.layers["Conv1"].pad,
                                        x, t, H)
    ref = SimpleConvNet(**net.config(), backend="numpy")  # a plain forward pass, in float64
    rng = np.random.default_rng(seed)
    for key, p in net.params.items():
        for idx in rng.choice(p.size, size=min(per_array, p.size), replace=False):
            for sign, table in ((1, plus), (-1, minus)):
                for k, q in net.params.items():
                    ref.params[k][...] = q
                ref.params[key].reshape(-1)[idx] += sign * H
                want = float(ref.loss(x, t))
                got = table[key].reshape(-1)[idx]
                assert abs(got - want) <= 1e-12 * abs(want), (key, idx, sign, got, want)


def test_losses_are_the_perturbed_nets_losses():
    net = small("numba")
    x, t = data(net)
    check_losses_against_plain_passes(net, x, t, per_array=12)


@pytest.mark.slow
def test_losses_of_the_books_net_at_batch_10():
    net = SimpleConvNet(seed=0, backend="numba")
    rng = np.random.default_rng(3)
    x, t = rng.random((10, 1, 28, 28)), rng.integers(0, 10, 10)
    check_losses_against_plain_passes(net, x, t, per_array=6)


def test_one_hot_targets_and_float32():
    net = small("numba", dtype=np.float32)
    x, t = data(net)
    onehot = np.eye(4)[t]
    g1, g2 = net.numerical_gradient(x, t), net.numerical_gradient(x, onehot)
    for k in g1:
        assert g1[k].dtype == np.float32
        assert np.array_equal(g1[k], g2[k])
    backprop = net.gradient(x, t)
    for k in g1:
        np.testing.assert_allclose(g1[k], backprop[k], rtol=1e-2, atol=1e-4, err_msg=k)


def test_a_changed_net_runs_the_loop():
    a, b = small("numpy"), small("numba")
    for net in (a, b):
        net.layers["Relu2"] = Sigmoid(backend=net.backend)
    x, t = data(a)
    want, got = a.numerical_gradient(x, t), b.numerical_gradient(x, t)
    for k in want:
        assert np.array_equal(got[k], want[k]), k  # the same loop on the same bits


def small_deep(backend, dtype=np.float64):
    convs = {f"conv_param_{i}": {"filter_num": 2, "filter_size": 3, "pad": 2 if i == 4 else 1, "stride": 1}
             for i in range(1, 7)}
    return fastnet.DeepConvNet((1, 10, 10), **convs, hidden_size=5, output_size=3, seed=0, dtype=dtype,
                               backend=backend)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("one_hot", [False, True], ids=["labels", "one-hot"])
def test_deep_convnet_gives_the_numpy_loops_bits(dtype, one_hot):
    """Each loss from the layer holding the moved entry: the book's loop's result, bit for bit."""
    a, b = small_deep("numpy", dtype), small_deep("numba", dtype)
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((3, 1, 10, 10)).astype(dtype), np.array([2, 0, 1])
    if one_hot:
        t = np.eye(3, dtype=dtype)[t]
    want, got = a.numerical_gradient(x, t), b.numerical_gradient(x, t)
    for k in want:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k


def test_deep_convnet_recomputes_only_from_the_layer_holding_each_entry(monkeypatch):
    net = small_deep("numba")
    backend, calls = net.backend, []
    forward = backend.conv_activation_forward

    def counted(x, W, *args, **kw):
        calls.append(W is net.params["W1"])
        return forward(x, W, *args, **kw)

    monkeypatch.setattr(backend, "conv_activation_forward", counted)
    x, t = data(net)
    net.numerical_gradient(x, t)
    first = net.params["W1"].size + net.params["b1"].size
    assert sum(calls) == 1 + 2 * first  # one pass for the steps' inputs, then W1's and b1's own losses
    assert len(calls) > sum(calls)  # the later convolutions ran for their own entries
