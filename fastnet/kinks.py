"""Where a ReLU net's numerical gradient cannot agree with backprop: its kinks.

ReLU has no derivative at 0. When a hidden unit's input lies within a
perturbation of 0 for some sample, the central difference f(θ+h) - f(θ-h)
straddles the kink and measures an average of the two slopes, while backprop
uses one of them: the two disagree there although both are right.
"""

from __future__ import annotations

from typing import Any

import numpy

from . import activations


def kink_units(net: Any, x: Any, h: float = 1e-4) -> dict[int, numpy.ndarray] | None:
    """Per hidden layer i (1-based), the units some sample puts within reach of ReLU's kink.

    A perturbation of ``W_i`` or ``b_i`` moves unit j's input by at most
    ``h * max(1, max |layer input|)``; units closer to 0 than that are kinks.
    None when the net has no ReLU or runs batch norm (not analysed here).
    """
    if (activations.builtin(getattr(net, "activation", None)) != "relu" or getattr(net, "use_batchnorm", False)
            or any(p.ndim != 2 for k, p in net.params.items() if k.startswith("W"))):  # dense nets only
        return None
    to_numpy = net.backend.to_numpy
    layer_in = numpy.asarray(to_numpy(x), dtype=numpy.float64)
    n_layers = sum(1 for k in net.params if k.startswith("W"))
    out: dict[int, numpy.ndarray] = {}
    for i in range(1, n_layers):
        a = layer_in @ to_numpy(net.params[f"W{i}"]) + to_numpy(net.params[f"b{i}"])
        reach = h * max(1.0, float(numpy.abs(layer_in).max(initial=0.0)))
        out[i] = numpy.flatnonzero((numpy.abs(a) < reach).any(axis=0))
        layer_in = numpy.maximum(a, 0.0)
    return out


def away_from_kinks(key: str, diff: numpy.ndarray, kinks: dict[int, numpy.ndarray]) -> numpy.ndarray | None:
    """`diff` of parameter `key` without the entries feeding a kink unit (None: nothing to leave out)."""
    kind, layer = key[0], key[1:]
    if kind not in "Wb" or not layer.isdigit() or not len(kinks.get(int(layer), ())):
        return None
    keep = numpy.ones(diff.shape[-1], dtype=bool)
    keep[kinks[int(layer)]] = False
    return diff[..., keep]
