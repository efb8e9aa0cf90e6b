"""With the real MNIST present: one epoch of the ch.5 net reaches >= 0.90 test accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet import TwoLayerNet
from fastnet.datasets import load_mnist


@pytest.mark.mnist
def test_one_epoch_of_ch5_net(backend, mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # parsed-array cache stays out of $HOME
    (x_train, t_train), (x_test, t_test) = load_mnist(data_dir=mnist_dir, download=False)
    net = TwoLayerNet(784, 50, 10, seed=0)
    x_train, t_train = backend.asarray(x_train, net.dtype), backend.asarray(t_train.astype(np.int64))
    x_test, t_test = backend.asarray(x_test, net.dtype), backend.asarray(t_test.astype(np.int64))
    order = np.random.default_rng(0).permutation(x_train.shape[0])
    lr, batch = 0.1, 100
    for start in range(0, len(order), batch):  # the book's loop: gradient, then update
        idx = backend.asarray(order[start : start + batch])
        grads = net.gradient(x_train[idx], t_train[idx])
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= lr * grads[key]
    assert net.accuracy(x_test, t_test) >= 0.90
