"""Exact incremental numerical gradient of SimpleConvNet (conv-relu-pool-affine-relu-affine).

Each f(p +- h) is the loss of the whole perturbed net, as the book's loop
computes it, but only what the perturbation changes is recomputed: a filter
weight changes one channel of the convolution (then its pooled values and
their dense contributions), a dense weight one unit, a last-layer weight one
score. Everything runs in float64 from the net's base forward pass; the
losses equal a plain forward pass's within rounding (~1e-15 relative).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ...patches import reference_im2col

CE_DELTA = 1e-7


@numba.njit(cache=True, inline="always")
def _ce(m, total, st):  # type: ignore[no-untyped-def]
    return -np.log(np.exp(st - m) / total + CE_DELTA)


@numba.njit(cache=True)
def _loss_one(s, n, kmod, value, t):  # type: ignore[no-untyped-def]
    """Cross-entropy of scores row s[n] with entry kmod replaced by value (kmod -1: none)."""
    k_all = s.shape[1]
    m = -np.inf
    for k in range(k_all):
        v = value if k == kmod else s[n, k]
        m = max(m, v)
    total = 0.0
    for k in range(k_all):
        v = value if k == kmod else s[n, k]
        total += np.exp(v - m)
    st = value if t[n] == kmod else s[n, t[n]]
    return _ce(m, total, st)


@numba.njit(cache=True)
def _loss_row(s, n, d, W3, u, t):  # type: ignore[no-untyped-def]
    """Cross-entropy of s[n] + d * W3[u] (hidden unit u's output changed by d)."""
    k_all = s.shape[1]
    m = -np.inf
    for k in range(k_all):
        m = max(m, s[n, k] + d * W3[u, k])
    total = 0.0
    for k in range(k_all):
        total += np.exp(s[n, k] + d * W3[u, k] - m)
    return _ce(m, total, s[n, t[n]] + d * W3[u, t[n]])


@numba.njit(cache=True)
def _loss_hidden(a, W3, b3, tn, s_tmp):  # type: ignore[no-untyped-def]
    """Cross-entropy of relu(a) @ W3 + b3 for one sample."""
    hid, k_all = W3.shape
    for k in range(k_all):
        s_tmp[k] = 0.0
    for u in range(hid):
        if a[u] > 0:
            for k in range(k_all):
                s_tmp[k] += a[u] * W3[u, k]
    m = -np.inf
    for k in range(k_all):
        s_tmp[k] += b3[k]
        m = max(m, s_tmp[k])
    total = 0.0
    for k in range(k_all):
        total += np.exp(s_tmp[k] - m)
    return _ce(m, total, s_tmp[tn])


@numba.njit(cache=True, parallel=True)
def conv_losses(col, conv, pooled, a1, W1, b1, W2, W3, b3, t, h, bias, fplus, fminus):  # type: ignore[no-untyped-def]
    """f(+-h) for every filter weight (bias False: W1 flat f*K + k) or filter bias (bias True)."""
    n_s, f_all, oh, ow = conv.shape
    ph, pw = pooled.shape[2], pooled.shape[3]
    k_all = col.shape[1]
    hid = a1.shape[1]
    count = f_all if bias else f_all * k_all
    for idx in numba.prange(count):
        f = idx // (1 if bias else k_all)
        k = idx - f * (1 if bias else k_all)  # 0 for a bias
        p = b1[f] if bias else W1[f, k]
        a = np.empty(hid)
        s_tmp = np.empty(W3.shape[1])
        for sign in range(2):
            d = ((p + h) - p) if sign == 0 else ((p - h) - p)
            total = 0.0
            for n in range(n_s):
                for u in range(hid):
                    a[u] = a1[n, u]
                for i in range(ph):
                    for j in range(pw):
                        best = 0.0
                        for y in range(2):
                            for xx in range(2):
                                r = 2 * i + y
                                cc = 2 * j + xx
                                g = 1.0 if bias else col[(n * oh + r) * ow + cc, k]
                                v = conv[n, f, r, cc] + d * g
                                v = v if v > 0 else 0.0
                                if (y == 0 and xx == 0) or v > best:
                                    best = v
                        delta = best - pooled[n, f, i, j]
                        if delta != 0:
                            q = (f * ph + i) * pw + j
                            for u in range(hid):
                                a[u] += delta * W2[q, u]
                total += _loss_hidden(a, W3, b3, t[n], s_tmp)
            if sign == 0:
                fplus[idx] = total / n_s
            else:
                fminus[idx] = total / n_s


@numba.njit(cache=True, parallel=True)
def dense_losses(z, a1, hidden, s, base, W2, b2, W3, t, h, bias, fplus, fminus):  # type: ignore[no-untyped-def]
    """f(+-h) for every W2 entry (flat q*H + u) or b2 entry (bias True)."""
    n_s, q_all = z.shape
    hid = a1.shape[1]
    count = hid if bias else q_all * hid
    for idx in numba.prange(count):
        q = 0 if bias else idx // hid
        u = idx - q * hid
        p = b2[u] if bias else W2[q, u]
        for sign in range(2):
            d = ((p + h) - p) if sign == 0 else ((p - h) - p)
            total = 0.0
            for n in range(n_s):
                g = 1.0 if bias else z[n, q]
                if g == 0:
                    total += base[n]
                    continue
                a = a1[n, u] + d * g
                new = a if a > 0 else 0.0
                if new == hidden[n, u]:
                    total += base[n]
                else:
                    total += _loss_row(s, n, new - hidden[n, u], W3, u, t)
            if sign == 0:
                fplus[idx] = total / n_s
            else:
                fminus[idx] = total / n_s


@numba.njit(cache=True, parallel=True)
def score_losses(hidden, s, base, W3, b3, t, h, bias, fplus, fminus):  # type: ignore[no-untyped-def]
    """f(+-h) for every W3 entry (flat u*K + k) or b3 entry (bias True)."""
    n_s, hid = hidden.shape
    k_all = s.shape[1]
    count = k_all if bias else hid * k_all
    for idx in numba.prange(count):
        u = 0 if bias else idx // k_all
        k = idx - u * k_all
        p = b3[k] if bias else W3[u, k]
        for sign in range(2):
            d = ((p + h) - p) if sign == 0 else ((p - h) - p)
            total = 0.0
            for n in range(n_s):
                g = 1.0 if bias else hidden[n, u]
                if g == 0:
                    total += base[n]
                else:
                    total += _loss_one(s, n, k, s[n, k] + d * g, t)
            if sign == 0:
                fplus[idx] = total / n_s
            else:
                fminus[idx] = total / n_s


@numba.njit(cache=True)
def base_losses(s, t, out):  # type: ignore[no-untyped-def]
    for n in range(s.shape[0]):
        out[n] = _loss_one(s, n, -1, 0.0, t)


def simple_convnet_losses(params: dict[str, Any], stride: int, pad: int, x: Any, t: Any, h: float
                          ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(f(p + h), f(p - h)) of every parameter of a SimpleConvNet, in float64, shaped like params."""
    P = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in params.items()}
    x = np.asarray(x, dtype=np.float64)
    labels = np.ascontiguousarray(t if t.ndim == 1 else np.argmax(t, axis=1), dtype=np.int64)
    W1 = P["W1"].reshape(P["W1"].shape[0], -1)
    f_all, _, fh, fw = P["W1"].shape
    n_s = x.shape[0]
    col = reference_im2col(np, x, fh, fw, stride, pad)
    oh = (x.shape[2] + 2 * pad - fh) // stride + 1
    ow = (x.shape[3] + 2 * pad - fw) // stride + 1
    conv = np.ascontiguousarray((col @ W1.T + P["b1"]).reshape(n_s, oh, ow, f_all).transpose(0, 3, 1, 2))
    relu = np.maximum(conv, 0.0)
    ph, pw = oh // 2, ow // 2
    pooled = np.ascontiguousarray(relu[:, :, :2 * ph, :2 * pw].reshape(n_s, f_all, ph, 2, pw, 2).max(axis=(3, 5)))
    z = pooled.reshape(n_s, -1)
    a1 = z @ P["W2"] + P["b2"]
    hidden = np.maximum(a1, 0.0)
    s = hidden @ P["W3"] + P["b3"]
    base = np.empty(n_s)
    base_losses(s, labels, base)
    plus = {k: np.empty(v.size) for k, v in P.items()}
    minus = {k: np.empty(v.size) for k, v in P.items()}
    h = float(h)
    for key, bias in (("W1", False), ("b1", True)):
        conv_losses(col, conv, pooled, a1, W1, P["b1"], P["W2"], P["W3"], P["b3"], labels, h, bias,
                    plus[key], minus[key])
    for key, bias in (("W2", False), ("b2", True)):
        dense_losses(z, a1, hidden, s, base, P["W2"], P["b2"], P["W3"], labels, h, bias, plus[key], minus[key])
    for key, bias in (("W3", False), ("b3", True)):
        score_losses(hidden, s, base, P["W3"], P["b3"], labels, h, bias, plus[key], minus[key])
    shapes = {k: v.shape for k, v in P.items()}
    return ({k: v.reshape(shapes[k]) for k, v in plus.items()},
            {k: v.reshape(shapes[k]) for k, v in minus.items()})
