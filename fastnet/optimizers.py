"""Optimizers from the book's chapter 6 (and AdamW), updating parameters in place.

Each optimizer is defined once, by its class:

* ``rule(xp, p, g, *state, *scalars)``: the formula for one parameter, written
  against the array module ``xp``, updating ``p`` and the state in place;
* ``state_names``: the per-parameter state arrays (zeros at first);
* ``step_scalars()``: the numbers ``rule`` takes after the state, once per
  step (Adam's bias-corrected rate, for one);
* ``kernel``: the name of the compiled versions of that same rule that the
  fast backends keep (Numba: ``fastnet/backend/numba/optimizers.py``; CUDA:
  ``fastnet/backend/cupy/kernels/optimizers.cuh``).

A backend runs a compiled version only for an instance of exactly the
built-in class with nothing overridden on the instance (``builtin``). A
subclass that changes ``update``, ``rule`` or anything else always runs its
own Python code on the backend's arrays, so it gets the same result on every
backend.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import numpy

from .backend import NumpyBackend, get_backend
from .checks import Number, fraction, non_negative, real
from .definitions import as_defined, record

__all__ = [
    "Optimizer",
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "builtin",
    "OPTIMIZERS",
    "make_optimizer",
]

Array = Any


def _rate(value: Any, name: str) -> float:
    return real(value, name, positive=True)


class Optimizer:
    """Base class: ``update(params, grads)`` changes ``params`` in place.

    Subclass it with a ``rule`` (and ``state_names``, ``step_scalars`` when
    needed) to define a new optimizer; it then runs on every backend.
    """

    kind = ""  # the name users give (make_optimizer, the CLI); never used to pick a kernel
    kernel: str | None = None
    state_names: tuple[str, ...] = ()
    lr = Number(_rate)

    def __init__(self, lr: float, backend: NumpyBackend | None = None) -> None:
        self.lr = lr
        self.backend = backend
        self.state: dict[str, dict[str, Array]] = {name: {} for name in self.state_names}

    def bound_backend(self) -> NumpyBackend:
        """The backend the state lives on (the active one, from the first update on)."""
        if self.backend is None:
            self.backend = get_backend()
        return self.backend

    def slots(self, key: str, p: Array) -> list[Array]:
        """This parameter's state arrays, created as zeros like `p` on first use."""
        out = []
        for name in self.state_names:
            slot = self.state[name].get(key)
            if slot is None:
                xp = numpy if isinstance(p, numpy.ndarray) and p.ndim == 0 else self.bound_backend().xp
                slot = self.state[name][key] = xp.zeros_like(p)
            elif slot.shape != p.shape:
                raise ValueError(
                    f"params[{key!r}] has shape {tuple(p.shape)} but this optimizer's state for it has shape "
                    f"{tuple(slot.shape)}: create a new optimizer after replacing a parameter with another shape"
                )
            out.append(slot)
        return out

    def step_scalars(self) -> tuple[float, ...]:
        """The numbers ``rule`` takes for this step; called once per ``update``."""
        return (self.lr,)

    @staticmethod
    def rule(xp: Any, p: Array, g: Array, *state_and_scalars: Any) -> None:
        """Update one parameter `p` (and its state) in place from its gradient `g`."""
        raise NotImplementedError

    def update(self, params: dict[str, Array], grads: dict[str, Array]) -> None:
        """Change every array in `params` in place, using the same-named array of `grads`.

        Plain numbers in `params` (the book's ``optimizer_compare_naive.py``
        optimizes ``{'x': -7.0, 'y': 2.0}``) are updated as 0-d float64 arrays
        and stored back in the dict.
        """
        if not isinstance(params, Mapping) or not isinstance(grads, Mapping):
            raise TypeError(
                f"params and grads must be dicts of arrays keyed by name (as net.params and "
                f"net.gradient(x, t)), got {type(params).__name__} and {type(grads).__name__}"
            )
        missing = [k for k in params if k not in grads]
        if missing:
            raise KeyError(f"grads has no entry for parameter(s) {missing}")
        checked = {key: self._check_pair(key, p, grads[key]) for key, p in params.items()}
        scalars = self.step_scalars()
        kernel = builtin(self)
        for key, (p, g) in checked.items():
            if p.ndim == 0 and isinstance(p, numpy.ndarray) and not isinstance(params[key], numpy.ndarray):
                self.rule(numpy, p, g, *self.slots(key, p), *scalars)
                params[key] = p[()]  # a number in, a number out
                continue
            self.bound_backend().apply_rule(self, kernel, p, g, self.slots(key, p), scalars)

    def _check_pair(self, key: str, p: Array, g: Array) -> tuple[Array, Array]:
        """Shapes, dtypes and writability only (no device sync): a wrong gradient must not broadcast into p."""
        if isinstance(p, (int, float, numpy.number)) and not isinstance(p, bool):
            if not isinstance(g, (int, float, numpy.number, numpy.ndarray)) or numpy.ndim(g) != 0:
                raise TypeError(f"grads[{key!r}] must be a number like params[{key!r}], got {g!r}")
            return numpy.array(p, dtype=numpy.float64), numpy.array(g, dtype=numpy.float64)
        bk = self.bound_backend()
        if not bk.owns(p):
            bk.check(p, f"params[{key!r}]")  # names the fix for another backend's array
            raise TypeError(
                f"params[{key!r}] must be an array (updated in place) or a number, got {type(p).__name__}"
            )
        if p.dtype.kind != "f":
            raise TypeError(f"params[{key!r}] must be floating point to be updated, got dtype {p.dtype}")
        if not getattr(p.flags, "writeable", True):
            raise ValueError(f"params[{key!r}] is read-only; an optimizer updates it in place (pass a writable copy)")
        g = bk.check(g, f"grads[{key!r}]")
        if g.shape != p.shape:
            raise ValueError(f"grads[{key!r}] has shape {g.shape} but params[{key!r}] has shape {p.shape}")
        return p, g

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({hyper})"

    def hyperparameters(self) -> dict[str, float]:
        return {"lr": self.lr}


def builtin(optimizer: Any) -> str | None:
    """The kernel name when `optimizer` is exactly a built-in class with nothing overridden, else None.

    What backends ask before running a compiled rule (or fusing the update
    into a training step): a subclass, an instance given a method of its
    own (``update``, ``rule``, ``step_scalars`` or any other), or a built-in
    class changed after import (``SGD.update = ...``) is not the built-in
    definition. Hyper-parameters are ``Number`` attributes: always
    Python floats, whatever was assigned.
    """
    cls = type(optimizer)
    if OPTIMIZERS.get(getattr(cls, "kind", None)) is not cls or not as_defined(optimizer):
        return None  # another class, or a method replaced on the class or the instance
    return cls.kernel


class SGD(Optimizer):
    """p -= lr * g"""

    kind = kernel = "sgd"

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)

    @staticmethod
    def rule(xp: Any, p: Array, g: Array, lr: float) -> None:  # type: ignore[override]
        p -= lr * g


class Momentum(Optimizer):
    """v = momentum * v - lr * g; p += v"""

    kind = kernel = "momentum"
    state_names = ("v",)
    momentum = Number(fraction)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = momentum

    def hyperparameters(self) -> dict[str, float]:
        return {"lr": self.lr, "momentum": self.momentum}

    def step_scalars(self) -> tuple[float, ...]:
        return (self.lr, self.momentum)

    @staticmethod
    def rule(xp: Any, p: Array, g: Array, v: Array, lr: float, momentum: float) -> None:  # type: ignore[override]
        v *= momentum
        v -= lr * g
        p += v


class Nesterov(Momentum):
    """Nesterov's accelerated gradient as the book's optimizer.py writes it:
    p += momentum**2 * v; p -= (1 + momentum) * lr * g; then v = momentum * v - lr * g."""

    kind = kernel = "nesterov"

    @staticmethod
    def rule(xp: Any, p: Array, g: Array, v: Array, lr: float, momentum: float) -> None:  # type: ignore[override]
        p += momentum * momentum * v
        p -= (1 + momentum) * lr * g
        v *= momentum
        v -= lr * g


class AdaGrad(Optimizer):
    """h += g*g; p -= lr * g / (sqrt(h) + 1e-7)"""

    kind = kernel = "adagrad"
    state_names = ("h",)

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)

    @staticmethod
    def rule(xp: Any, p: Array, g: Array, h: Array, lr: float) -> None:  # type: ignore[override]
        h += g * g
        p -= lr * g / (xp.sqrt(h) + 1e-7)


class RMSprop(Optimizer):
    """h = decay*h + (1-decay)*g*g; p -= lr * g / (sqrt(h) + 1e-7)"""

    kind = kernel = "rmsprop"
    state_names = ("h",)
    decay_rate = Number(fraction)

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99) -> None:
        super().__init__(lr)
        self.decay_rate = decay_rate

    def hyperparameters(self) -> dict[str, float]:
        return {"lr": self.lr, "decay_rate": self.decay_rate}

    def step_scalars(self) -> tuple[float, ...]:
        return (self.lr, self.decay_rate)

    @staticmethod
    def rule(xp: Any, p: Array, g: Array, h: Array, lr: float, decay_rate: float) -> None:  # type: ignore[override]
        h *= decay_rate
        h += (1 - decay_rate) * g * g
        p -= lr * g / (xp.sqrt(h) + 1e-7)


class Adam(Optimizer):
    """Adam (Kingma & Ba) as the book writes it: the bias correction folded into the step size lr_t."""

    kind = kernel = "adam"
    state_names = ("m", "v")
    beta1 = Number(fraction)
    beta2 = Number(fraction)

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        super().__init__(lr)
        self.beta1, self.beta2 = beta1, beta2
        self.iter = 0

    def hyperparameters(self) -> dict[str, float]:
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2}

    def _lr_t(self) -> float:
        self.iter = int(self.iter) + 1  # an int, so lr_t stays a Python float
        # math.sqrt is correctly rounded, like the book's np.sqrt (** 0.5 may not be)
        return self.lr * math.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)

    def step_scalars(self) -> tuple[float, ...]:
        return (self._lr_t(), self.beta1, self.beta2)

    @staticmethod
    def rule(xp: Any, p: Array, g: Array, m: Array, v: Array,  # type: ignore[override]
             lr_t: float, beta1: float, beta2: float) -> None:
        m += (1 - beta1) * (g - m)
        v += (1 - beta2) * (g**2 - v)
        p -= lr_t * m / (xp.sqrt(v) + 1e-7)


class AdamW(Adam):
    """The book's Adam plus decoupled weight decay, as ``torch.optim.AdamW`` applies it:
    p *= 1 - lr * weight_decay, then the Adam step (its eps is the book's 1e-7 next to sqrt(v))."""

    kind = kernel = "adamw"
    weight_decay = Number(non_negative)

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 weight_decay: float = 0.01) -> None:
        super().__init__(lr, beta1, beta2)
        self.weight_decay = weight_decay

    def hyperparameters(self) -> dict[str, float]:
        return {**super().hyperparameters(), "weight_decay": self.weight_decay}

    def step_scalars(self) -> tuple[float, ...]:
        return (self._lr_t(), self.beta1, self.beta2, 1.0 - self.lr * self.weight_decay)

    @staticmethod
    def rule(xp: Any, p: Array, g: Array, m: Array, v: Array,  # type: ignore[override]
             lr_t: float, beta1: float, beta2: float, keep: float) -> None:
        p *= keep
        m += (1 - beta1) * (g - m)
        v += (1 - beta2) * (g**2 - v)
        p -= lr_t * m / (xp.sqrt(v) + 1e-7)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
}
record(*OPTIMIZERS.values())


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
