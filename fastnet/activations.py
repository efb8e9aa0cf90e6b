"""Activation functions, each defined once.

An activation is an object with two methods written against an array module
``xp`` (NumPy on the CPU, CuPy on the GPU):

* ``forward(xp, x) -> (y, cache)``: the output and what ``backward`` needs;
* ``backward(xp, dout, cache) -> dx``: may overwrite ``dout`` (nets pass a
  fresh array; the layers copy a caller's array first).

Nets and layers take such an object as ``activation=`` (or the name of a
built-in one). The built-ins below also name the compiled versions of
themselves that the fast backends keep (``kernel``: the name of the Numba
functions in ``fastnet/backend/numba/activations.py`` and of the CUDA device
functions in ``fastnet/backend/cupy/kernels/activations.cuh``). A backend runs
those only for the built-in objects themselves (``builtin``); any other
object, a subclass of a built-in included, runs its own ``forward`` and
``backward`` on the backend's array module: slower, never different.
"""

from __future__ import annotations

import inspect

from typing import Any

from .definitions import as_defined, record

__all__ = ["Activation", "RELU", "SIGMOID", "TANH", "ACTIVATIONS", "get", "builtin"]

Array = Any


class Activation:
    """Base class of the activations (not required: any object with the two methods works)."""

    name = "activation"
    kernel: str | None = None  # compiled versions, for the built-in objects only

    def forward(self, xp: Any, x: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    def backward(self, xp: Any, dout: Array, cache: Array) -> Array:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<activation {self.name!r}>"

    def __reduce__(self) -> Any:
        # a built-in travels (dask, multiprocessing) by name and arrives as the
        # built-in object itself, so the other process keeps its compiled kernels
        if builtin(self) is not None:
            return (get, (self.name,))
        return super().__reduce__()


class _Relu(Activation):
    """max(0, x); the gradient passes where x > 0 (the book's ch.5 layer)."""

    name = kernel = "relu"

    def forward(self, xp: Any, x: Array) -> tuple[Array, Array]:
        mask = x <= 0
        out = x.copy()
        out[mask] = 0
        return out, mask

    def backward(self, xp: Any, dout: Array, mask: Array) -> Array:
        dout[mask] = 0
        return dout


class _Sigmoid(Activation):
    """1 / (1 + exp(-x)); backward dout * (1 - y) * y (the book's ch.5 layer)."""

    name = kernel = "sigmoid"

    def forward(self, xp: Any, x: Array) -> tuple[Array, Array]:
        out = 1 / (1 + xp.exp(-x))
        return out, out

    def backward(self, xp: Any, dout: Array, out: Array) -> Array:
        return dout * (1.0 - out) * out


class _Tanh(Activation):
    """tanh(x); backward dout * (1 - y * y)."""

    name = kernel = "tanh"

    def forward(self, xp: Any, x: Array) -> tuple[Array, Array]:
        out = xp.tanh(x)
        return out, out

    def backward(self, xp: Any, dout: Array, out: Array) -> Array:
        return dout * (1.0 - out * out)


RELU = _Relu()
SIGMOID = _Sigmoid()
TANH = _Tanh()
record(_Relu, _Sigmoid, _Tanh)

#: The built-in activations by name.
ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (RELU, SIGMOID, TANH)}


def get(activation: Any) -> Any:
    """The activation object for a name or an object with ``forward`` and ``backward``.

    Raises ``ValueError`` for an unknown name (listing the known ones) and
    ``TypeError`` for anything else.
    """
    if isinstance(activation, str):
        found = ACTIVATIONS.get(activation.lower())
        if found is None:
            raise ValueError(
                f"unknown activation {activation!r}; expected one of {', '.join(map(repr, ACTIVATIONS))} "
                f"or an object with forward(xp, x) and backward(xp, dout, cache)"
            )
        return found
    if activation is RELU or activation is SIGMOID or activation is TANH:
        return activation
    forward, backward = getattr(activation, "forward", None), getattr(activation, "backward", None)
    if callable(forward) and callable(backward):
        try:
            signatures = inspect.signature(forward), inspect.signature(backward)
        except (TypeError, ValueError):
            return activation  # not introspectable: the first call will tell
        try:
            signatures[0].bind(None, None)
            signatures[1].bind(None, None, None)
        except TypeError:
            raise TypeError(
                f"activation {type(activation).__name__}: expected forward(xp, x) and backward(xp, dout, cache) "
                f"(a layer such as fastnet.layers.Relu goes in the net's layers, not here; pass 'relu')"
            ) from None
        return activation
    raise TypeError(
        f"activation must be one of {', '.join(map(repr, ACTIVATIONS))} or an object with "
        f"forward(xp, x) and backward(xp, dout, cache), got {type(activation).__name__}"
    )


def builtin(activation: Any) -> str | None:
    """The kernel name when `activation` is one of the built-in objects itself, else None.

    What backends ask before running a compiled version: a subclass or a copy
    of a built-in is not the built-in, nor is a built-in whose methods were
    replaced (``definitions.as_defined``); they take the generic path.
    """
    for known in (RELU, SIGMOID, TANH):
        if activation is known:
            return known.kernel if as_defined(known) else None
    return None


def name_of(activation: Any) -> str:
    """A display name: the built-in's name, else the object's ``name`` or class name."""
    return str(getattr(activation, "name", None) or type(activation).__name__)
