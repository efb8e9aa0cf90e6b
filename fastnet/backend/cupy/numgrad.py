"""The whole net's numerical gradient with every perturbed loss evaluated exactly.

The book loops over the parameters, evaluating the full loss twice per
parameter. Here all of them are evaluated at once, in float64 whatever the
net's dtype (a central difference with h = 1e-4 in float32 has no correct
digits): the forward pass is stored once, and for each perturbed parameter
only the part of the forward pass that it changes is recomputed, exp and log
included. The last two layers run as CUDA kernels (``kernels/numgrad.cu``);
earlier layers of deeper nets, and every layer when asked, run as batched
array code (``layer_gradient``) that works on NumPy and CuPy alike.
"""

from __future__ import annotations

from typing import Any

import numpy

from . import cuda
from .source import CE_DELTA

Array = Any


def activate(xp: Any, a: Array, activation: str) -> Array:
    """A built-in activation (by kernel name) as activations.cuh computes it."""
    if activation == "relu":
        return xp.where(a <= 0, 0.0, a)
    if activation == "sigmoid":
        return 1.0 / (1.0 + xp.exp(-a))
    if activation == "tanh":
        return xp.tanh(a)
    raise ValueError(f"no kernel for activation {activation!r}")


def forward64(xp: Any, Ws: list[Array], bs: list[Array], x: Array, activation: str) -> tuple[list[Array], list[Array]]:
    """(inputs of each layer, pre-activations of each layer), in float64."""
    hs, pre = [x], []
    for i, (W, b) in enumerate(zip(Ws, bs)):
        a = hs[-1] @ W + b
        pre.append(a)
        if i < len(Ws) - 1:
            hs.append(activate(xp, a, activation))
    return hs, pre


def log_prob(xp: Any, s: Array, labels: Array) -> Array:
    """log(softmax(s)[label] + 1e-7) over the last axis, as the book's loss has it."""
    mx = s.max(axis=-1, keepdims=True)
    e = xp.exp(s - mx)
    idx = xp.broadcast_to(labels, s.shape[:-1])[..., None]
    el = xp.take_along_axis(e, idx, axis=-1)[..., 0]
    return xp.log(el / e.sum(axis=-1) + CE_DELTA)


def threads_for(rows: int) -> int:
    """A power of two (for the tree sum) covering the batch, 32..256."""
    n = 32
    while n < rows and n < 256:
        n *= 2
    return n


def kernel_names(rows: int, sizes: tuple[int, ...], activation: str) -> dict[str, str]:
    """The instantiations of kernels/numgrad.cu for a net and batch."""
    C, K, T = sizes[-1], sizes[-2], threads_for(rows)
    names = {"base": f"ng_base<{rows}, {C}>", "last": f"ng_last<{rows}, {C}, {K}, {T}>"}
    if len(sizes) > 2:
        names["prev"] = f"ng_prev<{cuda.ACTIVATIONS[activation]}<double>, {rows}, {C}, {sizes[-3]}, {K}, {T}>"
    return names


class Problem:
    """A net, a batch and its stored float64 forward pass."""

    def __init__(self, xp: Any, params: list[Array], x: Array, t: Array, activation: str, lam: float) -> None:
        self.xp, self.activation, self.lam = xp, activation, float(lam)
        self.Ws = [xp.ascontiguousarray(p, dtype=numpy.float64) for p in params[0::2]]
        self.bs = [xp.ascontiguousarray(p, dtype=numpy.float64) for p in params[1::2]]
        self.x = xp.ascontiguousarray(x, dtype=numpy.float64)
        C = self.Ws[-1].shape[1]
        labels = t.argmax(axis=1) if t.ndim == 2 else t % C  # one-hot rows count by their argmax
        self.labels = xp.ascontiguousarray(labels, dtype=numpy.int64)
        self.hs, self.pre = forward64(xp, self.Ws, self.bs, self.x, activation)
        self.rows = int(self.x.shape[0])
        # sum of every squared weight, for the weight-decay term (one host sync per call)
        self.sq = float(sum(float((W * W).sum()) for W in self.Ws)) if self.lam else 0.0

    @property
    def depth(self) -> int:
        return len(self.Ws)

    def sizes(self) -> tuple[int, ...]:
        return (int(self.Ws[0].shape[0]), *(int(W.shape[1]) for W in self.Ws))


def layer_gradient(pb: Problem, i: int, h: float, chunk_bytes: int = 1 << 28) -> Array:
    """Central differences for every W_i then b_i entry (flat), by batched forward passes."""
    xp, L, B = pb.xp, pb.depth, pb.rows
    W, b = pb.Ws[i], pb.bs[i]
    K, J = W.shape
    widest = max(int(w.shape[1]) for w in pb.Ws[i:])
    per_param = 3 * B * widest * 8
    chunk = max(1, chunk_bytes // per_param)
    total = K * J + J
    out = xp.empty(total, numpy.float64)
    for start in range(0, total, chunk):
        p = xp.arange(start, min(total, start + chunk))
        is_w = p < K * J
        j = xp.where(is_w, p % J, p - K * J)
        k = xp.where(is_w, p // J, 0)
        w = xp.where(is_w, W.reshape(-1)[xp.minimum(p, K * J - 1)], b[j])
        x_in = xp.where(is_w[None, :], pb.hs[i][:, k], 1.0)  # (B, P)
        losses = []
        for sign in (1.0, -1.0):
            w2 = w + sign * h  # the value the book writes into the parameter
            a_col = pb.pre[i][:, j] + x_in * (w2 - w)[None, :]
            if i == L - 1:
                s = xp.broadcast_to(pb.pre[i], (p.size, B, J)).copy()
                s[xp.arange(p.size), :, j] = a_col.T
            else:
                dh = activate(xp, a_col, pb.activation) - pb.hs[i + 1][:, j]
                s = pb.pre[i + 1][None] + dh.T[:, :, None] * pb.Ws[i + 1][j][:, None, :]
                for l in range(i + 2, L):
                    s = activate(xp, s, pb.activation) @ pb.Ws[l] + pb.bs[l]
            f = -log_prob(xp, s, pb.labels).sum(axis=1) / B
            if pb.lam:
                sq = xp.where(is_w, pb.sq - w * w + w2 * w2, pb.sq)
                f = f + 0.5 * pb.lam * sq
            losses.append(f)
        out[start : start + p.size] = (losses[0] - losses[1]) / (2 * h)
    return out


def kernel_gradients(device: Any, pb: Problem, h: float) -> dict[int, Array]:
    """Flat gradients of the last layer (and the one before it) from the CUDA kernels."""
    xp, L, B = pb.xp, pb.depth, pb.rows
    sizes = pb.sizes()
    names = kernel_names(B, sizes, pb.activation)
    mod = device.module(cuda.source("numgrad.cu"), list(names.values()))
    T = threads_for(B)
    S = xp.ascontiguousarray(pb.pre[-1])
    base = xp.empty(B, numpy.float64)
    device.launch(mod.get_function(names["base"]), (-(-B // 128), 1, 1), (128, 1, 1), (S, pb.labels, base))
    f64 = numpy.float64
    K, C = sizes[-2], sizes[-1]
    out = {L - 1: xp.empty(K * C + C, numpy.float64)}
    device.launch(
        mod.get_function(names["last"]), (K * C + C, 1, 1), (T, 1, 1),
        (xp.ascontiguousarray(pb.hs[-1]), S, pb.labels, base, pb.Ws[-1], pb.bs[-1], out[L - 1],
         f64(h), f64(pb.sq), f64(pb.lam)),
    )
    if L > 1:
        Kp, J = sizes[-3], sizes[-2]
        out[L - 2] = xp.empty(Kp * J + J, numpy.float64)
        device.launch(
            mod.get_function(names["prev"]), (Kp * J + J, 1, 1), (T, 1, 1),
            (xp.ascontiguousarray(pb.hs[-2]), xp.ascontiguousarray(pb.pre[-2]),
             xp.ascontiguousarray(pb.hs[-1]), S, pb.labels, base, pb.Ws[-2], pb.bs[-2], pb.Ws[-1],
             out[L - 2], f64(h), f64(pb.sq), f64(pb.lam)),
        )
    return out


def numerical_gradient(
    device: Any | None, params: list[Array], x: Array, t: Array, activation: str, lam: float,
    h: float = 1e-4,
) -> list[Array]:
    """Gradients of W1, b1, ..., in the params' dtype; kernels when `device` is given."""
    xp = device.xp if device is not None else numpy
    pb = Problem(xp, params, x, t, activation, lam)
    flat = kernel_gradients(device, pb, h) if device is not None else {}
    grads: list[Array] = []
    for i in range(pb.depth):
        g = flat[i] if i in flat else layer_gradient(pb, i, h)
        K, J = pb.Ws[i].shape
        grads.append(g[: K * J].reshape(K, J).astype(params[2 * i].dtype, copy=False))
        grads.append(g[K * J :].astype(params[2 * i + 1].dtype, copy=False))
    return grads
