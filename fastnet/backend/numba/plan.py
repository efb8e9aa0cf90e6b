"""A net's forward and backward pass as a fixed sequence of calls, with its buffers.

A ``StepPlan`` is built once for one set of parameter arrays, batch size and
dtype: it checks the arrays, allocates every work buffer, and afterwards runs
a step as straight-line calls (NumPy's ``dot``/``exp``/``log`` and the kernels
in ``kernels.py`` and ``activations.py``) with no per-call checks. Each call repeats what
``NumpyBackend`` computes, in NumPy's order, so the results are bit for bit
NumPy's.

Buffers are reused between calls, so a plan must not run in two threads at
once: the backend keeps one cache of plans per thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import kernels as k

Array = Any
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def layer_sizes(Ws: Sequence[Any], bs: Sequence[Any], x: Any) -> tuple[int, ...] | None:
    """Layer widths when a plan can run these params on `x`, else None.

    Plans need NumPy float32/float64 arrays of x's dtype, C-contiguous
    parameters of matching shapes; anything else stays with NumPy.
    """
    dtype = x.dtype
    if type(x) is not np.ndarray or dtype not in FLOATS or x.ndim != 2:
        return None
    sizes = [x.shape[1]]
    for W, b in zip(Ws, bs):
        if (
            type(W) is not np.ndarray
            or type(b) is not np.ndarray
            or W.dtype != dtype
            or b.dtype != dtype
            or W.ndim != 2
            or b.ndim != 1
            or W.shape[0] != sizes[-1]
            or b.shape[0] != W.shape[1]
            or not W.flags.c_contiguous
            or not b.flags.c_contiguous
        ):
            return None
        sizes.append(W.shape[1])
    return tuple(sizes)


class StepPlan:
    """Forward, loss, backward and SGD of one MLP for one batch size, into reused buffers."""

    def __init__(self, Ws: list[Array], bs: list[Array], sizes: tuple[int, ...], batch: int,
                 activation: Any, compiled: Any) -> None:
        dtype = Ws[0].dtype
        self.Ws, self.bs = Ws, bs
        self.batch, self.dtype, self.activation = batch, dtype, activation
        self.act = compiled  # the activation's kernels (activations.KERNELS)
        # the parameters as (name, array, shape), for ``holds``
        self.named = tuple((f"{kind}{i + 1}", arr, arr.shape) for i in range(len(Ws))
                           for kind, arr in (("W", Ws[i]), ("b", bs[i])))
        self.scalar = dtype.type
        self.depth = len(Ws)
        new = np.empty
        self.hidden = [new((batch, n), dtype) for n in sizes[1:-1]]  # activations
        self.dhidden = [new((batch, n), dtype) for n in sizes[1:-1]]  # their gradients
        self.scores = new((batch, sizes[-1]), dtype)  # scores, then exp(shifted scores)
        self.dscores = new((batch, sizes[-1]), dtype)
        self.picked = new(batch, dtype)  # y[n, t[n]] + 1e-7, then its log
        self.no_backward = new((0, sizes[-1]), dtype)
        self.gW = [new(W.shape, dtype) for W in Ws]
        self.gb = [new(b.shape, dtype) for b in bs]
        self.xb: Array = None  # a gathered batch (train_batches)
        self.tb: Array = None

    # ------------------------------------------------------------ forward
    def last_input(self, x: Array) -> Array:
        """Run the hidden layers; returns the input of the last affine layer."""
        dot = np.dot
        bias_forward = self.act.bias_forward
        h = x
        for W, b, a in zip(self.Ws, self.bs, self.hidden):
            dot(h, W, out=a)
            bias_forward(a, b)
            h = a
        return h

    def predict(self, x: Array) -> Array:
        """Scores (fresh array)."""
        h = self.last_input(x)
        out = np.empty((x.shape[0], self.Ws[-1].shape[1]), x.dtype)
        np.dot(h, self.Ws[-1], out=out)
        k.add_bias(out, self.bs[-1])
        return out

    def loss(self, x: Array, t: Array, lam: float, backward: bool) -> Any:
        """The loss (+ weight decay); with `backward`, dL/dscores and the last db too."""
        z = self.scores
        np.dot(self.last_input(x), self.Ws[-1], out=z)
        k.bias_shift_rows(z, self.bs[-1])
        np.exp(z, out=z)
        kernel = k.softmax_ce_labels if t.ndim == 1 else k.softmax_ce_onehot
        picked = self.picked
        kernel(z, t, picked, self.dscores if backward else self.no_backward, self.gb[-1])
        np.log(picked, out=picked)
        # -sum(log(...)) / batch with NumPy's summation order, as a scalar of the dtype
        loss = -self.scalar(k.pairwise_sum(picked)) / picked.shape[0]
        if lam:
            loss = loss + self.decay_loss(lam)
        return loss

    def decay_loss(self, lam: float) -> Any:
        """lam/2 * sum of squared weights, typed and ordered as NumpyBackend's."""
        total = 0.0
        for W in self.Ws:
            total += 0.5 * lam * self.scalar(k.pairwise_sum_squares(W.reshape(-1)))
        return total

    # ----------------------------------------------------------- backward
    def backward(self, x: Array, lam: float, sgd_lr: float | None = None,
                 fresh: bool = False) -> dict[str, Array] | None:
        """Backprop from ``dscores`` (after ``loss(..., backward=True)``).

        fresh: return new gradient arrays (weight decay included).
        sgd_lr: update each layer by SGD once nothing needs its old weights
        (gradients stay in the plan's buffers). Neither: gradients, decay
        included, are left in ``gW``/``gb`` for an optimizer.
        """
        gWs = [np.empty_like(g) for g in self.gW] if fresh else self.gW
        gbs = [np.empty_like(g) for g in self.gb] if fresh else self.gb
        if fresh:
            gbs[-1][:] = self.gb[-1]  # the softmax kernel put it in the buffer
        self._backward_calls(x, lam, self.scalar(lam), sgd_lr, gWs, gbs)
        if not fresh:
            return None
        grads: dict[str, Array] = {}
        for i in range(self.depth):
            grads[f"W{i + 1}"], grads[f"b{i + 1}"] = gWs[i], gbs[i]
        return grads

    def _backward_calls(self, x: Array, lam: float, lam_t: Any, sgd_lr: float | None,
                        gWs: list[Array], gbs: list[Array]) -> None:
        dot = np.dot
        d = self.dscores
        for i in range(self.depth - 1, -1, -1):
            W, gW = self.Ws[i], gWs[i]
            inputs = x if i == 0 else self.hidden[i - 1]
            dot(inputs.T, d, out=gW)
            if i > 0:
                dh = self.dhidden[i - 1]
                dot(d, W.T, out=dh)  # W's old value: the update comes below
                self.act.backward_sums(dh, self.hidden[i - 1], gbs[i - 1])
                d = dh
            if sgd_lr is not None:
                k.sgd_layer(W, gW, self.bs[i], gbs[i], self.scalar(sgd_lr), lam_t)
            elif lam:
                k.add_decay(gW.reshape(-1), W.reshape(-1), lam_t)

    def holds(self, params: dict[str, Array], depth: int) -> bool:
        """Whether `params` (of `depth` layers) are exactly this plan's arrays."""
        if depth != self.depth or len(params) != len(self.named):
            return False
        get = params.get
        for name, arr, shape in self.named:  # the shape too: `W.shape = ...` keeps the array
            if get(name) is not arr or arr.shape != shape:
                return False
        return True

    def gather(self, x: Array, t: Array, idx: Array) -> tuple[Array, Array]:
        """(x[idx], t[idx]) into reused buffers, for a batch of row indices."""
        if self.xb is None or self.tb.dtype != t.dtype or self.tb.ndim != t.ndim:
            self.xb = np.empty((idx.shape[0], x.shape[1]), x.dtype)
            self.tb = np.empty((idx.shape[0],) + t.shape[1:], t.dtype)
        k.take_rows(x, idx, self.xb)
        if t.ndim == 1:
            k.take(t, idx, self.tb)
        else:
            k.take_rows(t, idx, self.tb)
        return self.xb, self.tb
