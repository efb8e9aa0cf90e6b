"""Compiled versions of the built-in optimizer rules (``fastnet.optimizers``), bit for bit NumPy's.

One function per rule, named by the optimizer's ``kernel``, taking the
rule's arguments in its order: flat contiguous ``p, g, *state``, then the
step's scalars as float64. Each line repeats one in-place NumPy statement
of the rule. A scalar is rounded to the array's dtype exactly where NumPy
would round a Python float (``dt(...)`` of a value computed in float64), so
float32 arrays get NumPy's float32 bits too. No fastmath.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, error_model="numpy")


@_jit
def sgd(p, g, lr):  # type: ignore[no-untyped-def]
    lr_ = p.dtype.type(lr)
    for i in range(p.size):
        p[i] = p[i] - lr_ * g[i]


@_jit
def momentum(p, g, v, lr, mom):  # type: ignore[no-untyped-def]
    dt = p.dtype.type
    lr_, mom_ = dt(lr), dt(mom)
    for i in range(p.size):
        vi = v[i] * mom_
        vi = vi - lr_ * g[i]
        v[i] = vi
        p[i] = p[i] + vi


@_jit
def nesterov(p, g, v, lr, mom):  # type: ignore[no-untyped-def]
    dt = p.dtype.type
    lr_, mom_, mom2, ahead = dt(lr), dt(mom), dt(mom * mom), dt((1 + mom) * lr)
    for i in range(p.size):
        pi = p[i] + mom2 * v[i]
        p[i] = pi - ahead * g[i]
        vi = v[i] * mom_
        v[i] = vi - lr_ * g[i]


@_jit
def adagrad(p, g, h, lr):  # type: ignore[no-untyped-def]
    dt = p.dtype.type
    lr_, eps = dt(lr), dt(1e-7)
    for i in range(p.size):
        hi = h[i] + g[i] * g[i]
        h[i] = hi
        p[i] = p[i] - lr_ * g[i] / (np.sqrt(hi) + eps)


@_jit
def rmsprop(p, g, h, lr, decay):  # type: ignore[no-untyped-def]
    dt = p.dtype.type
    lr_, decay_, rest, eps = dt(lr), dt(decay), dt(1 - decay), dt(1e-7)
    for i in range(p.size):
        hi = h[i] * decay_
        hi = hi + rest * g[i] * g[i]
        h[i] = hi
        p[i] = p[i] - lr_ * g[i] / (np.sqrt(hi) + eps)


@_jit
def adam(p, g, m, v, lr_t, beta1, beta2):  # type: ignore[no-untyped-def]
    dt = p.dtype.type
    lr_, rest1, rest2, eps = dt(lr_t), dt(1 - beta1), dt(1 - beta2), dt(1e-7)
    for i in range(p.size):
        gi = g[i]
        mi = m[i] + rest1 * (gi - m[i])
        vi = v[i] + rest2 * (gi * gi - v[i])
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - lr_ * mi / (np.sqrt(vi) + eps)


@_jit
def adamw(p, g, m, v, lr_t, beta1, beta2, keep):  # type: ignore[no-untyped-def]
    dt = p.dtype.type
    lr_, rest1, rest2, eps, keep_ = dt(lr_t), dt(1 - beta1), dt(1 - beta2), dt(1e-7), dt(keep)
    for i in range(p.size):
        gi = g[i]
        mi = m[i] + rest1 * (gi - m[i])
        vi = v[i] + rest2 * (gi * gi - v[i])
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * keep_ - lr_ * mi / (np.sqrt(vi) + eps)


RULES = {"sgd": sgd, "momentum": momentum, "nesterov": nesterov, "adagrad": adagrad,
         "rmsprop": rmsprop, "adam": adam, "adamw": adamw}
