"""A net's step as a fixed list of kernel launches over static device buffers.

A plan is built once per ``Layout`` (layer sizes, batch size, dtype,
activation, label form, weight decay, update rule, stage): it allocates every
intermediate buffer, compiles one CUDA module and records each launch. The
arrays it does not own (parameters, optimizer state, the batch or the data
set) are ``Slot`` placeholders in that record.

``bind`` fills the slots for one set of arrays: a ``Binding`` holds the
launches with real arguments, the pointer tables they read and, from its
second run on, the CUDA graph captured from them. Bindings are the plan's
one cache: keyed by the address of every array filled in (and, for an
epoch, its number of steps), reused only for exactly those addresses, the
least recently used dropped beyond ``BINDINGS``.

Nothing in a run waits for the GPU. The loss of each step lands in a device
"ring" of slots; the caller gets a 0-d view of its slot. The optimizer's
scalars live in a device table with a row per step (``set_scalars``).
Stages: "predict", "loss" (+ softmax/cross-entropy), "grad" (+ backprop into
one flat gradient buffer), "train" (+ the optimizer update).
"""

from __future__ import annotations

import functools
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy

from ..spec import overlapping
from . import source as src
from .launch import Hardware, choose_split

RING_SIZE = 1 << 16  # loss slots before a fresh ring is allocated
BINDINGS = 8  # bindings (each with its graph) kept per plan
BOUND_MISSES = 16  # new batch addresses seen before a plan copies batches into its own buffer
_ALIGN = 32  # elements; keeps every gradient view 128-byte aligned


class Overlap(Exception):
    """Parameters that share memory: a fused step would update them in its own order, so the
    caller runs the reference path instead (no warning: nothing failed)."""


@dataclass(frozen=True)
class Layout:
    """Everything a plan's kernels are specialised on (hashable: the plan cache's key)."""

    sizes: tuple[int, ...]  # n0, n1, ..., nL
    rows: int  # batch size
    dtype: str  # "float32" | "float64"
    activation: str  # the activation's kernel name
    onehot: bool  # targets as one-hot rows (else class indices)
    weight_decay: float
    stage: str
    rule: str | None = None  # the optimizer's kernel name, stage "train"
    gather: bool = False  # read mini-batches of a device data set by index
    blas: tuple[bool, ...] = ()  # per layer: cuBLAS (eager only) instead of tiled kernels
    rows_per_block: int = 0  # > 0: the two-kernel step of plan_rows (small nets)
    steps: int = 0  # gather: steps of the epochs this plan runs (its index and scalars tables)
    # (C, H, W, (FN, FH, FW, stride, pad, pool), ...): the book's conv nets, whose blocks of
    # convolution, ReLU (and 2x2 pooling) come before the dense layers `sizes` (plan_conv)
    conv: tuple[Any, ...] = ()
    dropout: bool = False  # conv nets: a Dropout after each dense layer, masks copied in (plan_conv)

    @property
    def depth(self) -> int:
        return len(self.sizes) - 1


@dataclass(frozen=True)
class Slot:
    """An array (or scalar) a launch reads that the plan does not own: filled in by ``bind``."""

    name: str


class Binding:
    """A plan's launches over one set of arrays, and the graph captured from them."""

    def __init__(self, plan: "Plan", ops: list[tuple[Any, ...]], keep: list[Any]) -> None:
        self.plan, self.ops, self.keep = plan, ops, keep  # keep: tables the launches read
        self.graph: Any = None
        self.runs = 0

    def _run(self, steps: int = 1) -> None:
        launch = self.plan.device.launch
        for _ in range(steps):
            for op in self.ops:
                if op[0] is None:
                    op[1]()  # a host call (cuBLAS)
                else:
                    launch(*op)

    def launch(self, steps: int = 1) -> None:
        """`steps` runs in a row; captured as one graph from the second call on."""
        if self.graph is not None:
            self.graph.launch()
            return
        plan = self.plan
        if self.runs > 0 and plan.can_capture():
            self.graph = plan.capture(functools.partial(self._run, steps))
            if self.graph is not None:
                self.graph.launch()
                return
        self._run(steps)
        self.runs += 1


class Plan:
    """Buffers and launches of one stage for one layout."""

    kernel_files: tuple[str, ...] = ()  # kernel files (templates) the module compiles

    def __init__(self, device: Any, layout: Layout, hw: Hardware, use_graph: bool = True) -> None:
        self.device, self.layout, self.hw = device, layout, hw
        self.use_graph = use_graph
        self.capture_failed = False
        self.steps = layout.steps
        self.bindings: OrderedDict[tuple, Binding] = OrderedDict()
        self.batch_misses = 0
        self._scalars: list[tuple[float, ...]] | None = None
        self._rows = 1  # rows of the scalars table the clock points at
        self._alloc()
        self.records: list[tuple[str, tuple[int, ...], tuple[int, ...], tuple[Any, ...]]] = []
        self.names: list[str] = []  # launch names, in order (for tests and docs)
        self._sources: list[str] = [
            src.prelude(src.real_type(layout.dtype), self.kernel_files)]
        self.expressions: list[str] = []  # the template instantiations this plan launches
        self.capturable = True
        self._build()
        self.module = device.module("".join(self._sources), self.expressions)

    # ------------------------------------------------------------ buffers
    def _alloc(self) -> None:
        L, xp = self.layout, self.device.xp
        dt, B, n = numpy.dtype(L.dtype), L.rows, L.sizes
        self.x = xp.empty(self.input_shape(), dt)
        self.labels = xp.zeros(B if not L.onehot else 1, numpy.int64)
        self.tmat = xp.zeros((B, n[-1]) if L.onehot else (1,), dt)
        self.hs = [Slot("x")] + [xp.empty((B, n[i]), dt) for i in range(1, L.depth)]
        self.scores = xp.empty((B, n[-1]), dt)
        # douts[i]: gradient w.r.t. the output of layer i (before its activation)
        self.douts = [xp.empty((B, n[i + 1]), dt) for i in range(L.depth)]
        offsets, total = [], 0
        shapes = self.param_shapes()
        for shape in shapes:
            offsets.append(total)
            total += -(-int(numpy.prod(shape)) // _ALIGN) * _ALIGN
        self.gflat = xp.zeros(max(total, 1), dt)
        self.grads = [self.gflat[off : off + int(numpy.prod(shape))].reshape(shape)
                      for off, shape in zip(offsets, shapes)]
        self.grad_offsets = offsets
        self.gptrs = self.table([self.device.ptr(g) for g in self.grads])
        self.clock = xp.zeros(src.CLOCK_SIZE, numpy.int64)
        self.device.upload(self.clock, numpy.array([0, 0, 0, 1], numpy.int64))  # a table of one row
        self.hyper = xp.zeros(max(self.steps, 1) * src.SCALARS, numpy.float64)
        self.dummy = xp.zeros(1, dt)
        self.dummy_i = xp.zeros(1, numpy.int64)
        self.ring = xp.zeros(RING_SIZE, dt)
        self.ring_pos = 0
        self.ringptr = self.table([self.device.ptr(self.ring)])
        if L.gather:
            self.idx = xp.zeros((max(self.steps, 1), B), numpy.int64)

    def input_shape(self) -> tuple[int, ...]:
        return (self.layout.rows, self.layout.sizes[0])

    def param_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the parameters (W1, b1, W2, ...) in order: the gradient buffer's views."""
        n = self.layout.sizes
        return [s for i in range(self.layout.depth) for s in ((n[i], n[i + 1]), (n[i + 1],))]

    def table(self, values: list[int], dtype: Any = numpy.uint64) -> Any:
        arr = self.device.xp.zeros(max(len(values), 1), dtype)
        self.device.upload(arr, numpy.array(values or [0], dtype))
        return arr

    # ------------------------------------------------------------ launches
    def kernel(self, name: str, code: str, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
        self._sources.append(code)
        self.records.append((name, grid, block, args))
        self.names.append(name)

    def instance(self, expr: str, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...],
                 label: str | None = None) -> None:
        """A launch of a template kernel: `expr` names the instantiation (an NVRTC name expression)."""
        if expr not in self.expressions:
            self.expressions.append(expr)
        self.records.append((expr, grid, block, args))
        self.names.append(label or expr.split("<")[0])

    def host(self, name: str, fn: Any, *args: Any) -> None:
        self.records.append((name, (), (), (fn, *args)))
        self.names.append(name)
        self.capturable = False  # CuPy refuses cuBLAS calls during stream capture

    def split_k(self, M: int, N: int, K: int) -> int:
        return choose_split(M, N, K, self.hw)

    def _build(self) -> None:
        raise NotImplementedError  # TiledPlan, RowsPlan

    # ------------------------------------------------------------- binding
    def bind(self, params: list[Any], state: list[list[Any]], x: Any, t: Any, data: tuple[Any, Any] | None = None,
             steps: int = 1) -> Binding:
        """The binding of these arrays (x, t: the batch; data: an epoch's data set), made on first use."""
        ptr = self.device.ptr
        key = tuple(ptr(a) for a in params) + tuple(ptr(s) for row in state for s in row)
        key += (ptr(x), ptr(t) if t is not None else 0)
        if data is not None:
            key += (ptr(data[0]), ptr(data[1]), int(data[0].shape[0]), steps)
        found = self.bindings.get(key)
        if found is not None:
            self.bindings.move_to_end(key)
            return found
        if self.layout.stage == "train" and overlapping(params, ptr):
            raise Overlap  # checked once per new set of arrays, not every step
        values = self._values(params, state, x, t, data)
        ops: list[tuple[Any, ...]] = []
        for name, grid, block, args in self.records:
            resolved = tuple(values[a.name] if isinstance(a, Slot) else a for a in args)
            ops.append((None, functools.partial(resolved[0], *resolved[1:])) if not grid
                       else (self.module.get_function(name), grid, block, resolved))
        binding = self.bindings[key] = Binding(self, ops, list(values.values()))
        while len(self.bindings) > BINDINGS:
            self.bindings.popitem(last=False)
        return binding

    def _values(self, params: list[Any], state: list[list[Any]], x: Any, t: Any,
                data: tuple[Any, Any] | None) -> dict[str, Any]:
        L, ptr = self.layout, self.device.ptr
        values: dict[str, Any] = {"x": x, "x.T": x.T, "t": t if t is not None else self.dummy_i}
        layers = len(params) // 2
        for i in range(layers):
            values[f"W{i}"], values[f"b{i}"] = params[2 * i], params[2 * i + 1]
            values[f"W{i}.T"] = params[2 * i].T
        values["wptrs"] = self.table([ptr(params[2 * i]) for i in range(layers)])
        values["bptrs"] = self.table([ptr(params[2 * i + 1]) for i in range(layers)])
        values["P"] = self.table([ptr(p) for p in params])
        per_param = list(zip(*state)) if state else [()] * len(params)
        for j in (0, 1):  # the rule's state pointers per parameter (0: a rule without that state)
            values[f"S{j + 1}"] = self.table([ptr(s[j]) if len(s) > j else 0 for s in per_param])
        if data is not None:
            X, T = data
            values.update(X=X, TL=T if not L.onehot else self.dummy_i, TM=T if L.onehot else self.dummy,
                          nrows=numpy.int64(X.shape[0]))
        return values

    def batch(self, x: Any, t: Any | None) -> tuple[Any, Any]:
        """The arrays to bind for a batch: the caller's own, or the plan's copies of them
        once new addresses keep coming (each would cost a binding)."""
        t_static = self.tmat if self.layout.onehot else self.labels
        ptr = self.device.ptr
        known = any(k[-2:] == (ptr(x), ptr(t) if t is not None else 0) for k in self.bindings)
        if not known:
            self.batch_misses += 1
        if (self.batch_misses > BOUND_MISSES or x.dtype != self.x.dtype
                or (t is not None and t.dtype != t_static.dtype)):
            self.device.copy(self.x, x)
            if t is not None:
                self.device.copy(t_static, t)
            return self.x, (t_static if t is not None else None)
        return x, t

    # ---------------------------------------------------------------- runs
    def can_capture(self) -> bool:
        return self.use_graph and self.capturable and self.device.can_capture and not self.capture_failed

    def capture(self, run: Any) -> Any:
        """`run`'s launches as a CUDA graph, or None (and eager from now on) when capture fails."""
        try:
            return self.device.capture(run)
        except Exception as exc:  # e.g. a driver that refuses capture: stay eager
            self.capture_failed = True
            warnings.warn(f"fastnet: CUDA graph capture failed, running eagerly ({exc})", RuntimeWarning, stacklevel=5)
            return None

    def reserve(self, count: int) -> int:
        """First of `count` consecutive loss slots; starts a new ring when full."""
        if self.ring_pos + count > self.ring.size:
            self.ring = self.device.xp.zeros(max(RING_SIZE, count), numpy.dtype(self.layout.dtype))
            self.device.upload(self.ringptr, numpy.array([self.device.ptr(self.ring)], numpy.uint64))
            self.device.zero(self.clock[src.CLOCK_RING : src.CLOCK_RING + 1])
            self.ring_pos = 0  # the old ring lives on in the views already handed out
        start = self.ring_pos
        self.ring_pos += count
        return start

    def set_scalars(self, rows: list[tuple[float, ...]]) -> None:
        """The optimizer's step_scalars() for the next run of len(rows) steps, one row each.

        Uploaded (stream-ordered) only when they differ from the last upload;
        a table of several rows restarts the step counter, so the next step
        reads row 0.
        """
        if rows != self._scalars:
            table = numpy.zeros((len(rows), src.SCALARS), numpy.float64)
            for k, row in enumerate(rows):
                table[k, : len(row)] = row
            self.device.upload(self.hyper[: table.size], table.reshape(-1))
            self._scalars = rows
        if len(rows) > 1 or self._rows != 1:
            for slot, value in ((src.CLOCK_STEP, 0), (src.CLOCK_ROWS, len(rows))):
                self.device.upload(self.clock[slot : slot + 1], numpy.array([value], numpy.int64))
        self._rows = len(rows)

    def start_batches(self, idx: Any) -> None:
        """Load an epoch's index table (steps, rows) and rewind the mini-batch counter."""
        self.device.copy(self.idx[: idx.shape[0]], idx)
        self.device.zero(self.clock[src.CLOCK_BATCH : src.CLOCK_BATCH + 1])
