"""The book's ch.4-ch.8 scripts, as a user runs them with only the imports rewritten.

Each test uses exactly the names and call forms one of the book's scripts uses
(module map: common.functions -> fastnet.functions, common.gradient ->
fastnet.gradient, common.optimizer -> fastnet.optimizers, common.util ->
fastnet.util, common.multi_layer_net(_extend) and common.trainer -> fastnet,
dataset.mnist -> fastnet.datasets), on less data and fewer iterations, and
checks the outcome the book reports.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from fastnet import MultiLayerNet, MultiLayerNetExtend, Trainer, TwoLayerNet
from fastnet.datasets import load_mnist
from fastnet.functions import cross_entropy_error, relu, sigmoid, softmax
from fastnet.gradient import numerical_gradient
from fastnet.optimizers import SGD, AdaGrad, Adam, Momentum
from fastnet.util import shuffle_dataset, smooth_curve

needs_mnist = pytest.mark.skipif(not os.environ.get("FASTNET_DATA"),
                                 reason="needs the real MNIST: set FASTNET_DATA to a folder with the IDX .gz files")


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(normalize=True, download=False)


# --------------------------------------------------------------- ch.4, ch.5
def test_ch4_simple_net_numerical_gradient():
    class SimpleNet:  # the book's gradient_simplenet.py shape of class
        def __init__(self):
            self.W = np.random.randn(2, 3)

        def predict(self, x):
            return np.dot(x, self.W)

        def loss(self, x, t):
            return cross_entropy_error(softmax(self.predict(x)), t)

    np.random.seed(0)
    net = SimpleNet()
    x, t = np.array([0.6, 0.9]), np.array([0, 0, 1])
    dW = numerical_gradient(lambda w: net.loss(x, t), net.W)
    y = softmax(net.predict(x))
    # softmax-with-loss's analytic gradient; the book's +1e-7 inside the log moves it by a few 1e-6
    np.testing.assert_allclose(dW, np.outer(x, y - t), rtol=1e-4)


@needs_mnist
def test_ch5_gradient_check(mnist):
    (x_train, t_train), _ = load_mnist(normalize=True, one_hot_label=True, download=False)
    network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
    x_batch, t_batch = x_train[:3], t_train[:3]
    grad_numerical = network.numerical_gradient(x_batch, t_batch)
    grad_backprop = network.gradient(x_batch, t_batch)
    for key in grad_numerical.keys():
        diff = np.average(np.abs(grad_backprop[key] - grad_numerical[key]))
        assert diff < 1e-6, key  # the book prints 1e-10 to 1e-13


# ---------------------------------------------------------------------- ch.6
def _book_updates(name, params, grads, state, it):
    """The book's update rules on plain floats, written out here."""
    for k in params:
        g = grads[k]
        if name == "SGD":
            params[k] -= 0.95 * g
        elif name == "Momentum":
            state[k] = 0.9 * state.get(k, 0.0) - 0.1 * g
            params[k] += state[k]
        elif name == "AdaGrad":
            state[k] = state.get(k, 0.0) + g * g
            params[k] -= 1.5 * g / (math.sqrt(state[k]) + 1e-7)


def test_optimizer_compare_naive():
    def df(x, y):
        return x / 10.0, 2.0 * y

    optimizers = {"SGD": SGD(lr=0.95), "Momentum": Momentum(lr=0.1), "AdaGrad": AdaGrad(lr=1.5), "Adam": Adam(lr=0.3)}
    for key, optimizer in optimizers.items():
        params = {"x": -7.0, "y": 2.0}
        grads = {"x": 0, "y": 0}
        mine, state = {"x": -7.0, "y": 2.0}, {}
        x_history, y_history = [], []
        for i in range(30):
            x_history.append(params["x"])
            y_history.append(params["y"])
            grads["x"], grads["y"] = df(params["x"], params["y"])
            optimizer.update(params, grads)
            if key != "Adam":
                _book_updates(key, mine, dict(zip("xy", df(mine["x"], mine["y"]))), state, i)
                assert params == pytest.approx(mine, rel=1e-14, abs=1e-300), (key, i)
        assert abs(params["x"]) < 7.0 and abs(params["y"]) < 2.0, key  # every path heads for the minimum
        assert len(x_history) == 30


@needs_mnist
def test_optimizer_compare_mnist(mnist):
    (x_train, t_train), _ = mnist
    np.random.seed(0)
    train_size, batch_size, max_iterations = x_train.shape[0], 128, 150
    optimizers = {"SGD": SGD(), "Momentum": Momentum(), "AdaGrad": AdaGrad(), "Adam": Adam()}
    networks, train_loss = {}, {}
    for key in optimizers.keys():
        networks[key] = MultiLayerNet(input_size=784, hidden_size_list=[100, 100, 100, 100], output_size=10)
        train_loss[key] = []
    for i in range(max_iterations):
        batch_mask = np.random.choice(train_size, batch_size)
        x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
        for key in optimizers.keys():
            grads = networks[key].gradient(x_batch, t_batch)
            optimizers[key].update(networks[key].params, grads)
            train_loss[key].append(networks[key].loss(x_batch, t_batch))
    final = {key: smooth_curve(np.array(train_loss[key]))[-20:].mean() for key in optimizers}
    for key in ("Momentum", "AdaGrad", "Adam"):  # the book's figure: plain SGD is the slowest
        assert final[key] < final["SGD"], final


def test_weight_init_activation_histogram():
    def spread(init, activation):
        np.random.seed(0)
        x = np.random.randn(1000, 100)
        for _ in range(5):
            w = np.random.randn(100, 100) * init
            x = activation(np.dot(x, w))
        return x

    std1, small, xavier = (spread(s, sigmoid) for s in (1.0, 0.01, 1 / np.sqrt(100)))
    assert np.mean((std1 < 0.1) | (std1 > 0.9)) > 0.5  # std 1: activations pile at 0 and 1
    assert np.ptp(small) < 0.1 and abs(small.mean() - 0.5) < 0.02  # std 0.01: all near 0.5
    assert 0.1 < xavier.std() and np.mean((xavier < 0.1) | (xavier > 0.9)) < 0.1  # Xavier: spread out
    he = spread(np.sqrt(2 / 100), relu)
    assert (he > 0).mean() > 0.3 and he.std() > 0.1  # He with ReLU keeps the signal alive


@needs_mnist
def test_weight_init_compare(mnist):
    (x_train, t_train), _ = mnist
    np.random.seed(0)
    weight_init_types = {"std=0.01": 0.01, "Xavier": "sigmoid", "He": "relu"}
    optimizer = SGD(lr=0.01)
    networks, train_loss = {}, {}
    for key, weight_type in weight_init_types.items():
        networks[key] = MultiLayerNet(input_size=784, hidden_size_list=[100, 100, 100, 100], output_size=10,
                                      weight_init_std=weight_type)
        train_loss[key] = []
    for i in range(300):
        batch_mask = np.random.choice(x_train.shape[0], 128)
        x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
        for key in weight_init_types.keys():
            grads = networks[key].gradient(x_batch, t_batch)
            optimizer.update(networks[key].params, grads)
            train_loss[key].append(networks[key].loss(x_batch, t_batch))
    last = {key: np.mean(train_loss[key][-30:]) for key in weight_init_types}
    assert last["std=0.01"] > 2.2  # the book: std 0.01 does not learn at all
    assert last["He"] < last["Xavier"] < 2.0  # He learns fastest, Xavier too


@needs_mnist
def test_batch_norm_test(mnist):
    (x_train, t_train), _ = mnist
    x_train, t_train = x_train[:3000], t_train[:3000]
    max_epochs, train_size, batch_size, learning_rate = 8, x_train.shape[0], 100, 0.01

    def __train(weight_init_std):
        bn_network = MultiLayerNetExtend(input_size=784, hidden_size_list=[100, 100, 100, 100, 100], output_size=10,
                                         weight_init_std=weight_init_std, use_batchnorm=True)
        network = MultiLayerNetExtend(input_size=784, hidden_size_list=[100, 100, 100, 100, 100], output_size=10,
                                      weight_init_std=weight_init_std)
        optimizer = SGD(lr=learning_rate)
        train_acc_list, bn_train_acc_list = [], []
        iter_per_epoch = max(train_size / batch_size, 1)
        epoch_cnt = 0
        for i in range(1000000000):
            batch_mask = np.random.choice(train_size, batch_size)
            x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
            for _network in (bn_network, network):
                grads = _network.gradient(x_batch, t_batch)
                optimizer.update(_network.params, grads)
            if i % iter_per_epoch == 0:
                train_acc_list.append(network.accuracy(x_train, t_train))
                bn_train_acc_list.append(bn_network.accuracy(x_train, t_train))
                epoch_cnt += 1
                if epoch_cnt >= max_epochs:
                    break
        return train_acc_list, bn_train_acc_list

    np.random.seed(0)
    for w in np.logspace(0, -4, num=16)[[4, 8]]:  # two of the book's 16 scales
        train_acc_list, bn_train_acc_list = __train(w)
        assert len(bn_train_acc_list) == max_epochs
        assert bn_train_acc_list[-1] > train_acc_list[-1] + 0.1, w  # batch norm learns faster


@needs_mnist
def test_batch_norm_gradient_check():
    (x_train, t_train), _ = load_mnist(normalize=True, one_hot_label=True, download=False)
    network = MultiLayerNetExtend(input_size=784, hidden_size_list=[10, 10], output_size=10, use_batchnorm=True)
    x_batch, t_batch = x_train[:1], t_train[:1]
    grad_backprop = network.gradient(x_batch, t_batch)
    grad_numerical = network.numerical_gradient(x_batch, t_batch)
    assert set(grad_backprop) == set(grad_numerical) >= {"gamma1", "beta1", "gamma2", "beta2"}
    for key in grad_numerical.keys():
        if key == "beta2":
            # One sample: batch norm outputs beta (0 at the start), right on ReLU's kink. Backprop takes
            # the book's slope 0 there; the central difference averages 0 and 1. The book's script too.
            assert not grad_backprop[key].any() and grad_numerical[key].any()
            continue
        diff = np.average(np.abs(grad_backprop[key] - grad_numerical[key]))
        assert diff < 1e-6, (key, diff)
    x_batch, t_batch = x_train[:3], t_train[:3]  # away from that corner every parameter agrees
    grad_backprop = network.gradient(x_batch, t_batch)
    grad_numerical = network.numerical_gradient(x_batch, t_batch)
    for key in grad_numerical.keys():
        assert np.average(np.abs(grad_backprop[key] - grad_numerical[key])) < 1e-5, key


def _overfit_gap(mnist, weight_decay_lambda, epochs):
    (x_train, t_train), (x_test, t_test) = mnist
    x_train, t_train = x_train[:300], t_train[:300]
    x_test, t_test = x_test[:1000], t_test[:1000]
    np.random.seed(0)
    network = MultiLayerNet(input_size=784, hidden_size_list=[100, 100, 100, 100, 100, 100], output_size=10,
                            weight_decay_lambda=weight_decay_lambda)
    optimizer = SGD(lr=0.01)
    train_size, batch_size = x_train.shape[0], 100
    iter_per_epoch = max(train_size / batch_size, 1)
    train_acc_list, test_acc_list = [], []
    epoch_cnt = 0
    for i in range(1000000000):
        batch_mask = np.random.choice(train_size, batch_size)
        grads = network.gradient(x_train[batch_mask], t_train[batch_mask])
        optimizer.update(network.params, grads)
        if i % iter_per_epoch == 0:
            train_acc_list.append(network.accuracy(x_train, t_train))
            test_acc_list.append(network.accuracy(x_test, t_test))
            epoch_cnt += 1
            if epoch_cnt >= epochs:
                break
    return train_acc_list[-1] - test_acc_list[-1], train_acc_list[-1]


@needs_mnist
@pytest.mark.slow
def test_overfit_weight_decay(mnist):
    gap, train_acc = _overfit_gap(mnist, 0, 120)
    decay_gap, decay_train_acc = _overfit_gap(mnist, 0.1, 120)
    assert train_acc > 0.9  # 300 samples: the plain net overfits
    assert decay_gap < gap and decay_train_acc < train_acc  # the book: weight decay narrows the gap


@needs_mnist
def test_overfit_dropout(mnist, capsys):
    (x_train, t_train), (x_test, t_test) = mnist
    x_train, t_train, x_test, t_test = x_train[:300], t_train[:300], x_test[:500], t_test[:500]
    np.random.seed(0)
    network = MultiLayerNetExtend(input_size=784, hidden_size_list=[100, 100, 100, 100, 100, 100],
                                  output_size=10, use_dropout=True, dropout_ration=0.2)
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=5, mini_batch_size=100,
                      optimizer="sgd", optimizer_param={"lr": 0.01}, verbose=True)
    trainer.train()
    train_acc_list, test_acc_list = trainer.train_acc_list, trainer.test_acc_list
    assert len(train_acc_list) == len(test_acc_list) == 5
    assert all(0 <= a <= 1 for a in train_acc_list + test_acc_list)
    out = capsys.readouterr().out
    assert "train loss:" in out and "=== epoch:" in out and "test acc:" in out  # the book's printing


@needs_mnist
def test_hyperparameter_optimization(mnist):
    (x_train, t_train), _ = mnist
    np.random.seed(0)
    x_train, t_train = x_train[:500], t_train[:500]
    validation_rate = 0.20
    validation_num = int(x_train.shape[0] * validation_rate)
    x_train, t_train = shuffle_dataset(x_train, t_train)
    x_val, t_val = x_train[:validation_num], t_train[:validation_num]
    x_train, t_train = x_train[validation_num:], t_train[validation_num:]

    def __train(lr, weight_decay, epocs=50):
        network = MultiLayerNet(input_size=784, hidden_size_list=[100, 100, 100, 100, 100, 100],
                                output_size=10, weight_decay_lambda=weight_decay)
        trainer = Trainer(network, x_train, t_train, x_val, t_val, epochs=epocs, mini_batch_size=100,
                          optimizer="sgd", optimizer_param={"lr": lr}, verbose=False)
        trainer.train()
        return trainer.test_acc_list, trainer.train_acc_list

    results_val = {}
    for lr in (1e-2, 1e-5):  # one rate from each end of the book's range 10^U(-6, -2)
        weight_decay = 10 ** np.random.uniform(-8, -4)
        val_acc_list, train_acc_list = __train(lr, weight_decay)
        assert len(val_acc_list) == len(train_acc_list) == 50
        results_val[lr] = val_acc_list[-1]
    assert results_val[1e-2] > 0.5 > 0.2 > results_val[1e-5]  # the book's picture: only large rates learn


# ---------------------------------------------------------------- ch.7, ch.8
def test_ch7_gradient_check(capsys):
    """ch07/gradient_check.py as the book writes it: one 10x10 image, its label as a (1, 1) column."""
    from fastnet import SimpleConvNet

    np.random.seed(0)
    network = SimpleConvNet(input_dim=(1, 10, 10),
                            conv_param={"filter_num": 10, "filter_size": 3, "pad": 0, "stride": 1},
                            hidden_size=10, output_size=10, weight_init_std=0.01)
    X = np.random.rand(100).reshape((1, 1, 10, 10))
    T = np.array([1]).reshape((1, 1))
    grad_num = network.numerical_gradient(X, T)
    grad = network.gradient(X, T)
    for key, val in grad_num.items():
        print(key, np.abs(grad_num[key] - grad[key]).mean())
    printed = capsys.readouterr().out.split("\n")
    assert [line.split()[0] for line in printed if line] == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert all(float(line.split()[1]) < 1e-3 for line in printed if line)  # the book prints 1e-5 .. 1e-10


@needs_mnist
def test_ch7_train_convnet(tmp_path, monkeypatch):
    """ch07/train_convnet.py with the data cut as the book suggests, two epochs; the plot saved to a file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastnet import SimpleConvNet

    monkeypatch.chdir(tmp_path)
    (x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)
    x_train, t_train = x_train[:3000], t_train[:3000]
    x_test, t_test = x_test[:300], t_test[:300]
    max_epochs = 2
    network = SimpleConvNet(input_dim=(1, 28, 28),
                            conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
                            hidden_size=100, output_size=10, weight_init_std=0.01)
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=max_epochs, mini_batch_size=100,
                      optimizer="Adam", optimizer_param={"lr": 0.001}, evaluate_sample_num_per_epoch=1000,
                      verbose=False)
    trainer.train()
    network.save_params("params.pkl")
    print("Saved Network Parameters!")
    x = np.arange(max_epochs)
    plt.plot(x, trainer.train_acc_list, marker="o", label="train", markevery=2)
    plt.plot(x, trainer.test_acc_list, marker="s", label="test", markevery=2)
    plt.savefig("accuracy.png")
    assert trainer.test_acc_list[-1] > 0.8
    again = SimpleConvNet()
    again.load_params("params.pkl")
    np.testing.assert_array_equal(again.predict(x_test[:5]), network.predict(x_test[:5]))


@needs_mnist
def test_ch8_train_deepnet(tmp_path, monkeypatch):
    """ch08/train_deepnet.py on 200 images for one epoch (the book trains 20 on all of them)."""
    from fastnet import DeepConvNet

    monkeypatch.chdir(tmp_path)
    (x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)
    network = DeepConvNet()
    trainer = Trainer(network, x_train[:200], t_train[:200], x_test[:100], t_test[:100], epochs=1,
                      mini_batch_size=100, optimizer="Adam", optimizer_param={"lr": 0.001},
                      evaluate_sample_num_per_epoch=1000, verbose=False)
    trainer.train()
    network.save_params("deep_convnet_params.pkl")
    assert len(trainer.train_loss_list) == 2 and all(np.isfinite(trainer.train_loss_list))
    again = DeepConvNet().load_params("deep_convnet_params.pkl")
    for key, value in network.params.items():
        np.testing.assert_array_equal(again.params[key], value)


def test_the_books_pretrained_pickle_is_refused(tmp_path):
    """ch08's pretrained deep_convnet_params.pkl is a pickle: refused with a reason, never unpickled."""
    import pickle

    from fastnet import DeepConvNet
    from fastnet.io import ModelFileError

    path = tmp_path / "deep_convnet_params.pkl"
    path.write_bytes(pickle.dumps({"W1": np.zeros(3)}))
    with pytest.raises(ModelFileError, match="pickle"):
        DeepConvNet().load_params(path)
