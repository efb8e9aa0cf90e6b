"""Optimizers (ch.6): the book's update formulas, on every backend, in place."""

from __future__ import annotations

import numpy as np
import pytest
from hostarrays import host

import fastnet
from fastnet.optimizers import (
    OPTIMIZERS,
    SGD,
    Adam,
    Momentum,
    Optimizer,
    make_optimizer,
)


# The book's common/optimizer.py, written out as the reference (NumPy only).
class BookSGD:
    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        for key in params:
            params[key] -= self.lr * grads[key]


class BookMomentum:
    def __init__(self, lr=0.01, momentum=0.9):
        self.lr, self.momentum, self.v = lr, momentum, None

    def update(self, params, grads):
        if self.v is None:
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class BookNesterov(BookMomentum):
    def update(self, params, grads):
        if self.v is None:
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params:  # the book's order since its 2021 fix: p moves with the old v
            params[key] += self.momentum * self.momentum * self.v[key]
            params[key] -= (1 + self.momentum) * self.lr * grads[key]
            self.v[key] *= self.momentum
            self.v[key] -= self.lr * grads[key]


class BookAdaGrad:
    def __init__(self, lr=0.01):
        self.lr, self.h = lr, None

    def update(self, params, grads):
        if self.h is None:
            self.h = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params:
            self.h[key] += grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class BookRMSprop:
    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr, self.decay_rate, self.h = lr, decay_rate, None

    def update(self, params, grads):
        if self.h is None:
            self.h = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params:
            self.h[key] *= self.decay_rate
            self.h[key] += (1 - self.decay_rate) * grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class BookAdam:
    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr, self.beta1, self.beta2, self.iter, self.m, self.v = lr, beta1, beta2, 0, None, None

    def update(self, params, grads):
        if self.m is None:
            self.m = {k: np.zeros_like(v) for k, v in params.items()}
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        for key in params:
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


class BookAdamW(BookAdam):
    """The book's Adam with torch.optim.AdamW's decoupled decay: p *= 1 - lr * weight_decay first."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, weight_decay=0.01):
        super().__init__(lr, beta1, beta2)
        self.weight_decay = weight_decay

    def update(self, params, grads):
        for key in params:
            params[key] *= 1 - self.lr * self.weight_decay
        super().update(params, grads)


BOOK = {
    "sgd": BookSGD, "momentum": BookMomentum, "nesterov": BookNesterov,
    "adagrad": BookAdaGrad, "rmsprop": BookRMSprop, "adam": BookAdam, "adamw": BookAdamW,
}


def problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((5, 4)), "b1": rng.standard_normal(4)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(6)]
    return params, grads


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_matches_the_book(backend, name):
    params, grads = problem()
    ref = {k: v.copy() for k, v in params.items()}
    book = BOOK[name](lr=0.05)
    mine = OPTIMIZERS[name](lr=0.05)
    live = {k: backend.asarray(v) for k, v in params.items()}
    originals = dict(live)
    for g in grads:
        book.update(ref, g)
        mine.update(live, {k: backend.asarray(v) for k, v in g.items()})
    for k in ref:
        assert live[k] is originals[k]  # updated in place, as the book does
        if backend.name == "numpy":
            assert np.array_equal(live[k], ref[k]), k  # the reference is bitwise the book
        else:
            np.testing.assert_allclose(host(live[k]), ref[k], rtol=1e-12, atol=1e-14)
    for slots in mine.state.values():
        assert all(backend.owns(a) for a in slots.values())


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_minimises_the_books_f(cpu_backend, name):
    """f(x, y) = x**2/20 + y**2 from (-7, 2), the book's optimizer_compare_naive.py."""
    lr = {"sgd": 0.95, "momentum": 0.1, "nesterov": 0.1, "adagrad": 1.5, "rmsprop": 0.3, "adam": 0.3,
          "adamw": 0.3}[name]
    opt = OPTIMIZERS[name](lr=lr)
    params = {"x": np.array([-7.0]), "y": np.array([2.0])}
    start = params["x"][0] ** 2 / 20 + params["y"][0] ** 2
    for _ in range(30):
        opt.update(params, {"x": params["x"] / 10.0, "y": 2.0 * params["y"]})
    end = params["x"][0] ** 2 / 20 + params["y"][0] ** 2
    assert end < start / 5, (name, start, end)


def test_make_optimizer():
    assert isinstance(make_optimizer("SGD", {"lr": 0.5}), SGD)
    adam = make_optimizer("adam", {"lr": 0.002, "beta1": 0.8})
    assert isinstance(adam, Adam) and adam.hyperparameters() == {"lr": 0.002, "beta1": 0.8, "beta2": 0.999}
    mom = Momentum(lr=0.1)
    assert make_optimizer(mom) is mom
    with pytest.raises(ValueError, match="unknown optimizer 'adamax'.*sgd, momentum"):
        make_optimizer("adamax")
    adamw = make_optimizer("AdamW", {"weight_decay": 0.1})
    assert adamw.hyperparameters() == {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.1}
    with pytest.raises(ValueError, match="SGD has no hyper-parameter 'momentum'; it takes lr"):
        make_optimizer("sgd", {"momentum": 0.9})
    with pytest.raises(ValueError, match="must be empty"):
        make_optimizer(mom, {"lr": 1.0})


@pytest.mark.parametrize(
    "make, match",
    [(lambda: SGD(lr=0), "lr"), (lambda: SGD(lr=-1), "lr"), (lambda: Momentum(momentum=1.0), "momentum"),
     (lambda: Adam(beta2=1.5), "beta2"), (lambda: SGD(lr="0.1"), "lr")],
)
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_missing_gradient_is_named():
    with pytest.raises(KeyError, match="b1"):
        SGD().update({"W1": np.zeros(2), "b1": np.zeros(2)}, {"W1": np.zeros(2)})


def test_repr_and_kind():
    assert repr(Adam()) == "Adam(lr=0.001, beta1=0.9, beta2=0.999)"
    assert {cls.kind for cls in OPTIMIZERS.values()} == set(OPTIMIZERS)
    assert all(issubclass(cls, Optimizer) for cls in OPTIMIZERS.values())


def test_train_step_keeps_optimizer_state_on_the_nets_backend(backend):
    net = fastnet.TwoLayerNet(6, 5, 3, seed=0, dtype=np.float64)
    opt = Adam()
    x = backend.asarray(np.random.default_rng(0).random((4, 6)))
    net.train_step(x, backend.asarray(np.array([0, 1, 2, 0])), opt)
    assert opt.backend is backend
    assert all(backend.owns(a) for a in opt.state["m"].values())


def test_nesterov_first_step_is_the_books():
    """From p=0, g=1, lr 0.01, momentum 0.9: the book's corrected Nesterov moves p to -0.019."""
    params = {"p": np.zeros(1)}
    fastnet.Nesterov(lr=0.01, momentum=0.9).update(params, {"p": np.ones(1)})
    assert params["p"][0] == pytest.approx(-0.019, abs=1e-15)


def test_adamw_is_torchs_decoupled_decay_on_the_books_adam():
    """Written the way torch.optim.AdamW's documentation states it (bias corrections apart,
    decay before the step); the book's eps sits next to sqrt(v) of the folded rate."""
    rng = np.random.default_rng(3)
    p0, grads = rng.standard_normal(6), [rng.standard_normal(6) for _ in range(5)]
    lr, b1, b2, wd, eps = 0.01, 0.9, 0.999, 0.1, 1e-7
    p, m, v = p0.copy(), np.zeros(6), np.zeros(6)
    for step, g in enumerate(grads, start=1):
        p = p - lr * wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        bc1, bc2 = 1 - b1**step, 1 - b2**step
        p = p - (lr / bc1) * m / (np.sqrt(v) / np.sqrt(bc2) + eps / np.sqrt(bc2))
    mine = {"p": p0.copy()}
    opt = fastnet.optimizers.AdamW(lr=lr, beta1=b1, beta2=b2, weight_decay=wd)
    for g in grads:
        opt.update(mine, {"p": g})
    np.testing.assert_allclose(mine["p"], p, rtol=1e-12)


def test_plain_numbers_are_optimized_like_the_book_does():
    """optimizer_compare_naive.py: params {'x': -7.0, 'y': 2.0} of plain floats."""
    for name in OPTIMIZERS:
        params = {"x": -7.0, "y": 2.0}
        book = {"x": np.array(-7.0), "y": np.array(2.0)}
        mine, ref = OPTIMIZERS[name](lr=0.1), BOOK[name](lr=0.1)
        for _ in range(5):
            mine.update(params, {"x": params["x"] / 10.0, "y": 2.0 * params["y"]})
            ref.update(book, {"x": book["x"] / 10.0, "y": 2.0 * book["y"]})
        assert float(params["x"]) == float(book["x"]) and float(params["y"]) == float(book["y"]), name


class ClippedSGD(SGD):
    """A user's subclass overriding the public update: clipped gradients."""

    def update(self, params, grads):
        super().update(params, {k: np.clip(g, -0.01, 0.01) if isinstance(g, np.ndarray) else g
                                for k, g in grads.items()})


def test_a_subclass_gets_the_same_result_on_every_cpu_backend():
    x = np.random.default_rng(0).random((20, 6))
    t = np.arange(20) % 3
    results = []
    for name in ("numpy", "numba"):
        if not fastnet.available_backends()[name].available:
            continue
        net = fastnet.TwoLayerNet(6, 5, 3, seed=0, backend=name, weight_init_std=1.0)
        trainer = fastnet.Trainer(net, x, t, x, t, epochs=2, mini_batch_size=5, optimizer=ClippedSGD(lr=1.0),
                                  seed=0, progress=False)
        trainer.train()
        results.append({k: v.copy() for k, v in net.params.items()})
    for other in results[1:]:
        for k in results[0]:
            assert np.array_equal(results[0][k], other[k]), k
