"""Numba backend: NumPy arrays, with the hot paths compiled by Numba.

It subclasses the NumPy backend and overrides only what it accelerates, so
every result it does not compute itself comes from the reference code.

Training and prediction (``mlp_predict``, ``mlp_loss``, ``mlp_gradient``,
``mlp_train_step``, ``mlp_train_batches``), the book's layers and the
optimizer rules give the same bits as the NumPy backend: the matrix products
are NumPy's own ``dot`` (written into reused buffers), exp, log and tanh are
NumPy's own ufuncs applied in place, and the Numba kernels (``kernels``,
``activations``, ``optimizers``) do everything else in NumPy's order of
operations, on any CPU, whichever SIMD exp/log NumPy picked there.

Compiled code runs only for what it was written for: the built-in activation
objects (``fastnet.activations.builtin``) and optimizer classes
(``fastnet.optimizers.builtin``). Anything else, a subclass included, takes
the NumPy backend's generic path and gets its results.

Work buffers live in step plans (``plan``) cached per thread
(``threading.local``), per set of parameter arrays, batch size and dtype, so
two threads may train two nets at once. What a call returns is always a fresh
array: ``gradient()`` may be kept across steps, as in the book's loop. Only
``train_step`` / ``train_batches`` keep gradients in internal buffers.

``mlp_numerical_gradient`` is a different algorithm (``numgrad``):
exact central differences from an incremental, parallel kernel; equal to the
book's loop within rounding, not bit for bit. ``numerical_gradient(f, x)`` runs
a compiled loop when ``f`` is a Numba-compiled function.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy

from ... import activations as act_defs
from ...optimizers import builtin as builtin_optimizer
from ..loops import one_blas_thread
from ..numpy_backend import NumpyBackend
from ..spec import MLPSpec, overlapping
from .conv import NumbaConvOps

Array = Any
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
_MAX_PLANS = 6  # per thread; each holds the buffers of one (params, batch size, dtype)


def unavailable_reason() -> str | None:
    try:
        import numba  # noqa: F401 - importable is what is asked
    except ImportError as exc:
        return f"numba cannot be imported ({exc}); install it with: pip install numba"
    return None


_STEP: Any = None


def _kernels() -> Any:
    """The ``kernels`` module, imported on first use (importing it imports Numba)."""
    global _STEP
    if _STEP is None:
        from . import kernels

        _STEP = kernels
    return _STEP


def _compiled_activation(activation: Any) -> Any:
    """The compiled kernels of a built-in activation object, else None."""
    name = act_defs.builtin(activation)
    if name is None:
        return None
    from .activations import KERNELS

    return KERNELS[name]


_NAMES: dict[int, tuple[str, ...]] = {}


def _names(depth: int) -> tuple[str, ...]:
    names = _NAMES.get(depth)
    if names is None:
        names = _NAMES[depth] = tuple(f"{kind}{i}" for i in range(1, depth + 1) for kind in "Wb")
    return names


def _layer_fits(a: Array) -> bool:
    return type(a) is numpy.ndarray and a.dtype in _FLOATS and a.flags.c_contiguous


def _targets_fit(t: Array, y: Array) -> bool:
    """Labels (N,) of integers or one-hot rows of y's shape and dtype, as NumPy arrays."""
    if type(t) is not numpy.ndarray or t.shape[0] != y.shape[0]:
        return False
    if t.ndim == 1:
        return t.dtype.kind in "iu"
    return t.shape == y.shape and t.dtype == y.dtype and t.flags.c_contiguous


class NumbaBackend(NumbaConvOps, NumpyBackend):
    """NumPy arrays; fused Numba kernels for training, prediction and numerical gradients."""

    name = "numba"

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()
        # Numba's "workqueue" threading layer must not run two parallel kernels at once.
        self._parallel_lock = threading.RLock()

    # -------------------------------------------------------------- plans
    def _plan(self, spec: MLPSpec, x: Array) -> Any:
        """This thread's cached StepPlan for spec's arrays and x's batch, or None (use NumPy).

        Plans are keyed by the identity of the parameter arrays (the plan
        holds them, so the ids stay theirs), the batch size and dtype: a
        rebound ``params["W1"]`` simply gets a new plan.
        """
        if type(x) is not numpy.ndarray or x.ndim != 2:
            return None
        local = self._local
        last = getattr(local, "last", None)  # a training loop asks for the same plan each step
        if (last is not None and last.batch == x.shape[0] and last.dtype == x.dtype
                and last.activation is spec.activation and last.holds(spec.params, spec.depth)):
            return last
        params = spec.params
        try:
            arrays = [params[name] for name in _names(spec.depth)]
        except KeyError:
            return None
        key = (x.shape[0], x.dtype.char, id(spec.activation), *map(id, arrays))
        plans = getattr(local, "plans", None)
        if plans is None:
            plans = local.plans = OrderedDict()
        plan = plans.get(key)
        if plan is not None and plan.holds(params, spec.depth):  # not if a shape changed in place
            local.last = plan
            return plan
        compiled = _compiled_activation(spec.activation)
        if compiled is None:
            return None
        from .plan import StepPlan, layer_sizes

        Ws, bs = arrays[0::2], arrays[1::2]
        sizes = layer_sizes(Ws, bs, x)
        if sizes is None or len(params) != len(arrays) or overlapping(arrays, self.address):
            return None
        plan = plans[key] = StepPlan(Ws, bs, sizes, x.shape[0], spec.activation, compiled)
        while len(plans) > _MAX_PLANS:
            plans.popitem(last=False)
        local.last = plan
        return plan

    def clear_buffers(self) -> None:
        """Forget this thread's cached plans and their buffers (rebuilt on demand)."""
        self._local.plans = OrderedDict()
        self._local.last = None
        self._local.__dict__.pop("conv_scratch", None)  # the conv kernels' work arrays

    def check_targets(self, t: Array, n_classes: int, name: str = "t") -> None:
        """The NumPy backend's check in one compiled pass; its error messages on failure."""
        if type(t) is numpy.ndarray and t.size and (t.dtype.kind in "iu" or (t.ndim == 2 and t.dtype in _FLOATS)):
            k = _kernels()
            ok = k.labels_in_range(t, n_classes) if t.ndim == 1 else (
                t.ndim == 2 and k.rows_one_hot(t))
            if ok:
                return
        super().check_targets(t, n_classes, name)

    # ------------------------------------------------------------ layers
    # The book's layers: one compiled pass where the reference makes several
    # (activations, softmax-with-loss); Affine is its products and keeps the reference.
    def activation_forward(self, activation: Any, x: Array) -> tuple[Array, Array]:
        compiled = _compiled_activation(activation)
        if compiled is not None and _layer_fits(x):
            return compiled.forward(x)
        return super().activation_forward(activation, x)

    def activation_backward(self, activation: Any, dout: Array, cache: Array) -> Array:
        compiled = _compiled_activation(activation)
        if (compiled is not None and _layer_fits(dout) and type(cache) is numpy.ndarray
                and cache.flags.c_contiguous and cache.shape == dout.shape
                and cache.dtype in (dout.dtype, numpy.bool_)):
            return compiled.backward(dout, cache)
        return super().activation_backward(activation, dout, cache)

    def softmax_cross_entropy(self, x: Array, t: Array) -> tuple[Array, Array]:
        from . import layers

        if x.ndim == 2 and layers.fits(x) and _targets_fit(t, x):
            return layers.softmax_cross_entropy(x, t)
        return super().softmax_cross_entropy(x, t)

    def softmax_cross_entropy_backward(self, y: Array, t: Array, dout: Any = 1) -> Array:
        from . import layers

        if (isinstance(dout, (int, float)) and dout == 1 and y.ndim == 2 and layers.fits(y)
                and _targets_fit(t, y)):
            return layers.softmax_cross_entropy_backward(y, t)
        return super().softmax_cross_entropy_backward(y, t, dout)

    # --------------------------------------------------------- whole net
    def mlp_predict(self, spec: MLPSpec, x: Array) -> Array:
        plan = self._plan(spec, x)
        if plan is None:
            return super().mlp_predict(spec, x)
        return plan.predict(x)

    def mlp_loss(self, spec: MLPSpec, x: Array, t: Array) -> Array:
        plan = self._plan(spec, x)
        if plan is None:
            return super().mlp_loss(spec, x, t)
        return plan.loss(x, t, spec.weight_decay, backward=False)

    def mlp_gradient(self, spec: MLPSpec, x: Array, t: Array) -> tuple[dict[str, Array], Array]:
        """Backprop; the gradients are fresh arrays (a caller may keep them)."""
        plan = self._plan(spec, x)
        if plan is None:
            return super().mlp_gradient(spec, x, t)
        loss = plan.loss(x, t, spec.weight_decay, backward=True)
        return plan.backward(x, spec.weight_decay, fresh=True), loss

    def mlp_train_step(self, spec: MLPSpec, x: Array, t: Array, optimizer: Any) -> Array:
        """One step. The built-in SGD is fused into the backward pass; any other
        optimizer gets the gradients and runs its own ``update`` (an optimizer
        that is not a built-in gets fresh arrays, as the NumPy backend gives it)."""
        plan = self._plan(spec, x)
        if plan is None:
            return super().mlp_train_step(spec, x, t, optimizer)
        lam = spec.weight_decay
        loss = plan.loss(x, t, lam, backward=True)
        kernel = builtin_optimizer(optimizer)
        if kernel == "sgd":
            plan.backward(x, lam, sgd_lr=optimizer.lr)
        elif kernel is None:
            optimizer.update(spec.params, plan.backward(x, lam, fresh=True))
        else:
            plan.backward(x, lam)
            grads = {}
            for i in range(spec.depth):
                grads[f"W{i + 1}"], grads[f"b{i + 1}"] = plan.gW[i], plan.gb[i]
            optimizer.update(spec.params, grads)
        return loss

    def mlp_train_batches(
        self, spec: MLPSpec, x: Array, t: Array, batches: Iterable[Array], optimizer: Any
    ) -> list[Array]:
        """Steps on ``x[idx], t[idx]``, each batch gathered into a reused buffer."""
        losses = []
        for idx in batches:
            plan = None
            if (isinstance(idx, numpy.ndarray) and idx.ndim == 1 and idx.dtype.kind in "iu"
                    and 0 < idx.shape[0] <= x.shape[0]):
                plan = self._plan(spec, x[: idx.shape[0]])  # a batch of x's kind and size
            if plan is None:
                losses.append(self.mlp_train_step(spec, x[idx], t[idx], optimizer))
            else:
                try:
                    xb, tb = plan.gather(x, t, idx)
                except IndexError:
                    x[idx]  # NumPy's own error, naming the index and the size
                    raise
                losses.append(self.mlp_train_step(spec, xb, tb, optimizer))
        return losses

    # ------------------------------------------------- numerical gradient
    def _numgrad_ready(self, spec: MLPSpec, x: Array, t: Array) -> bool:
        """Whether the incremental kernels can run (NumPy float arrays, a known activation)."""
        arrays = [x, t] + [spec.params[name] for name in spec.names()]
        return (
            _compiled_activation(spec.activation) is not None
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
        import numba

        from .numgrad import net_losses

        # One BLAS thread: BLAS and Numba's threads would fight over the cores.
        # Chunks of one unit, handed out as threads free up: a core shared
        # with another busy thread then does less of the work instead of
        # holding everyone up.
        with self._parallel_lock, one_blas_thread(), numba.parallel_chunksize(1):
            return net_losses(
                spec.params, spec.depth, _compiled_activation(spec.activation).code, float(spec.weight_decay),
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

        Every entry comes from the same deterministic kernels as the whole,
        with the same arithmetic and order over samples (any thread count), so
        shards assembled side by side equal it. Only the kernel of the layer
        that owns `name` runs; for the last two layers only on what the range
        touches (the rows of W, or the units of a range within one row; the
        bias, for b). Layers further back run their whole kernel, then slice.
        The forward pass of the whole batch is shared work every call redoes.
        """
        import numba

        from .numgrad import net_losses

        if not self._numgrad_ready(spec, x, t):
            return super().mlp_numerical_gradient_part(spec, x, t, name, start, stop, h)
        if name not in spec.names():
            raise KeyError(name)
        with self._parallel_lock, one_blas_thread(), numba.parallel_chunksize(1):
            fplus, fminus = net_losses(
                spec.params, spec.depth, _compiled_activation(spec.activation).code, float(spec.weight_decay),
                x, t, float(h), part=(name, int(start), int(stop)),
            )
        return ((fplus[name] - fminus[name]) / (2 * h)).astype(spec.params[name].dtype)

    def numerical_gradient(self, f: Any, x: Array, h: float = 1e-4) -> Array:
        """Compiled central differences when `f` is an ``@numba.njit`` function.

        Any other callable (a Python function, a lambda over a net) gets the
        book's plain loop, exactly as on the NumPy backend. The compiled loop
        runs f on the same in-place-perturbed `x`, serially.
        """
        from . import generic

        if generic.is_compiled(f) and type(x) is numpy.ndarray:
            grad = generic.compiled_gradient(f, x, h)
            if grad is not None:
                return grad
        return super().numerical_gradient(f, x, h)

    # ----------------------------------------------------------- updates
    def apply_rule(self, optimizer: Any, kernel: str | None, p: Array, g: Array,
                   state: list[Array], scalars: tuple[float, ...]) -> None:
        """A built-in rule in one compiled pass (same bits); anything else runs its own rule.

        Arrays that share memory (``update(params, params)``: g is p) take the
        rule: its statements see each other's writes, the compiled pass does not.
        """
        if kernel is not None:
            arrays = (p, g, *state)
            dtype = p.dtype
            if dtype in _FLOATS and all(
                type(a) is numpy.ndarray and a.dtype == dtype and a.flags.c_contiguous
                and a.shape == p.shape for a in arrays
            ) and not any(numpy.may_share_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:]):
                from .optimizers import RULES

                RULES[kernel](*[a.reshape(-1) for a in arrays], *map(float, scalars))
                return
        super().apply_rule(optimizer, kernel, p, g, state, scalars)


Backend = NumbaBackend
