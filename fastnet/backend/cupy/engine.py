"""What the CuPy backend calls: pick a layout, run its plan, say when to fall back.

Every entry point returns None when the fused path does not apply (a dtype
other than float32/float64, an activation or optimizer that is not exactly
a built-in one, ...); the backend then runs the inherited NumPy-style code on
CuPy arrays. With ``strict`` set, a failure to build or run a plan raises
instead of falling back, so tests can tell the fused path really ran.

The engine's one cache is ``plans``: a compiled plan per ``Layout``, the
least recently used dropped beyond ``max_plans``; ``clear()`` drops all.
Each plan keeps its own cache of bindings and graphs (``plan.Plan``).
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections import OrderedDict
from typing import Any

import numpy

from ... import activations, optimizers
from ..spec import ConvSpec
from . import numgrad
from .launch import Hardware, fits_grid, rows_shape
from .plan import Layout, Overlap, Plan
from .plan_conv import ConvPlan, blocks
from .plan_rows import RowsPlan
from .plan_tiled import TiledPlan

Array = Any
FLOAT_DTYPES = ("float32", "float64")


def _locked(method: Any) -> Any:
    """Plans hold static buffers: one thread at a time may run them."""

    @functools.wraps(method)
    def wrapper(self: FusedEngine, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper


class FusedEngine:
    """Fused kernels and CUDA graphs for MLPSpec nets (and ConvSpec training) on one device.

    Settings (attributes, read at every call): ``use_graphs``,
    ``blas_min_flops`` (cuBLAS from this many flops per layer),
    ``rows_max_traffic`` (the two-kernel step's limit), ``max_plans``.
    """

    def __init__(self, device: Any, *, hardware: Hardware | None = None, use_graphs: bool = True,
                 blas_min_flops: float = 2.0**28, max_plans: int = 16, strict: bool = False,
                 rows_max_traffic: float = 2.0**26) -> None:
        self.device = device
        self.hw = hardware or device.hardware()
        self.use_graphs = use_graphs
        # a layer whose forward matmul has at least this many flops uses cuBLAS: for
        # 784-1000-1000-10 at B=1000, 427 us against 1.61 ms tiled (bench_gpu.py gpu-crossover)
        self.blas_min_flops = blas_min_flops
        # the two-kernel step reads every weight once per block of rows; past this many bytes
        # of such reads the tiled kernels win (784-50-10: 40 us against 79 us at B=1000)
        self.rows_max_traffic = rows_max_traffic
        self.max_plans = max_plans
        self.strict = strict
        self.plans: OrderedDict[Layout, Plan] = OrderedDict()
        self.lock = threading.RLock()
        self._warned: set[str] = set()

    def clear(self) -> None:
        """Drop every plan, with the device memory and graphs it holds."""
        with self.lock:
            self.plans.clear()

    # ------------------------------------------------------------- helpers
    def _fallback(self, what: str, exc: BaseException) -> None:
        self.plans.clear()  # a run that broke off may have left a plan's counters out of step
        if self.strict:
            raise exc
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"fastnet: fused CUDA {what} failed, using plain CuPy ({exc!r})", RuntimeWarning, stacklevel=4)

    def _layout(self, spec: Any, x: Array, t: Array | None, stage: str, rule: str | None = None,
                steps: int = 0) -> Layout | None:
        if isinstance(spec, ConvSpec):
            return self._conv_layout(spec, x, t, stage, rule, steps)
        act = activations.builtin(spec.activation)
        dtype = numpy.dtype(x.dtype).name
        if dtype not in FLOAT_DTYPES or act is None or spec.depth < 1:
            return None
        params = [spec.params[k] for k in spec.names()]
        sizes = [int(params[0].shape[0])] + [int(p.shape[1]) for p in params[0::2]]
        for i, (W, b) in enumerate(zip(params[0::2], params[1::2])):
            if W.shape != (sizes[i], sizes[i + 1]) or b.shape != (sizes[i + 1],):
                return None
            if W.dtype != x.dtype or b.dtype != x.dtype or not (W.flags.c_contiguous and b.flags.c_contiguous):
                return None
        if len(spec.params) != len(params):
            return None  # an entry the reference's optimizer would refuse
        rows = int(x.shape[0])
        if not fits_grid(max(rows, max(sizes[:-1]) + 1), self.hw):
            return None  # a tiled product with more row blocks than the grid holds
        onehot = t is not None and t.ndim == 2
        decay = float(spec.weight_decay or 0.0)
        blas = tuple(2.0 * rows * a * b >= self.blas_min_flops for a, b in zip(sizes, sizes[1:]))
        shape = None if any(blas) else rows_shape(tuple(sizes), rows, numpy.dtype(dtype).itemsize, self.hw)
        if shape is not None:
            weights = sum(a * b + b for a, b in zip(sizes, sizes[1:])) * shape.itemsize
            if weights * shape.blocks <= self.rows_max_traffic:
                return Layout(tuple(sizes), rows, dtype, act, onehot, decay, stage, rule, steps > 0, (),
                              shape.per_block, steps)
        return Layout(tuple(sizes), rows, dtype, act, onehot, decay, stage, rule, steps > 0, blas, 0, steps)

    def _conv_layout(self, spec: ConvSpec, x: Array, t: Array | None, stage: str, rule: str | None,
                     steps: int) -> Layout | None:
        """The layout of a ConvSpec net on images x (N, C, H, W); always tiled products. The spec
        comes from ``conv_spec``, which has checked that the params fit the layers
        (``ConvNet.params_fit_layers``: names, dtype, contiguity, shapes)."""
        dtype = numpy.dtype(x.dtype).name
        if dtype not in FLOAT_DTYPES or x.ndim != 4:
            return None
        params = [spec.params[k] for k in spec.names()]
        rows = int(x.shape[0])
        conv = (*x.shape[1:], *((int(W.shape[0]), int(W.shape[2]), int(W.shape[3]), int(stride), int(pad), int(pool))
                                for (stride, pad, pool), W in zip(spec.convs, params[0::2])))
        geometry = blocks(conv)
        tallest = max(max(rows * block.out_hw[0] * block.out_hw[1], block.FN) for block in geometry)
        last = geometry[-1]
        c, (h, w) = last.FN, (last.pooled_hw if last.pool else last.out_hw)
        sizes = (c * h * w, int(params[-4].shape[-1]), int(params[-2].shape[-1]))
        if not fits_grid(max(tallest, sizes[0] + 1, sizes[1] + 1), self.hw):
            return None  # a product with more row blocks than the grid holds
        onehot = t is not None and t.ndim == 2
        return Layout(sizes, rows, dtype, "relu", onehot, 0.0, stage, rule, steps > 0, (), 0, steps, conv,
                      bool(spec.dropouts))

    def _plan(self, layout: Layout) -> Plan:
        plan = self.plans.get(layout)
        if plan is not None:
            self.plans.move_to_end(layout)
            plan.use_graph = self.use_graphs
            return plan
        kind = ConvPlan if layout.conv else RowsPlan if layout.rows_per_block else TiledPlan
        plan = self.plans[layout] = kind(self.device, layout, self.hw, self.use_graphs)
        while len(self.plans) > self.max_plans:
            self.plans.popitem(last=False)
        return plan

    def _contiguous(self, a: Array, dtype: Any = None) -> Array:
        if a.flags.c_contiguous and (dtype is None or a.dtype == dtype):
            return a
        return self.device.xp.ascontiguousarray(a, dtype=dtype)

    def _state(self, spec: Any, optimizer: Any) -> list[list[Array]] | None:
        """The optimizer's state arrays (``slots``), one list per state name."""
        per_param = [optimizer.slots(key, spec.params[key]) for key in spec.names()]
        for key, slots in zip(spec.names(), per_param):
            p = spec.params[key]
            if any(s.shape != p.shape or s.dtype != p.dtype or not s.flags.c_contiguous for s in slots):
                return None
        return [list(row) for row in zip(*per_param)]

    def _run(self, spec: Any, layout: Layout, x: Array, t: Array | None, state: list[list[Array]]) -> tuple[Plan, int]:
        """One run of a layout's plan on a batch; (the plan, its loss slot)."""
        plan = self._plan(layout)
        xb, tb = plan.batch(self._contiguous(x), None if t is None else self._contiguous(t))
        slot = plan.reserve(1) if layout.stage != "predict" else 0
        plan.bind([spec.params[k] for k in spec.names()], state, xb, tb).launch()
        return plan, slot

    # --------------------------------------------------------- entry points
    @_locked
    def predict(self, spec: Any, x: Array) -> Array | None:
        layout = self._layout(spec, x, None, "predict")
        if layout is None:
            return None
        try:
            plan, _ = self._run(spec, layout, x, None, [])
            return plan.scores.copy()
        except Exception as exc:
            self._fallback("predict", exc)
            return None

    @_locked
    def loss(self, spec: Any, x: Array, t: Array) -> Array | None:
        layout = self._layout(spec, x, t, "loss")
        if layout is None:
            return None
        try:
            plan, slot = self._run(spec, layout, x, t, [])
            return self.device.item_view(plan.ring, slot)
        except Exception as exc:
            self._fallback("loss", exc)
            return None

    @_locked
    def gradient(self, spec: Any, x: Array, t: Array) -> tuple[dict[str, Array], Array] | None:
        layout = self._layout(spec, x, t, "grad")
        if layout is None:
            return None
        try:
            plan, slot = self._run(spec, layout, x, t, [])
            flat = plan.gflat.copy()  # the caller keeps these; the plan's buffer is reused
            grads = {}
            for name, off, view in zip(spec.names(), plan.grad_offsets, plan.grads):
                grads[name] = flat[off : off + view.size].reshape(view.shape)
            return grads, self.device.item_view(plan.ring, slot)
        except Exception as exc:
            self._fallback("gradient", exc)
            return None

    @_locked
    def train_step(self, spec: Any, x: Array, t: Array, optimizer: Any, masks: Any = None) -> Array | None:
        """One step; `masks()` gives the dropout masks of a layout with dropout (drawn only
        once the step is sure to run here)."""
        rule = optimizers.builtin(optimizer)
        if rule is None:
            return None  # not a built-in rule: the optimizer's own update runs
        layout = self._layout(spec, x, t, "train", rule)
        state = self._state(spec, optimizer) if layout is not None else None
        if layout is None or state is None or (layout.dropout and masks is None):
            return None
        saved = dict(vars(optimizer))
        try:
            plan = self._plan(layout)
            if layout.dropout:
                plan.set_masks(masks())
            plan.set_scalars([optimizer.step_scalars()])
            plan, slot = self._run(spec, layout, x, t, state)
            return self.device.item_view(plan.ring, slot)
        except Overlap:
            vars(optimizer).update(saved)
            return None
        except Exception as exc:
            vars(optimizer).update(saved)  # step_scalars() ran: the fallback's update counts this step
            self._fallback("training step", exc)
            return None

    @_locked
    def train_batches(self, spec: Any, x: Array, t: Array, batches: Any, optimizer: Any) -> Array | None:
        """Steps over mini-batches of a data set already on the device.

        `batches` is a (steps, rows) index array (what ``batch_indices``
        gives) or a sequence of equal-length index arrays. The epoch is one
        captured graph whose steps gather their rows on the device, each
        reading its own row of the optimizer's scalars. Returns the losses as
        one 1-D device array (no sync).
        """
        rule = optimizers.builtin(optimizer)
        if rule is None:
            return None
        xp = self.device.xp
        if getattr(batches, "ndim", None) == 2:
            idx = xp.asarray(batches)
        else:
            batches = list(batches)
            if not batches or len({int(b.shape[0]) for b in batches}) != 1 or any(b.ndim != 1 for b in batches):
                return None  # ragged batches: the caller steps one at a time
            if all(isinstance(b, numpy.ndarray) for b in batches):  # host indices: one copy
                idx = xp.asarray(numpy.stack(batches))
            else:
                idx = xp.stack([xp.asarray(b) for b in batches])
        if idx.dtype.kind not in "iu" or idx.shape[0] == 0 or idx.shape[1] == 0:
            return None
        steps, rows = int(idx.shape[0]), int(idx.shape[1])
        X = self._contiguous(x)
        T = self._contiguous(t, numpy.int64 if t.ndim == 1 else None)
        layout = self._layout(spec, X[:rows], T[:rows], "train", rule, steps)
        state = self._state(spec, optimizer) if layout is not None else None
        if layout is None or state is None or layout.dropout:
            return None  # dropout: each step takes its masks (the caller steps one at a time)
        saved = dict(vars(optimizer))
        try:
            plan = self._plan(layout)
            plan.start_batches(xp.ascontiguousarray(idx, dtype=numpy.int64))
            first = plan.reserve(steps)
            plan.set_scalars([optimizer.step_scalars() for _ in range(steps)])
            params = [spec.params[k] for k in spec.names()]
            plan.bind(params, state, plan.x, None, (X, T), steps).launch(steps)
            return plan.ring[first : first + steps]  # a view: a full ring is replaced, never reused
        except Overlap:
            vars(optimizer).update(saved)
            return None
        except Exception as exc:
            vars(optimizer).update(saved)
            self._fallback("epoch", exc)
            return None

    @_locked
    def numerical_gradient(self, spec: Any, x: Array, t: Array, h: float) -> dict[str, Array] | None:
        act = activations.builtin(spec.activation)
        if act is None or spec.depth < 1:
            return None
        names = spec.names()
        try:
            grads = numgrad.numerical_gradient(
                self.device, [spec.params[k] for k in names], x, t, act, float(spec.weight_decay or 0.0), h,
            )
        except Exception as exc:
            self._fallback("numerical gradient", exc)
            return None
        return dict(zip(names, grads))
