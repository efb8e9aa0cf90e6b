"""Numba backend: NumPy arrays, with the hot paths compiled by Numba.

It subclasses the NumPy backend and overrides only what it accelerates, so
every result it does not compute itself comes from the reference code.

Training and prediction (``mlp_predict``, ``mlp_loss``, ``mlp_gradient``,
``mlp_train_step``, ``mlp_train_batches`` and the optimizer updates) give the
same bits as the NumPy backend: the matrix products are NumPy's own ``dot``
(written into reused buffers), exp and log are NumPy's own ufuncs applied in
place, and the Numba kernels in ``numba_kernels.step`` do everything else in
NumPy's order of operations. That holds on any CPU, whichever SIMD exp/log
NumPy picked there.

Work buffers are cached per thread (``threading.local``) and per shape, so two
threads may train two nets at once. What a call returns is always a fresh
array: ``gradient()`` may be kept across steps, as in the book's loop. Only
``train_step`` / ``train_batches`` keep gradients in internal buffers.

``mlp_numerical_gradient`` is a different algorithm (``numba_kernels.numgrad``):
exact central differences from an incremental, parallel kernel; equal to the
book's loop within rounding, not bit for bit. ``numerical_gradient(f, x)`` runs
a compiled loop when ``f`` is a Numba-compiled function.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Iterable

import numpy

from .numpy_backend import NumpyBackend, one_blas_thread
from .spec import MLPSpec

Array = Any
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
_MAX_WORKSPACES = 6  # per thread; each holds the buffers of one (batch, layer sizes, dtype)


def unavailable_reason() -> str | None:
    try:
        import numba  # noqa: F401
    except ImportError as exc:
        return f"numba cannot be imported ({exc}); install it with: pip install numba"
    return None


def _kernels() -> Any:
    from .numba_kernels import step

    return step


class _Workspace:
    """Reused arrays for one (batch size, layer sizes, dtype)."""

    def __init__(self, batch: int, sizes: tuple[int, ...], dtype: numpy.dtype) -> None:
        depth = len(sizes) - 1
        new = numpy.empty
        self.hidden = [new((batch, n), dtype) for n in sizes[1:-1]]  # activations
        self.dhidden = [new((batch, n), dtype) for n in sizes[1:-1]]  # their gradients
        self.scores = new((batch, sizes[-1]), dtype)  # scores, then exp(shifted scores)
        self.dscores = new((batch, sizes[-1]), dtype)
        self.picked = new(batch, dtype)  # y[n, t[n]] + 1e-7, then its log
        self.no_backward = new((0, sizes[-1]), dtype)
        self.gW = [new((sizes[i], sizes[i + 1]), dtype) for i in range(depth)]
        self.gb = [new(sizes[i + 1], dtype) for i in range(depth)]
        self.xb: Array = None  # gathered batches (train_batches)
        self.tb: Array = None


class NumbaBackend(NumpyBackend):
    """NumPy arrays; fused Numba kernels for training, prediction and numerical gradients."""

    name = "numba"

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()
        # Numba's "workqueue" threading layer must not run two parallel kernels at once.
        self._parallel_lock = threading.Lock()

    # ------------------------------------------------------------ buffers
    def _workspace(self, batch: int, sizes: tuple[int, ...], dtype: numpy.dtype) -> _Workspace:
        spaces = getattr(self._local, "spaces", None)
        if spaces is None:
            spaces = self._local.spaces = OrderedDict()
        key = (batch, sizes, dtype.char)
        work = spaces.get(key)
        if work is None:
            work = spaces[key] = _Workspace(batch, sizes, dtype)
            while len(spaces) > _MAX_WORKSPACES:
                spaces.popitem(last=False)
        else:
            spaces.move_to_end(key)
        return work

    def clear_buffers(self) -> None:
        """Free this thread's cached work buffers (they are rebuilt on demand)."""
        self._local.spaces = OrderedDict()

    @staticmethod
    def _sizes(spec: MLPSpec, x: Array) -> tuple[int, ...] | None:
        """Layer widths when the fused kernels can run `spec` on `x`, else None.

        They need float32/float64 NumPy arrays of one dtype, contiguous
        parameters and a known activation; anything else goes to NumPy.
        """
        dtype = x.dtype
        if dtype not in _FLOATS or x.ndim != 2 or spec.activation not in ("relu", "sigmoid"):
            return None
        sizes = [x.shape[1]]
        for i in range(spec.depth):
            W, b = spec.weight(i), spec.bias(i)
            if (
                type(W) is not numpy.ndarray
                or type(b) is not numpy.ndarray
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

    # ------------------------------------------------------ fused passes
    def _hidden(self, spec: MLPSpec, x: Array, work: _Workspace) -> Array:
        """Hidden layers' outputs into ``work.hidden``; returns the last layer's input."""
        k = _kernels()
        h = x
        for i in range(spec.depth - 1):
            a = work.hidden[i]
            numpy.dot(h, spec.weight(i), out=a)
            if spec.activation == "relu":
                k.bias_relu(a, spec.bias(i))
            else:
                k.bias_negate(a, spec.bias(i))
                numpy.exp(a, out=a)
                k.sigmoid_finish(a)
            h = a
        return h

    def _forward(self, spec: MLPSpec, x: Array, work: _Workspace) -> None:
        """Hidden activations into ``work.hidden``; exp(shifted scores) into ``work.scores``."""
        h = self._hidden(spec, x, work)
        z = work.scores
        numpy.dot(h, spec.weight(spec.depth - 1), out=z)
        _kernels().bias_shift_rows(z, spec.bias(spec.depth - 1))
        numpy.exp(z, out=z)

    def _loss_from_scores(
        self, spec: MLPSpec, t: Array, work: _Workspace, backward: bool
    ) -> Any:
        """Cross-entropy (+ weight decay) from ``work.scores``; dL/dscores into ``work.dscores``."""
        k = _kernels()
        kernel = k.softmax_ce_labels if t.ndim == 1 else k.softmax_ce_onehot
        kernel(work.scores, t, work.picked, work.dscores if backward else work.no_backward)
        picked = work.picked
        numpy.log(picked, out=picked)
        batch_size = picked.shape[0]
        loss = -numpy.sum(picked) / batch_size  # NumPy's own sum, as the reference
        if spec.weight_decay:
            loss = loss + self._decay_loss(spec)
        return loss

    def _decay_loss(self, spec: MLPSpec) -> Any:
        from .numba_kernels.reduce import pairwise_sum_squares

        lam = spec.weight_decay
        total = 0.0
        for i in range(spec.depth):
            W = spec.weight(i)
            if type(W) is not numpy.ndarray or not W.flags.c_contiguous:
                return super()._decay_loss(spec)
            total += 0.5 * lam * W.dtype.type(pairwise_sum_squares(W.reshape(-1)))
        return total

    def _backward(
        self,
        spec: MLPSpec,
        x: Array,
        work: _Workspace,
        grads: dict[str, Array] | None,
        sgd_lr: float | None,
    ) -> None:
        """Backprop from ``work.dscores``.

        `grads` given: fresh gradient arrays are stored in it (weight decay
        included). Otherwise gradients stay in ``work`` and, with `sgd_lr`,
        each layer is updated by SGD as soon as nothing needs its old weights.
        """
        k = _kernels()
        dot = numpy.dot
        dtype = work.scores.dtype.type
        lam = spec.weight_decay
        fresh = grads is not None
        gWs = [numpy.empty_like(g) for g in work.gW] if fresh else work.gW
        gbs = [numpy.empty_like(g) for g in work.gb] if fresh else work.gb
        d = work.dscores
        k.column_sums(d, gbs[-1])
        for i in reversed(range(spec.depth)):
            W, gW = spec.weight(i), gWs[i]
            inputs = x if i == 0 else work.hidden[i - 1]
            dot(inputs.T, d, out=gW)
            if i > 0:
                dh = work.dhidden[i - 1]
                dot(d, W.T, out=dh)  # W's old value: it is updated only below
                if spec.activation == "relu":
                    k.relu_backward_sums(dh, work.hidden[i - 1], gbs[i - 1])
                else:
                    k.sigmoid_backward_sums(dh, work.hidden[i - 1], gbs[i - 1])
                d = dh
            if sgd_lr is not None:
                lr = dtype(sgd_lr)
                if lam:
                    k.sgd_decay(W.reshape(-1), gW.reshape(-1), lr, dtype(lam))
                else:
                    k.sgd(W.reshape(-1), gW.reshape(-1), lr)
                k.sgd(spec.bias(i), gbs[i], lr)
            elif lam:
                k.add_decay(gW.reshape(-1), W.reshape(-1), dtype(lam))
        if fresh:
            for i in range(spec.depth):
                grads[f"W{i + 1}"], grads[f"b{i + 1}"] = gWs[i], gbs[i]

    # --------------------------------------------------------- whole net
    def mlp_predict(self, spec: MLPSpec, x: Array) -> Array:
        sizes = self._sizes(spec, x)
        if sizes is None:
            return super().mlp_predict(spec, x)
        work = self._workspace(x.shape[0], sizes, x.dtype)
        h = self._hidden(spec, x, work)
        out = numpy.empty((x.shape[0], sizes[-1]), x.dtype)
        numpy.dot(h, spec.weight(spec.depth - 1), out=out)
        _kernels().add_bias(out, spec.bias(spec.depth - 1))
        return out

    def mlp_loss(self, spec: MLPSpec, x: Array, t: Array) -> Array:
        sizes = self._sizes(spec, x)
        if sizes is None:
            return super().mlp_loss(spec, x, t)
        work = self._workspace(x.shape[0], sizes, x.dtype)
        self._forward(spec, x, work)
        return self._loss_from_scores(spec, t, work, backward=False)

    def mlp_gradient(self, spec: MLPSpec, x: Array, t: Array) -> tuple[dict[str, Array], Array]:
        sizes = self._sizes(spec, x)
        if sizes is None:
            return super().mlp_gradient(spec, x, t)
        work = self._workspace(x.shape[0], sizes, x.dtype)
        self._forward(spec, x, work)
        loss = self._loss_from_scores(spec, t, work, backward=True)
        grads: dict[str, Array] = {}
        self._backward(spec, x, work, grads, None)
        return {name: grads[name] for name in spec.names()}, loss

    def mlp_train_step(self, spec: MLPSpec, x: Array, t: Array, optimizer: Any) -> Array:
        """One step; SGD is fused into the backward pass, other optimizers run their update."""
        sizes = self._sizes(spec, x)
        if sizes is None:
            return super().mlp_train_step(spec, x, t, optimizer)
        work = self._workspace(x.shape[0], sizes, x.dtype)
        self._forward(spec, x, work)
        loss = self._loss_from_scores(spec, t, work, backward=True)
        if getattr(optimizer, "kind", None) == "sgd":
            self._backward(spec, x, work, None, optimizer.lr)
        else:
            self._backward(spec, x, work, None, None)
            grads = {}
            for i in range(spec.depth):
                grads[f"W{i + 1}"], grads[f"b{i + 1}"] = work.gW[i], work.gb[i]
            optimizer.update(spec.params, grads)
        return loss

    def mlp_train_batches(
        self, spec: MLPSpec, x: Array, t: Array, batches: Iterable[Array], optimizer: Any
    ) -> list[Array]:
        """Steps on ``x[idx], t[idx]``, gathering each batch into a reused buffer."""
        k = _kernels()
        losses = []
        for idx in batches:
            if not (isinstance(idx, numpy.ndarray) and idx.ndim == 1 and idx.dtype.kind in "iu"):
                losses.append(self.mlp_train_step(spec, x[idx], t[idx], optimizer))
                continue
            sizes = self._sizes(spec, x)
            if sizes is None:
                losses.append(super().mlp_train_step(spec, x[idx], t[idx], optimizer))
                continue
            work = self._workspace(idx.shape[0], sizes, x.dtype)
            if work.xb is None or work.tb is None or work.tb.dtype != t.dtype or work.tb.ndim != t.ndim:
                work.xb = numpy.empty((idx.shape[0], x.shape[1]), x.dtype)
                work.tb = numpy.empty((idx.shape[0],) + t.shape[1:], t.dtype)
            k.take_rows(x, idx, work.xb)
            if t.ndim == 1:
                k.take(t, idx, work.tb)
            else:
                k.take_rows(t, idx, work.tb)
            losses.append(self.mlp_train_step(spec, work.xb, work.tb, optimizer))
        return losses

    # ------------------------------------------------- numerical gradient
    def _numgrad_ready(self, spec: MLPSpec, x: Array, t: Array) -> bool:
        """Whether the incremental kernels can run (NumPy float arrays, a known activation)."""
        arrays = [x, t] + [spec.params[name] for name in spec.names()]
        return (
            spec.activation in ("relu", "sigmoid")
            and all(type(a) is numpy.ndarray for a in arrays)
            and all(spec.params[name].dtype.kind == "f" for name in spec.names())
            and x.dtype.kind == "f"
            and x.ndim == 2
        )

    def mlp_numerical_losses(
        self, spec: MLPSpec, x: Array, t: Array, h: float = 1e-4
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        """The two losses f(p + h), f(p - h) of every parameter, in float64.

        What ``mlp_numerical_gradient`` differentiates, exposed so tests can
        compare each against a plain forward pass of the perturbed net.
        """
        from .numba_kernels.numgrad import net_losses

        with self._parallel_lock, one_blas_thread():
            return net_losses(
                spec.params, spec.depth, spec.activation == "relu", float(spec.weight_decay),
                x, t, float(h),
            )

    def mlp_numerical_gradient(
        self, spec: MLPSpec, x: Array, t: Array, h: float = 1e-4
    ) -> dict[str, Array]:
        """The book's central differences for every parameter, from exact incremental losses.

        Equal to the NumPy backend's loop within rounding (its losses are
        computed in float64 here, in the net's dtype there), not bit for bit.
        """
        if not self._numgrad_ready(spec, x, t):
            return super().mlp_numerical_gradient(spec, x, t, h)
        fplus, fminus = self.mlp_numerical_losses(spec, x, t, h)
        return {
            name: ((fplus[name] - fminus[name]) / (2 * h)).astype(spec.params[name].dtype)
            for name in spec.names()
        }

    def mlp_numerical_gradient_part(
        self, spec: MLPSpec, x: Array, t: Array, name: str, start: int, stop: int, h: float = 1e-4
    ) -> Array:
        """Entries ``start:stop`` of ``mlp_numerical_gradient``'s flat ``params[name]``, bit for bit.

        Every entry comes from the same deterministic kernels as the whole
        (any thread count), so shards assembled side by side equal it. Each
        call computes the whole net's losses: on this backend one machine is
        faster than splitting the work.
        """
        if not self._numgrad_ready(spec, x, t):
            return super().mlp_numerical_gradient_part(spec, x, t, name, start, stop, h)
        return self.mlp_numerical_gradient(spec, x, t, h)[name].reshape(-1)[start:stop].copy()

    def numerical_gradient(self, f: Any, x: Array, h: float = 1e-4) -> Array:
        """Compiled central differences when `f` is an ``@numba.njit`` function.

        Any other callable (a Python function, a lambda over a net) gets the
        book's plain loop, exactly as on the NumPy backend. The compiled loop
        runs f on the same in-place-perturbed `x`, serially.
        """
        from .numba_kernels import generic

        if generic.is_compiled(f) and type(x) is numpy.ndarray:
            grad = generic.compiled_gradient(f, x, h)
            if grad is not None:
                return grad
        return super().numerical_gradient(f, x, h)

    # ----------------------------------------------------------- updates
    # Same statements as NumpyBackend's, in one pass; scalars are converted
    # to the arrays' dtype exactly as NumPy converts a Python float.
    @staticmethod
    def _flat(*arrays: Array) -> list[Array] | None:
        dtype = arrays[0].dtype
        if dtype not in _FLOATS:
            return None
        for a in arrays:
            if type(a) is not numpy.ndarray or a.dtype != dtype or not a.flags.c_contiguous:
                return None
            if a.shape != arrays[0].shape:
                return None
        return [a.reshape(-1) for a in arrays]

    def sgd_update(self, p: Array, g: Array, lr: float) -> None:
        flat = self._flat(p, g)
        if flat is None:
            return super().sgd_update(p, g, lr)
        _kernels().sgd(*flat, p.dtype.type(lr))

    def momentum_update(self, p: Array, g: Array, v: Array, lr: float, momentum: float) -> None:
        flat = self._flat(p, g, v)
        if flat is None:
            return super().momentum_update(p, g, v, lr, momentum)
        dt = p.dtype.type
        _kernels().momentum(*flat, dt(lr), dt(momentum))

    def nesterov_update(self, p: Array, g: Array, v: Array, lr: float, momentum: float) -> None:
        flat = self._flat(p, g, v)
        if flat is None:
            return super().nesterov_update(p, g, v, lr, momentum)
        dt = p.dtype.type
        _kernels().nesterov(
            *flat, dt(lr), dt(momentum), dt(momentum * momentum), dt((1 + momentum) * lr)
        )

    def adagrad_update(self, p: Array, g: Array, h: Array, lr: float, eps: float = 1e-7) -> None:
        flat = self._flat(p, g, h)
        if flat is None:
            return super().adagrad_update(p, g, h, lr, eps)
        dt = p.dtype.type
        _kernels().adagrad(*flat, dt(lr), dt(eps))

    def rmsprop_update(
        self, p: Array, g: Array, h: Array, lr: float, decay: float, eps: float = 1e-7
    ) -> None:
        flat = self._flat(p, g, h)
        if flat is None:
            return super().rmsprop_update(p, g, h, lr, decay, eps)
        dt = p.dtype.type
        _kernels().rmsprop(*flat, dt(lr), dt(decay), dt(1 - decay), dt(eps))

    def adam_update(
        self,
        p: Array,
        g: Array,
        m: Array,
        v: Array,
        lr_t: float,
        beta1: float,
        beta2: float,
        eps: float = 1e-7,
    ) -> None:
        flat = self._flat(p, g, m, v)
        if flat is None:
            return super().adam_update(p, g, m, v, lr_t, beta1, beta2, eps)
        dt = p.dtype.type
        _kernels().adam(*flat, dt(lr_t), dt(1 - beta1), dt(1 - beta2), dt(eps))


Backend = NumbaBackend
