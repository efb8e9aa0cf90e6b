"""What every numerical-gradient kernel shares: the activation and one sample's loss term.

Unperturbed and perturbed terms go through these same functions (and the
same ``fastmath`` exp/log), so a sample that a perturbation leaves unchanged
gives exactly the same term: its change is exactly 0.
"""

from __future__ import annotations

import numba

from .fastmath import exp64, log64

CE_DELTA = 1e-7  # the book's +1e-7 inside the log
OPTS = {"cache": True, "error_model": "numpy"}  # error_model="numpy": x/0 is inf, loops vectorise


@numba.njit(inline="always", **OPTS)
def activate(a, act):  # type: ignore[no-untyped-def]
    """The activation by its code in ``activations.py``: 0 relu, 1 sigmoid, 2 tanh."""
    if act == 0:
        return 0.0 if a <= 0.0 else a  # nan stays nan, as in NumPy's relu
    if act == 1:
        return 1.0 / (1.0 + exp64(-a))
    # tanh from the same branch-free exp (a libm call would stop the loops vectorising):
    # (1 - e) / (1 + e) with e = exp(-2|a|), within a few 1e-16 of tanh, sign restored
    e = exp64(-2.0 * abs(a))
    r = (1.0 - e) / (1.0 + e)
    return r if a >= 0.0 else -r


@numba.njit(inline="always", **OPTS)
def unit_changes(a, h0, xv, dp, dm, hp, hm, n, act):  # type: ignore[no-untyped-def]
    """hp[l] = act(a + xv[l] dp[l]) - h0 and hm likewise, l < n: the activation chosen once,
    outside the loop, so each loop is branch-free and vectorises."""
    if act == 0:
        for l in range(n):
            hp[l] = activate(a + xv[l] * dp[l], 0) - h0
            hm[l] = activate(a + xv[l] * dm[l], 0) - h0
    elif act == 1:
        for l in range(n):
            hp[l] = activate(a + xv[l] * dp[l], 1) - h0
            hm[l] = activate(a + xv[l] * dm[l], 1) - h0
    else:
        for l in range(n):
            hp[l] = activate(a + xv[l] * dp[l], 2) - h0
            hm[l] = activate(a + xv[l] * dm[l], 2) - h0


@numba.njit(**OPTS)
def sample_terms(z, lab, row_max, terms):  # type: ignore[no-untyped-def]
    """terms[n] = -log(softmax(z[n])[lab[n]] + 1e-7), row_max[n] = max z[n]."""
    n_samples, k_out = z.shape
    for n in range(n_samples):
        top = z[n, 0]
        for k in range(1, k_out):
            top = max(top, z[n, k])
        row_max[n] = top
        total = 0.0
        picked = 0.0
        for k in range(k_out):
            e = exp64(z[n, k] - top)
            total += e
            if k == lab[n]:
                picked = e
        terms[n] = -log64(picked / total + CE_DELTA)


@numba.njit(**OPTS)
def hidden_of(a, act, out):  # type: ignore[no-untyped-def]
    """out = act(a), elementwise (the same act the kernels use)."""
    n, m = a.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = activate(a[i, j], act)


@numba.njit(inline="always", **OPTS)
def sample_term(scores, label):  # type: ignore[no-untyped-def]
    """-log(softmax(scores)[label] + 1e-7), shifted by the row maximum (as ``sample_terms``)."""
    top = scores[0]
    for k in range(1, scores.shape[0]):
        top = max(top, scores[k])
    total = 0.0
    picked = 0.0
    for k in range(scores.shape[0]):
        e = exp64(scores[k] - top)
        total += e
        if k == label:
            picked = e
    return -log64(picked / total + CE_DELTA)
