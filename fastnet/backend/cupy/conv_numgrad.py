"""Exact incremental numerical gradient of SimpleConvNet as batched array code (CuPy or NumPy).

The same computation as the Numba backend's (``numba/conv_numgrad.py``),
written against ``xp`` so it runs as a few large array operations on the
GPU: each f(p +- h) is the loss of the whole perturbed net, but only what
the perturbation changes is recomputed. A filter weight moves one channel
of the convolution (then its pooled values and their dense contributions),
a dense weight one hidden unit, a last-layer weight one score. The
perturbed value is ``p + h`` rounded as the book's loop writes it, so the
step applied is ``(p + h) - p``. Everything runs in float64; the losses equal
a plain forward pass's within rounding.
"""

from __future__ import annotations

from typing import Any

from ...patches import reference_im2col
from .numgrad import log_prob

Array = Any
CHUNK = 1 << 22  # elements of the largest temporary arrays (about 32 MiB each in float64)


def _steps(xp: Any, p: Array, h: float) -> Array:
    """(2, *p.shape): the steps the book's loop applies, (p + h) - p and (p - h) - p."""
    return xp.stack([(p + h) - p, (p - h) - p])


def _sum_loss(xp: Any, s: Array, labels: Array) -> Array:
    """The book's cross-entropy of score rows (last axis), summed over the samples (next axis)."""
    return -log_prob(xp, s, labels).sum(axis=-1)


def simple_convnet_losses(xp: Any, params: dict[str, Array], stride: int, pad: int, x: Array, t: Array,
                          h: float) -> tuple[dict[str, Array], dict[str, Array]]:
    """(f(p + h), f(p - h)) of every parameter of a SimpleConvNet, in float64, shaped like params.

    Samples are independent until the loss averages them, so the batch is
    worked through a few samples at a time, each group's temporaries within
    about CHUNK elements.
    """
    f64 = xp.float64
    P = {k: xp.asarray(v, dtype=f64) for k, v in params.items()}
    x = xp.asarray(x, dtype=f64)
    labels = xp.asarray(t if t.ndim == 1 else xp.argmax(t, axis=1)).astype(xp.int64)
    F, _, fh, fw = P["W1"].shape
    oh = (x.shape[2] + 2 * pad - fh) // stride + 1
    ow = (x.shape[3] + 2 * pad - fw) // stride + 1
    U, K = P["W3"].shape
    per_sample = max(2 * (fh * fw * x.shape[1] + 1) * oh * ow, 2 * (U + 1) * K * K, 2 * U * K)
    group = max(1, CHUNK // per_sample)
    total = {k: xp.zeros((2, *v.shape), f64) for k, v in P.items()}
    for s0 in range(0, x.shape[0], group):
        for k, v in _sums(xp, P, stride, pad, x[s0:s0 + group], labels[s0:s0 + group], h).items():
            total[k] += v
    n = x.shape[0]
    return {k: v[0] / n for k, v in total.items()}, {k: v[1] / n for k, v in total.items()}


def _sums(xp: Any, P: dict[str, Array], stride: int, pad: int, x: Array, labels: Array, h: float
          ) -> dict[str, Array]:
    """(2, *shape) per parameter: the perturbed losses (p + h, p - h) summed over these samples."""
    f64 = xp.float64
    W1, b1, W2, b2, W3, b3 = (P[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    F, _, fh, fw = W1.shape
    n = x.shape[0]
    oh = (x.shape[2] + 2 * pad - fh) // stride + 1
    ow = (x.shape[3] + 2 * pad - fw) // stride + 1
    ph, pw = oh // 2, ow // 2
    col = reference_im2col(xp, x, fh, fw, stride, pad).reshape(n, oh, ow, -1)
    Wf = W1.reshape(F, -1)
    conv = (col @ Wf.T + b1).transpose(0, 3, 1, 2)  # (n, F, oh, ow)

    def pool(c: Array) -> Array:  # relu then the 2x2 max pool, over the last two axes
        r = xp.maximum(c[..., :2 * ph, :2 * pw], 0.0)
        return r.reshape(*r.shape[:-2], ph, 2, pw, 2).max(axis=(-3, -1))

    pooled = pool(conv)  # (n, F, ph, pw)
    z = pooled.reshape(n, -1)
    a1 = z @ W2 + b2
    hidden = xp.maximum(a1, 0.0)
    s = hidden @ W3 + b3
    out = {k: xp.empty((2, *v.shape), f64) for k, v in P.items()}

    # filter weights and biases: channel f of the convolution moves by d * col[..., k] (by d for a bias)
    area = ph * pw
    inputs = xp.concatenate([col.transpose(3, 0, 1, 2), xp.ones((1, n, oh, ow), f64)])  # (K + 1, n, oh, ow)
    for f in range(F):
        d = _steps(xp, xp.concatenate([Wf[f], b1[f:f + 1]]), h)  # (2, K + 1)
        moved = pool(conv[:, f] + d[:, :, None, None, None] * inputs)  # (2, K + 1, n, ph, pw)
        delta = (moved - pooled[:, f]).reshape(2, -1, n, area)
        a = a1 + delta @ W2[f * area:(f + 1) * area]  # (2, K + 1, n, hidden)
        loss = _sum_loss(xp, xp.maximum(a, 0.0) @ W3 + b3, labels)  # (2, K + 1)
        out["W1"].reshape(2, F, -1)[:, f] = loss[:, :-1]
        out["b1"][:, f] = loss[:, -1]

    # dense weights W2[q, u] (and b2[u]): hidden unit u moves by d * z[:, q] (by d), then the scores
    Q, U = W2.shape
    K = s.shape[1]
    rows = max(1, CHUNK // (2 * U * n * K))
    z1 = xp.concatenate([z, xp.ones((n, 1), f64)], axis=1)  # column Q: the bias
    W2b = xp.concatenate([W2, b2[None]])  # (Q + 1, U)
    dense = xp.empty((2, Q + 1, U), f64)
    for q0 in range(0, Q + 1, rows):
        q1 = min(Q + 1, q0 + rows)
        d = _steps(xp, W2b[q0:q1], h)  # (2, rows, U)
        a = a1.T[None, None] + d[..., None] * z1[:, q0:q1].T[None, :, None, :]  # (2, rows, U, n)
        change = xp.maximum(a, 0.0) - hidden.T  # (2, rows, U, n)
        dense[:, q0:q1] = _sum_loss(xp, s + change[..., None] * W3[:, None, :], labels)
    out["W2"][...] = dense[:, :Q]
    out["b2"][...] = dense[:, Q]

    # last-layer weights W3[u, k] (and b3[k]): score k moves by d * hidden[:, u] (by d)
    h1 = xp.concatenate([hidden, xp.ones((n, 1), f64)], axis=1)  # (n, U + 1)
    d = _steps(xp, xp.concatenate([W3, b3[None]]), h)  # (2, U + 1, K)
    eye = xp.eye(K, dtype=f64)
    moved = s + (d[..., None] * h1.T[None, :, None, :])[..., None] * eye[None, None, :, None, :]
    scores = _sum_loss(xp, moved, labels)  # (2, U + 1, K)
    out["W3"][...] = scores[:, :U]
    out["b3"][...] = scores[:, U]
    return out
