"""What the CuPy backend calls: pick, build and cache plans; say when to fall back.

Every entry point returns None when the fused path does not apply (a dtype
other than float32/float64, an unknown optimizer, ...); the backend then
runs the inherited NumPy-style code on CuPy arrays. With ``strict`` set, a
failure to build or run a plan raises instead of falling back, so tests can
tell the fused path really ran.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections import OrderedDict
from typing import Any

import numpy

from ... import activations, optimizers
from . import numgrad
from .plan import Layout, Plan
from .plan_rows import RowsPlan
from .source_rows import rows_shape

Array = Any
FLOAT_DTYPES = ("float32", "float64")


def _snapshot(optimizer: Any) -> dict[str, Any]:
    """The optimizer's attributes, to put back when a fused step fails after
    ``step_scalars()`` advanced them (the fallback's own update counts the step)."""
    return dict(vars(optimizer))


def _restore(optimizer: Any, saved: dict[str, Any]) -> None:
    vars(optimizer).clear()
    vars(optimizer).update(saved)


def _locked(method: Any) -> Any:
    """Plans hold static buffers: one thread at a time may run them."""

    @functools.wraps(method)
    def wrapper(self: FusedEngine, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class _Plans(OrderedDict):
    """The plan cache; counts removals, so a memo of a plan can tell it was dropped."""

    removals = 0

    def clear(self) -> None:
        self.removals += 1
        super().clear()

    def popitem(self, last: bool = True) -> Any:
        self.removals += 1
        return super().popitem(last)

    def __delitem__(self, key: Any) -> None:
        self.removals += 1
        super().__delitem__(key)


# settings that change which plan a call gets: setting one forgets the memo of train_step and gradient
_SETTINGS = ("use_graphs", "blas_min_flops", "rows_max_traffic", "rows_per_block", "rows_threads", "rows_prefetch",
             "rows_compact", "rows_split", "tuning", "max_plans")


class FusedEngine:
    """Fused kernels and CUDA graphs for MLPSpec nets on one device.

    Settings (attributes): ``use_graphs``, ``blas_min_flops`` (cuBLAS from
    this many flops per layer), ``rows_max_traffic`` (the two-kernel step's
    limit), ``rows_threads`` and ``rows_per_block`` (its block shape),
    ``rows_prefetch``, ``rows_compact`` and ``rows_split`` (see
    ``source_rows``; kept switchable so benchmarks can time each),
    ``tuning`` (tiled-kernel overrides; after changing it in place, call
    ``clear()``), ``max_plans``. ``clear()`` drops every plan.
    """

    def __init__(
        self,
        device: Any,
        *,
        use_graphs: bool = True,
        blas_min_flops: float = 2.0**28,
        max_plans: int = 16,
        strict: bool = False,
        rows_max_traffic: float = 2.0**26,
    ) -> None:
        self.device = device
        self.use_graphs = use_graphs
        # a layer whose forward matmul has at least this many flops uses cuBLAS
        # (faster for big layers, but then the step cannot be captured in a graph)
        self.blas_min_flops = blas_min_flops
        self.max_plans = max_plans
        # the two-kernel step reads every weight once per block of rows; past
        # this many bytes of such reads the tiled kernels (or cuBLAS) win
        self.rows_max_traffic = rows_max_traffic
        self.rows_per_block: int | None = None  # None: rows_shape's rule
        self.rows_threads = 1024  # threads per block of the row kernel
        self.rows_prefetch = True  # row kernel: weights loaded while its rows arrive
        self.rows_compact = True  # row kernel copies a gathered batch for the parameter kernel
        self.rows_split: int = 0  # parameter kernel: threads per parameter (0: the size rule)
        self.strict = strict
        self.tuning: dict[str, int] = {}  # Layout overrides: target_blocks, min_split_k
        self.plans: _Plans = _Plans()
        self._warned: set[str] = set()
        self._datasets: OrderedDict[tuple, Array] = OrderedDict()
        self._lock = threading.RLock()
        # train_step's memo: what the slow checks found, valid while the same
        # arrays are bound (see _fast_plan)
        self._fast: dict[tuple, tuple[Plan, tuple, tuple, int, Any]] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "rows_threads" and (not isinstance(value, int) or value not in (32, 64, 128, 256, 512, 1024)):
            raise ValueError(f"rows_threads must be a power of two from 32 to 1024, got {value!r}")
        if name == "rows_per_block" and value is not None and value not in (1, 2, 4, 8):
            raise ValueError(f"rows_per_block must be 1, 2, 4, 8 or None (the size rule), got {value!r}")
        if name == "rows_split" and value not in (0, 1, 2, 4, 8, 16, 32, 64):
            raise ValueError(f"rows_split must be 0 (the size rule) or a power of two up to 64, got {value!r}")
        if name in ("rows_prefetch", "rows_compact") and not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
        super().__setattr__(name, value)
        if name in _SETTINGS and "_fast" in self.__dict__:
            self._fast.clear()

    def clear(self) -> None:
        """Drop every plan (and the device memory they hold) and the converted data sets."""
        with self._lock:
            self.plans.clear()
            self._fast.clear()
            self._datasets.clear()

    # ------------------------------------------------------------- helpers
    def _fallback(self, what: str, exc: BaseException) -> None:
        self.plans.clear()  # a run that broke off may have left a plan's counters out of step
        if self.strict:
            raise exc
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"fastnet: fused CUDA {what} failed, using plain CuPy ({exc!r})", RuntimeWarning, stacklevel=4)

    def _layout(self, spec: Any, x: Array, t: Array | None, stage: str, rule: str | None = None,
                gather: bool = False) -> Layout | None:
        params = [spec.params[k] for k in spec.names()]
        dtype = numpy.dtype(x.dtype).name
        act = activations.builtin(spec.activation)
        if dtype not in FLOAT_DTYPES or act is None or spec.depth < 1:
            return None
        sizes = [int(params[0].shape[0])] + [int(p.shape[1]) for p in params[0::2]]
        for i, (W, b) in enumerate(zip(params[0::2], params[1::2])):
            if W.shape != (sizes[i], sizes[i + 1]) or b.shape != (sizes[i + 1],):
                return None
            if W.dtype != x.dtype or b.dtype != x.dtype or not (W.flags.c_contiguous and b.flags.c_contiguous):
                return None
        rows = int(x.shape[0]) if not gather else int(t.shape[0])  # type: ignore[union-attr]
        onehot = t is not None and t.ndim == 2
        decay = float(spec.weight_decay or 0.0)
        blas = tuple(2.0 * rows * a * b >= self.blas_min_flops for a, b in zip(sizes, sizes[1:]))
        shape = None if any(blas) else rows_shape(tuple(sizes), rows, numpy.dtype(dtype).itemsize,
                                                  self.rows_per_block, self.rows_threads, self.rows_prefetch,
                                                  self.rows_compact, self.rows_split)
        if shape is not None:
            weights = sum(a * b + b for a, b in zip(sizes, sizes[1:])) * shape.itemsize
            if weights * shape.blocks <= self.rows_max_traffic:
                return Layout(tuple(sizes), rows, dtype, act, onehot, decay, stage, rule, gather, (),
                              rows_per_block=shape.per_block, rows_threads=shape.threads,
                              rows_prefetch=shape.prefetch, rows_compact=shape.compact, rows_split=shape.split,
                              **self.tuning)
        return Layout(tuple(sizes), rows, dtype, act, onehot, decay,
                      stage, rule, gather, blas, **self.tuning)

    def _plan(self, layout: Layout, params: list[Array], state: list[list[Array]] | None = None,
              data: tuple[Array, Array] | None = None, steps: int = 0) -> Plan:
        ptr = self.device.ptr
        bound = tuple(ptr(p) for p in params)
        if state:
            bound += tuple(ptr(s) for slots in state for s in slots)
        if data is not None:
            bound += (ptr(data[0]), ptr(data[1]), data[0].shape[0])
        key = (layout, bound)
        plan = self.plans.get(key)
        if plan is not None and plan.steps >= steps:
            self.plans.move_to_end(key)
            return plan
        kind = RowsPlan if layout.rows_per_block else Plan
        plan = kind(self.device, layout, params, state, data, steps, self.use_graphs)
        self.plans[key] = plan
        while len(self.plans) > self.max_plans:
            self.plans.popitem(last=False)
        return plan

    @staticmethod
    def _contiguous(xp: Any, a: Array) -> Array:
        return a if a.flags.c_contiguous else xp.ascontiguousarray(a)

    def _dataset(self, a: Array, dtype: Any) -> Array:
        """`a` contiguous in `dtype`, converting a data set once, not every epoch."""
        if a.dtype == dtype and a.flags.c_contiguous:
            return a
        key = (self.device.ptr(a), a.shape, a.strides, a.dtype.str, numpy.dtype(dtype).str)
        out = self._datasets.get(key)
        if out is None:
            out = self._datasets[key] = self.device.xp.ascontiguousarray(a, dtype=dtype)
            while len(self._datasets) > 2:
                self._datasets.popitem(last=False)
        return out

    def _state(self, spec: Any, optimizer: Any) -> list[list[Array]] | None:
        """The optimizer's state arrays (``slots``), one list per state name."""
        per_param = [optimizer.slots(key, spec.params[key]) for key in spec.names()]
        for key, slots in zip(spec.names(), per_param):
            p = spec.params[key]
            if any(s.shape != p.shape or s.dtype != p.dtype or not s.flags.c_contiguous for s in slots):
                return None
        return [list(row) for row in zip(*per_param)] if per_param and per_param[0] else []

    # --------------------------------------------------------- entry points
    @_locked
    def predict(self, spec: Any, x: Array) -> Array | None:
        layout = self._layout(spec, x, None, "predict")
        if layout is None:
            return None
        try:
            plan = self._plan(layout, [spec.params[k] for k in spec.names()])
            plan.load(self._contiguous(self.device.xp, x), None)
            plan.launch()
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
            plan = self._plan(layout, [spec.params[k] for k in spec.names()])
            return self._run(plan, x, t)
        except Exception as exc:
            self._fallback("loss", exc)
            return None

    @_locked
    def gradient(self, spec: Any, x: Array, t: Array) -> tuple[dict[str, Array], Array] | None:
        key, plan = self._fast_plan(spec, x, t, None, "grad")
        if plan is None:
            layout = self._layout(spec, x, t, "grad")
            if layout is None:
                return None
        try:
            if plan is None:
                params = [spec.params[k] for k in spec.names()]
                plan = self._plan(layout, params)
                self._remember(key, plan, tuple(params), None)
            loss = self._run(plan, x, t)
            flat = plan.gflat.copy()  # the caller keeps these; the plan's buffer is reused
            grads = {}
            for name, (off, view) in zip(spec.names(), plan.grad_offsets()):
                grads[name] = flat[off : off + view.size].reshape(view.shape)
            return grads, loss
        except Exception as exc:
            self._fast.clear()
            self._fallback("gradient", exc)
            return None

    def _fast_plan(self, spec: Any, x: Array, t: Array, optimizer: Any,
                   stage: str = "train") -> tuple[tuple, Plan | None]:
        """The plan the last identical call used, if every array it bound is still in place.

        A step's host work is otherwise dominated by re-deriving the layout and
        re-checking every array; with the same parameter and state objects
        (same shapes, hence same memory) the answer cannot have changed.
        """
        key = (stage, id(spec.params), id(optimizer), spec.activation, spec.weight_decay, spec.depth,
               x.shape, x.dtype, t.shape, t.dtype)
        hit = self._fast.get(key)
        if hit is None:
            return key, None
        plan, arrays, shapes, removals, owner = hit
        if removals != self.plans.removals or owner is not optimizer:  # a plan dropped since; an id reused
            return key, None
        names = spec.names()
        params = spec.params
        dicts = [params]
        state = getattr(optimizer, "state", None)
        if state:
            try:
                dicts += [state[s] for s in getattr(optimizer, "state_names", ())]
            except KeyError:  # the state was reset: rebuild through the slow path
                return key, None
        if len(dicts) * len(names) != len(arrays) or not x.flags.c_contiguous:
            return key, None
        n = 0
        for d in dicts:  # the same objects, with the same shapes, as when the plan was built
            for k in names:
                a = d.get(k)
                if a is not arrays[n] or a.shape != shapes[n]:
                    return key, None
                n += 1
        return key, plan

    @_locked
    def train_step(self, spec: Any, x: Array, t: Array, optimizer: Any) -> Array | None:
        rule = optimizers.builtin(optimizer)
        if rule is None:
            return None  # not a built-in rule: the optimizer's own update runs
        key, plan = self._fast_plan(spec, x, t, optimizer)
        if plan is None:
            layout = self._layout(spec, x, t, "train", rule)
            state = self._state(spec, optimizer) if layout is not None else None
            if layout is None or state is None:
                return None
        saved = _snapshot(optimizer)
        try:
            if plan is None:
                params = [spec.params[k] for k in spec.names()]
                plan = self._plan(layout, params, state)
                self._remember(key, plan, tuple(params) + tuple(s for row in state for s in row), optimizer)
            plan.set_scalars([optimizer.step_scalars()])
            return self._run(plan, x, t)
        except Exception as exc:
            _restore(optimizer, saved)  # the fallback's own update counts this step
            self._fast.clear()
            self._fallback("training step", exc)
            return None

    def _remember(self, key: tuple, plan: Plan, arrays: tuple, optimizer: Any) -> None:
        """Memo for _fast_plan: the plan and the arrays it was built on."""
        if len(self._fast) >= self.max_plans:
            self._fast.clear()
        self._fast[key] = (plan, arrays, tuple(a.shape for a in arrays), self.plans.removals, optimizer)

    @_locked
    def train_batches(self, spec: Any, x: Array, t: Array, batches: Any, optimizer: Any) -> Array | None:
        """Steps over mini-batches of a data set already on the device.

        `batches` is a (steps, rows) index array (what ``batch_indices``
        gives) or a sequence of equal-length index arrays. Every step is a
        replay of one captured step whose first kernel gathers its rows on the
        device; each step reads its own row of the optimizer's scalars. Returns
        the losses as one 1-D device array (no sync).
        """
        rule = optimizers.builtin(optimizer)
        xp = self.device.xp
        if rule is None:
            return None
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
        X = self._dataset(x, x.dtype)
        T = self._dataset(t, numpy.int64 if t.ndim == 1 else t.dtype)
        layout = self._layout(spec, X[:rows], T[:rows], "train", rule, gather=True)
        state = self._state(spec, optimizer) if layout is not None else None
        if layout is None or state is None:
            return None
        saved = _snapshot(optimizer)
        try:
            plan = self._plan(layout, [spec.params[k] for k in spec.names()], state, (X, T), steps)
            plan.start_batches(xp.ascontiguousarray(idx, dtype=numpy.int64))
            first = plan.reserve(steps)
            plan.set_scalars([optimizer.step_scalars() for _ in range(steps)])
            plan.launch_steps(steps)  # one graph of the whole epoch
            return plan.ring[first : first + steps]  # a view: a full ring is replaced, never reused
        except Exception as exc:
            _restore(optimizer, saved)
            self._fallback("epoch", exc)
            return None

    def _run(self, plan: Plan, x: Array, t: Array) -> Array:
        xp = self.device.xp
        slot = plan.reserve(1)
        plan.run(self._contiguous(xp, x), self._contiguous(xp, t))
        return self.device.item_view(plan.ring, slot)

    @_locked
    def numerical_gradient(self, spec: Any, x: Array, t: Array, h: float) -> dict[str, Array] | None:
        act = activations.builtin(spec.activation)
        if act is None or spec.depth < 1:
            return None
        names = spec.names()
        try:
            grads = numgrad.numerical_gradient(
                self.device, [spec.params[k] for k in names], x, t, act,
                float(spec.weight_decay or 0.0), h,
            )
        except Exception as exc:
            self._fallback("numerical gradient", exc)
            return None
        return dict(zip(names, grads))
