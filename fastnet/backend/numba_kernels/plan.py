"""A net's forward and backward pass as a fixed sequence of calls, with its buffers.

A ``StepPlan`` is built once for one set of parameter arrays, batch size and
dtype: it checks the arrays, allocates every work buffer, and afterwards runs
a step as straight-line calls (NumPy's ``dot``/``exp``/``log`` and the kernels
in ``step.py``) with no per-call checks. Each call repeats what
``NumpyBackend`` computes, in NumPy's order, so the results are bit for bit
NumPy's.

Buffers are reused between calls, so a plan must not run in two threads at
once: the backend keeps one cache of plans per thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import Any

import numpy as np
from numba.core.errors import TypingError

from . import step as k
from ._intrinsics import has_clflushopt
from .blas import gemm_address, matches_dot

# Weights at least this large get the self-tuning SGD update (``StepPlan._sgd_tuned``).
TUNED_UPDATE_BYTES = 64 * 1024
_CLFLUSHOPT = has_clflushopt()

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


class FasterWay:
    """Two ways to do the same work, timed as they run: ``pick`` the faster, re-try the other now and then.

    For cache flushes that only pay in some host states (the large weights'
    SGD update, see ``step.flush_lines``; the hidden gradients). A hidden layer's
    gradient buffer was read by the other BLAS thread in the last weight
    product; writing it again waits for that core's copy of each line in turn.
    On this project's 2-core VM that made the 100x50 float64 ``dh`` product
    take 21 µs in one host state and 6 µs in another; flushing the buffer first
    (``clflushopt``, many lines at once) brought the first to ~7 µs and costs
    ~1 µs in the second. Whether it pays is only known by trying.
    """

    PROBE_EVERY = 256

    def __init__(self) -> None:
        self.steps = 0
        self.cost = [0.0, 0.0]  # seconds each way: smoothed for the way in use, the last probe for the other
        self.way = False
        self.probing = False

    def pick(self) -> bool:
        """The way to take now: False the plain one, True the other."""
        plain, other = self.cost
        best = other != 0 and plain != 0 and other < plain
        self.probing = self.steps % self.PROBE_EVERY == self.PROBE_EVERY - 1 or self.steps == 1
        self.way = best != self.probing
        return self.way

    def took(self, seconds: float) -> None:
        """Record how long the picked way took."""
        self.steps += 1
        seen = self.cost[self.way]
        if seen == 0 or self.probing:
            self.cost[self.way] = seconds
        else:  # smoothed: one preempted step moves it by at most 1/8
            self.cost[self.way] = seen + (min(seconds, 2 * seen) - seen) / 8


def _sgd_tuned(chooser: FasterWay, W: Array, gW: Array, b: Array, gb: Array, lr: Any, lam: Any) -> None:
    """``step.sgd_layer``, flushing W's cache lines first when that has been faster (same bits either way)."""
    start = perf_counter()
    if chooser.pick():
        k.flush_lines(W)
    k.sgd_layer(W, gW, b, gb, lr, lam)
    chooser.took(perf_counter() - start)


class StepPlan:
    """Forward, loss, backward and SGD of one MLP for one batch size, into reused buffers."""

    def __init__(self, Ws: list[Array], bs: list[Array], sizes: tuple[int, ...], batch: int,
                 activation: str) -> None:
        dtype = Ws[0].dtype
        self.Ws, self.bs = Ws, bs
        self.batch, self.dtype, self.activation = batch, dtype, activation
        self.relu = relu = activation == "relu"
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
        # per layer: flush W before its SGD update? (None: never; see step.flush_lines)
        self.sgd_flush = [FasterWay() if _CLFLUSHOPT and W.nbytes >= TUNED_UPDATE_BYTES else None for W in Ws]
        # flush the hidden gradients before backprop? (see FasterWay; same bits either way)
        self.flush_hidden = FasterWay() if _CLFLUSHOPT and self.depth > 1 else None
        self.xb: Array = None  # a gathered batch (train_batches)
        self.tb: Array = None
        self.x_shape = (batch, sizes[0])
        self.gemm = self._fused_gemm(sizes, batch, dtype)
        if self.gemm:  # the compiled forward/backward (fused.py) take tuples
            from . import fused

            self.fused = fused
            self.layers = (tuple(Ws), tuple(bs), tuple(self.hidden))
            self.dhidden_t = tuple(self.dhidden)
            self.grads = (tuple(self.gW), tuple(self.gb))
            self.keep = np.full(self.depth, fused.KEEP, np.int64)
            # SGD in the kernel, except the tuned updates, which run after it
            self.sgd_ways = np.array([fused.LATER if s is not None else fused.SGD for s in self.sgd_flush],
                                     np.int64)

    def fits(self, x: Array) -> bool:
        """Whether the compiled passes may take `x` (they call gemm on raw pointers: no shape checks)."""
        if not self.gemm or x.shape != self.x_shape:
            return False
        flags = x.flags
        return flags.c_contiguous and flags.aligned  # numpy.dot would copy anything else first

    def _fused_gemm(self, sizes: tuple[int, ...], batch: int, dtype: Any) -> int:
        """NumPy's gemm for the compiled passes, or 0 to call ``numpy.dot`` from Python.

        Relu nets with a hidden layer, when every product of the step gives
        ``numpy.dot``'s bits through it (checked once per shape).
        """
        if not self.relu or self.depth < 2 or not gemm_address(dtype.char):
            return 0
        if not all(p.flags.writeable and p.flags.aligned for p in (*self.Ws, *self.bs)):
            return 0  # the kernels are compiled for writable, aligned parameters
        products = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            products += [(False, False, batch, n_out, n_in), (True, False, n_in, n_out, batch)]
        products += [(False, True, batch, n_in, n_out) for n_in, n_out in zip(sizes[1:-1], sizes[2:])]
        if all(matches_dot(dtype.char, *shape) for shape in products):
            return gemm_address(dtype.char)
        return 0

    # ------------------------------------------------------------ forward
    def last_input(self, x: Array) -> Array:
        """Run the hidden layers; returns the input of the last affine layer."""
        dot = np.dot
        h = x
        for W, b, a in zip(self.Ws, self.bs, self.hidden):
            dot(h, W, out=a)
            if self.relu:
                k.bias_relu(a, b)
            else:  # 1 / (1 + exp(-(hW + b))), exp by NumPy
                k.bias_negate(a, b)
                np.exp(a, out=a)
                k.sigmoid_finish(a)
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
        if not (self.fits(x) and self._forward(x, z)):
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
        lam_t = self.scalar(lam)
        chooser = self.flush_hidden
        if chooser is not None:
            start = perf_counter()
            if chooser.pick():
                for dh in self.dhidden:
                    k.flush_lines(dh)
        if not (self.fits(x) and self._backward_fused(x, lam, lam_t, sgd_lr, gWs, gbs)):
            self._backward_calls(x, lam, lam_t, sgd_lr, gWs, gbs)
        if chooser is not None:
            chooser.took(perf_counter() - start)
        if not fresh:
            return None
        grads: dict[str, Array] = {}
        for i in range(self.depth):
            grads[f"W{i + 1}"], grads[f"b{i + 1}"] = gWs[i], gbs[i]
        return grads

    # The compiled passes return False, and are not tried again, when Numba cannot
    # type them for these arrays (e.g. a parameter made read-only after the plan
    # was built): typing fails before anything runs, and the caller then takes
    # the call-by-call path.
    def _forward(self, x: Array, z: Array) -> bool:
        Ws, bs, hidden = self.layers
        try:
            self.fused.forward_relu(self.gemm, x, Ws, bs, hidden, z)
        except TypingError:
            self.gemm = 0
            return False
        return True

    def _backward_fused(self, x: Array, lam: float, lam_t: Any, sgd_lr: float | None,
                        gWs: list[Array], gbs: list[Array]) -> bool:
        Ws, bs, hidden = self.layers
        lr = self.scalar(0 if sgd_lr is None else sgd_lr)
        update = self.keep if sgd_lr is None else self.sgd_ways
        grads = self.grads if gWs is self.gW else (tuple(gWs), tuple(gbs))
        try:
            self.fused.backward_relu(self.gemm, x, Ws, bs, hidden, self.dhidden_t, self.dscores, *grads,
                                     update, lr, lam_t, bool(lam))
        except TypingError:
            self.gemm = 0
            return False
        if sgd_lr is not None:
            for i, chooser in enumerate(self.sgd_flush):
                if chooser is not None:
                    _sgd_tuned(chooser, Ws[i], gWs[i], bs[i], gbs[i], lr, lam_t)
        return True

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
                if self.relu:
                    k.relu_backward_sums(dh, self.hidden[i - 1], gbs[i - 1])
                else:
                    k.sigmoid_backward_sums(dh, self.hidden[i - 1], gbs[i - 1])
                d = dh
            if sgd_lr is not None:
                chooser = self.sgd_flush[i]
                if chooser is None:
                    k.sgd_layer(W, gW, self.bs[i], gbs[i], self.scalar(sgd_lr), lam_t)
                else:
                    _sgd_tuned(chooser, W, gW, self.bs[i], gbs[i], self.scalar(sgd_lr), lam_t)
            elif lam:
                k.add_decay(gW.reshape(-1), W.reshape(-1), lam_t)

    def holds(self, params: dict[str, Array], depth: int) -> bool:
        """Whether `params` (of `depth` layers) are exactly this plan's arrays."""
        if depth != self.depth:
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
