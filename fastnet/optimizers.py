"""Optimizers from the book's chapter 6, updating parameters in place.

Each optimizer keeps its state (velocities, squared-gradient sums, ...) as
arrays of the parameters' backend and calls one backend kernel per parameter,
so a backend can fuse the update (or a whole training step: it can read
``kind``, the hyper-parameters and ``state`` of a known optimizer).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from .backend import NumpyBackend, get_backend

__all__ = [
    "Optimizer",
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSprop",
    "Adam",
    "OPTIMIZERS",
    "make_optimizer",
]

Array = Any


def _check_rate(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


class Optimizer:
    """Base class: ``update(params, grads)`` changes ``params`` in place."""

    kind = ""
    state_names: tuple[str, ...] = ()

    def __init__(self, lr: float, backend: NumpyBackend | None = None) -> None:
        self.lr = _check_rate(lr, "lr")
        self.backend = backend
        self.state: dict[str, dict[str, Array]] = {name: {} for name in self.state_names}

    def _backend(self) -> NumpyBackend:
        if self.backend is None:
            self.backend = get_backend()
        return self.backend

    def _slots(self, key: str, p: Array) -> list[Array]:
        """This parameter's state arrays, created as zeros on first use."""
        out = []
        for name in self.state_names:
            slot = self.state[name].get(key)
            if slot is None:
                slot = self.state[name][key] = self._backend().xp.zeros_like(p)
            out.append(slot)
        return out

    def update(self, params: dict[str, Array], grads: dict[str, Array]) -> None:
        """Change every array in `params` in place, using the same-named array of `grads`."""
        if not isinstance(params, Mapping) or not isinstance(grads, Mapping):
            raise TypeError(
                f"params and grads must be dicts of arrays keyed by name (as net.params and "
                f"net.gradient(x, t)), got {type(params).__name__} and {type(grads).__name__}"
            )
        missing = [k for k in params if k not in grads]
        if missing:
            raise KeyError(f"grads has no entry for parameter(s) {missing}")
        checked = {key: self._check_pair(key, p, grads[key]) for key, p in params.items()}
        self._begin_step()
        for key, p in params.items():
            self._update_one(key, p, checked[key])

    def _check_pair(self, key: str, p: Array, g: Array) -> Array:
        """Shapes and dtypes only (no device sync): a wrong gradient must not broadcast into p."""
        bk = self._backend()
        if not bk.owns(p):
            bk.check(p, f"params[{key!r}]")  # names the fix for another backend's array
            raise TypeError(f"params[{key!r}] must be an array updated in place, got {type(p).__name__}")
        if p.dtype.kind != "f":
            raise TypeError(f"params[{key!r}] must be floating point to be updated, got dtype {p.dtype}")
        g = bk.check(g, f"grads[{key!r}]")
        if g.shape != p.shape:
            raise ValueError(f"grads[{key!r}] has shape {g.shape} but params[{key!r}] has shape {p.shape}")
        return g

    def _begin_step(self) -> None:
        """Hook for per-step bookkeeping (Adam's step counter)."""

    def _update_one(self, key: str, p: Array, g: Array) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({hyper})"

    def hyperparameters(self) -> dict[str, float]:
        return {"lr": self.lr}


class SGD(Optimizer):
    """p -= lr * g"""

    kind = "sgd"

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)

    def _update_one(self, key: str, p: Array, g: Array) -> None:
        self._backend().sgd_update(p, g, self.lr)


class Momentum(Optimizer):
    """v = momentum * v - lr * g; p += v"""

    kind = "momentum"
    state_names = ("v",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = _check_fraction(momentum, "momentum")

    def hyperparameters(self) -> dict[str, float]:
        return {"lr": self.lr, "momentum": self.momentum}

    def _update_one(self, key: str, p: Array, g: Array) -> None:
        (v,) = self._slots(key, p)
        self._backend().momentum_update(p, g, v, self.lr, self.momentum)


class Nesterov(Momentum):
    """Nesterov's accelerated gradient in the book's form."""

    kind = "nesterov"

    def _update_one(self, key: str, p: Array, g: Array) -> None:
        (v,) = self._slots(key, p)
        self._backend().nesterov_update(p, g, v, self.lr, self.momentum)


class AdaGrad(Optimizer):
    """h += g*g; p -= lr * g / (sqrt(h) + 1e-7)"""

    kind = "adagrad"
    state_names = ("h",)

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)

    def _update_one(self, key: str, p: Array, g: Array) -> None:
        (h,) = self._slots(key, p)
        self._backend().adagrad_update(p, g, h, self.lr)


class RMSprop(Optimizer):
    """h = decay*h + (1-decay)*g*g; p -= lr * g / (sqrt(h) + 1e-7)"""

    kind = "rmsprop"
    state_names = ("h",)

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99) -> None:
        super().__init__(lr)
        self.decay_rate = _check_fraction(decay_rate, "decay_rate")

    def hyperparameters(self) -> dict[str, float]:
        return {"lr": self.lr, "decay_rate": self.decay_rate}

    def _update_one(self, key: str, p: Array, g: Array) -> None:
        (h,) = self._slots(key, p)
        self._backend().rmsprop_update(p, g, h, self.lr, self.decay_rate)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with the bias correction folded into the step size."""

    kind = "adam"
    state_names = ("m", "v")

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        super().__init__(lr)
        self.beta1 = _check_fraction(beta1, "beta1")
        self.beta2 = _check_fraction(beta2, "beta2")
        self.iter = 0
        self.lr_t = 0.0

    def hyperparameters(self) -> dict[str, float]:
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2}

    def _begin_step(self) -> None:
        self.iter += 1
        self.lr_t = (
            # math.sqrt is correctly rounded, like the book's np.sqrt (** 0.5 may not be)
            self.lr * math.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        )

    def _update_one(self, key: str, p: Array, g: Array) -> None:
        m, v = self._slots(key, p)
        self._backend().adam_update(p, g, m, v, self.lr_t, self.beta1, self.beta2)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def make_optimizer(optimizer: str | Optimizer = "sgd", params: dict[str, Any] | None = None) -> Optimizer:
    """An optimizer from its name (as in the book's Trainer) and hyper-parameters.

    ``make_optimizer("adam", {"lr": 0.001})``; names are case-insensitive keys
    of ``OPTIMIZERS``. An ``Optimizer`` instance is returned as it is (then
    `params` must be empty). Unknown names or hyper-parameters raise
    ``ValueError`` naming the valid ones.
    """
    params = dict(params or {})
    if isinstance(optimizer, Optimizer):
        if params:
            raise ValueError("optimizer_param must be empty when an Optimizer instance is given")
        return optimizer
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)} "
            f"or an Optimizer instance"
        )
    cls = OPTIMIZERS[optimizer.lower()]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = [k for k in params if k not in accepted]
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no hyper-parameter {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(accepted)}"
        )
    return cls(**params)
