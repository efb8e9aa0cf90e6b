"""MultiLayerNet: the book's ch.6 net with weight decay, dropout and batch norm, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from hostarrays import host

import fastnet
from fastnet import MultiLayerNet
from fastnet.backend import MLPSpec
from fastnet.layers import Dropout

VARIANTS = {
    "plain": {},
    "decay": {"weight_decay_lambda": 0.1},
    "batchnorm": {"use_batchnorm": True},
    "dropout": {"use_dropout": True, "dropout_ration": 0.3},
    "all": {"use_batchnorm": True, "use_dropout": True, "weight_decay_lambda": 0.05},
}


def batch(n=8, d=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


def freeze_dropout(net: MultiLayerNet) -> None:
    """Reseed each dropout layer before every forward pass, so every pass draws the same mask.

    Needed for a gradient check: otherwise each perturbed loss sees a new mask.
    """
    for i, layer in enumerate(net.layers.values()):
        if isinstance(layer, Dropout):
            original = layer.forward

            def forward(x, train_flg=True, layer=layer, original=original, seed=100 + i):
                layer.rng = layer.backend.rng(seed)
                return original(x, train_flg)

            layer.forward = forward


def test_book_names_and_shapes(backend):
    net = MultiLayerNet(784, [100, 50], 10, use_batchnorm=True, use_dropout=True, seed=0)
    assert list(net.layers) == [
        "Affine1", "BatchNorm1", "Activation_function1", "Dropout1",
        "Affine2", "BatchNorm2", "Activation_function2", "Dropout2", "Affine3",
    ]
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {
        "W1": (784, 100), "b1": (100,), "W2": (100, 50), "b2": (50,), "W3": (50, 10), "b3": (10,),
        "gamma1": (100,), "beta1": (100,), "gamma2": (50,), "beta2": (50,),
    }
    assert net.hidden_layer_num == 2 and net.depth == 3
    assert all(backend.owns(v) for v in net.params.values())
    assert net.spec() is None
    plain = MultiLayerNet(784, [100, 50], 10, seed=0)
    spec = plain.spec()
    assert isinstance(spec, MLPSpec) and spec.depth == 3 and spec.params is plain.params


@pytest.mark.parametrize(
    "init, expected",
    [("relu", np.sqrt(2 / 400)), ("He", np.sqrt(2 / 400)), ("sigmoid", np.sqrt(1 / 400)),
     ("xavier", np.sqrt(1 / 400)), (0.05, 0.05)],
)
def test_weight_init_scales(init, expected):
    net = MultiLayerNet(400, [300], 10, weight_init_std=init, seed=0, backend="numpy")
    assert net.params["W1"].std() == pytest.approx(expected, rel=0.02)
    assert not net.params["b1"].any()


def test_bad_arguments():
    with pytest.raises(ValueError, match="weight_init_std"):
        MultiLayerNet(4, [3], 2, weight_init_std="tanh")
    with pytest.raises(ValueError, match="weight_init_std"):
        MultiLayerNet(4, [3], 2, weight_init_std=-1.0)
    with pytest.raises(ValueError, match="hidden_size_list"):
        MultiLayerNet(4, 3, 2)
    with pytest.raises(ValueError, match="hidden size"):
        MultiLayerNet(4, [3, 0], 2)
    with pytest.raises(ValueError, match="dropout_ration"):
        MultiLayerNet(4, [3], 2, use_dropout=True, dropout_ration=1.0)
    with pytest.raises(ValueError, match="weight_decay_lambda"):
        MultiLayerNet(4, [3], 2, weight_decay_lambda=-0.1)
    with pytest.raises(ValueError, match="activation"):
        MultiLayerNet(4, [3], 2, activation="swish")


def test_same_seed_same_start_on_every_backend(backend):
    with fastnet.use_backend("numpy"):
        ref = MultiLayerNet(10, [7, 5], 3, use_batchnorm=True, seed=42)
    net = MultiLayerNet(10, [7, 5], 3, use_batchnorm=True, seed=42, dtype=np.float64)
    for k in ref.params:
        assert np.array_equal(host(net.params[k]), ref.params[k])


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradient_check(backend, activation, variant):
    """Numerical vs backprop gradient for every parameter (the book's gradient_check.py)."""
    net = MultiLayerNet(
        12, [8, 6], 4, activation=activation, weight_init_std=activation, seed=3,
        dtype=np.float64, **VARIANTS[variant],
    )
    freeze_dropout(net)
    x, t = batch()
    x, t = backend.asarray(x), backend.asarray(t)
    numerical = net.numerical_gradient(x, t)
    backprop = net.gradient(x, t)
    assert list(backprop) == list(net.params)
    for key in net.params:
        diff = np.abs(host(backprop[key]) - host(numerical[key]))
        # not 0: the book's loss has +1e-7 inside the log, its backprop ignores it
        assert diff.mean() < 1e-6 and diff.max() < 1e-5, (key, diff.mean(), diff.max())


def test_no_hidden_layer_is_softmax_regression(backend):
    net = MultiLayerNet(12, [], 4, seed=0, dtype=np.float64)
    assert list(net.params) == ["W1", "b1"] and list(net.layers) == ["Affine1"]
    x, t = batch()
    x, t = backend.asarray(x), backend.asarray(t)
    numerical, backprop = net.numerical_gradient(x, t), net.gradient(x, t)
    for key in net.params:
        assert np.abs(host(backprop[key]) - host(numerical[key])).mean() < 1e-6


@pytest.mark.parametrize("variant", ["plain", "decay"])
def test_fused_path_equals_layer_path(backend, variant):
    net = MultiLayerNet(30, [20, 10], 5, seed=4, dtype=np.float64, **VARIANTS[variant])
    x, t = batch(50, 30, 5)
    x, t = backend.asarray(x), backend.asarray(t)
    fused, layered = net.gradient(x, t), net.gradient_layers(x, t)
    for k in fused:
        np.testing.assert_allclose(host(fused[k]), host(layered[k]), rtol=1e-10, atol=1e-14)
    assert float(net.loss(x, t)) == pytest.approx(float(net.layers_loss(x, t, False)), rel=1e-12)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_lowers_the_loss(backend, variant):
    net = MultiLayerNet(12, [16, 16], 4, seed=0, dtype=np.float64, **VARIANTS[variant])
    x, t = batch(64)
    t = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)  # a learnable rule
    x, t = backend.asarray(x), backend.asarray(t)
    before = float(net.loss(x, t, train_flg=True))
    optimizer = fastnet.Adam(lr=0.01)
    batches = backend.asarray(np.arange(64).reshape(4, 16))
    for _ in range(20):
        losses = net.train_batches(x, t, batches, optimizer)
    assert len(losses) == 4
    assert float(net.loss(x, t, train_flg=True)) < before


def test_evaluate_matches_loss_and_accuracy(backend):
    for kwargs in ({}, {"weight_decay_lambda": 0.1}):
        net = MultiLayerNet(12, [8], 4, seed=1, dtype=np.float64, **kwargs)
        x, t = batch(25)
        x, t = backend.asarray(x), backend.asarray(t)
        loss, acc = net.evaluate(x, t, batch_size=7)  # uneven chunks on purpose
        assert loss == pytest.approx(float(net.loss(x, t)), rel=1e-12)
        assert acc == pytest.approx(net.accuracy(x, t))


def test_config_rebuilds_the_architecture():
    net = MultiLayerNet(12, [8, 6], 4, activation="sigmoid", use_batchnorm=True, seed=0)
    twin = MultiLayerNet(**net.config(), seed=0)
    assert twin.config() == net.config()
    assert list(twin.params) == list(net.params) and list(twin.layers) == list(net.layers)
