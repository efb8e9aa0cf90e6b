"""The Numba backend's ``mlp_numerical_gradient_part``: only its slice's work, the whole's bits.

Every part, whatever (name, start, stop), must equal the same entries of
``mlp_numerical_gradient`` bit for bit: the distributed gradient assembles
parts and promises the local result.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

import fastnet

numba = pytest.importorskip("numba")
if not fastnet.available_backends()["numba"].available:  # pragma: no cover
    pytest.skip("numba backend unavailable", allow_module_level=True)

NB = fastnet.backend.registry.instance("numba")


def _inputs(rng: np.random.Generator, batch: int, n_in: int, sparse: bool) -> np.ndarray:
    x = rng.random((batch, n_in))
    if sparse:  # like MNIST: most pixels exactly 0, whole columns among them
        x[rng.random((batch, n_in)) < 0.7] = 0.0
        x[:, rng.random(n_in) < 0.2] = 0.0
    return x


def _slices(rng: np.random.Generator, spec, count: int) -> list[tuple[str, int, int]]:
    """Random ranges, plus the awkward ones: single entries, whole parameters,
    ranges starting or ending mid-row, exact rows, empty ones."""
    out = []
    for name in spec.names():
        p = spec.params[name]
        size = p.size
        width = p.shape[-1]
        out += [(name, 0, size), (name, 0, 1), (name, size - 1, size), (name, 3, 3)]
        if p.ndim == 2 and p.shape[0] > 2:
            out += [(name, width, 2 * width), (name, width + 1, 2 * width - 1),
                    (name, width - 1, 2 * width + 1), (name, width + 2, 3 * width)]
        for _ in range(count):
            a, b = sorted(int(v) for v in rng.integers(0, size + 1, 2))
            out.append((name, a, b))
            i = int(rng.integers(0, size))
            out.append((name, i, i + 1))
    return out


def _check(net, x, t, seed: int, count: int = 6) -> None:
    spec = net.spec()
    whole = NB.mlp_numerical_gradient(spec, x, t)
    rng = np.random.default_rng(seed)
    for name, start, stop in _slices(rng, spec, count):
        part = NB.mlp_numerical_gradient_part(spec, x, t, name, start, stop)
        ref = whole[name].reshape(-1)[start:stop]
        assert part.dtype == ref.dtype, (name, start, stop)
        assert np.array_equal(part, ref), (name, start, stop)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_two_layer_parts_are_the_whole_bitwise(activation, sparse, dtype):
    rng = np.random.default_rng(1)
    net = fastnet.TwoLayerNet(37, 13, 10, weight_init_std=0.5, seed=3, dtype=dtype, activation=activation)
    x = _inputs(rng, 24, 37, sparse).astype(dtype)
    t = rng.integers(0, 10, 24)
    with fastnet.use_backend("numba"):
        _check(net, x, t, seed=5)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_two_layer_parts_with_weight_decay_and_one_hot_labels(activation):
    rng = np.random.default_rng(2)
    net = fastnet.MultiLayerNet(29, [11], 7, activation=activation, weight_init_std=0.4,
                                weight_decay_lambda=0.1)
    x = _inputs(rng, 16, 29, True)
    t = np.eye(7)[rng.integers(0, 7, 16)]
    with fastnet.use_backend("numba"):
        _check(net, x, t, seed=6)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("sparse", [False, True])
def test_depth_three_parts_are_the_whole_bitwise(activation, sparse):
    rng = np.random.default_rng(3)
    net = fastnet.MultiLayerNet(23, [9, 8], 6, activation=activation, weight_init_std=0.5,
                                weight_decay_lambda=0.05)
    x = _inputs(rng, 14, 23, sparse)
    t = rng.integers(0, 6, 14)
    with fastnet.use_backend("numba"):
        _check(net, x, t, seed=7, count=4)


def test_depth_four_parts_are_the_whole_bitwise():
    rng = np.random.default_rng(4)
    net = fastnet.MultiLayerNet(17, [7, 6, 5], 4, weight_init_std=0.5)
    x = _inputs(rng, 9, 17, True)
    t = rng.integers(0, 4, 9)
    with fastnet.use_backend("numba"):
        _check(net, x, t, seed=8, count=2)


def test_mnist_sized_parts_cover_the_whole():
    """784-50-10 on MNIST-like input: eight W1 shards of whole rows and odd ends
    assemble into the whole gradient."""
    rng = np.random.default_rng(5)
    net = fastnet.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float64)
    x = _inputs(rng, 20, 784, True)
    t = rng.integers(0, 10, 20)
    spec = net.spec()
    whole = NB.mlp_numerical_gradient(spec, x, t)
    size = whole["W1"].size
    cuts = [0, 50 * 98, 50 * 98 + 17, size // 3, size // 2 + 1, size - 49, size]
    got = np.concatenate([NB.mlp_numerical_gradient_part(spec, x, t, "W1", a, b)
                          for a, b in pairwise(cuts)])
    assert np.array_equal(got, whole["W1"].reshape(-1))
