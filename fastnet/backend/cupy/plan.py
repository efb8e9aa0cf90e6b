"""A net's step as a fixed list of kernel launches over static device buffers.

A plan is built once per (layer sizes, batch size, dtype, activation, label
form, weight decay, optimizer kind, stage) and per set of bound arrays
(parameters, optimizer state, data set): it allocates every intermediate
buffer, generates and compiles one CUDA module, and records each launch with
its arguments. Running it is then a loop over those launches, or, once they
have run eagerly, a single replay of the CUDA graph they were captured into.

Nothing in a run waits for the GPU. The loss of each step lands in a device
"ring" of slots; the caller gets a 0-d view of its slot. Values that change
between steps without a rebuild live in device memory the kernels read:
the learning rate and friends (``hyper``, re-uploaded only when the host
values change) and counters (``clock``: ring slot, Adam's step, mini-batch).

Stages: "predict" (forward), "loss" (+ softmax/cross-entropy), "grad"
(+ backprop into one flat gradient buffer), "train" (+ the optimizer update).
"""

from __future__ import annotations

import functools
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy

from . import source as src
from .source import TILE, Gemm

RING_SIZE = 1 << 16  # loss slots before a fresh ring is allocated
BOUND_GRAPHS = 4  # graphs kept per plan for the callers' own x/t buffers
BOUND_MISSES = 16  # new buffers seen before a plan stops binding and copies instead
STAGES = ("predict", "loss", "grad", "train")
_ALIGN = 32  # elements; keeps every gradient view 128-byte aligned


@dataclass(frozen=True)
class Layout:
    """Everything a plan's kernels are specialised on (hashable: a cache key)."""

    sizes: tuple[int, ...]  # n0, n1, ..., nL
    rows: int  # batch size
    dtype: str  # "float32" | "float64"
    activation: str  # the activation's kernel name
    onehot: bool  # targets as one-hot rows (else class indices)
    weight_decay: float
    stage: str
    rule: str | None = None  # the optimizer's kernel name, stage "train"
    gather: bool = False  # read mini-batches of a device data set by index
    blas: tuple[bool, ...] = ()  # per layer: use cuBLAS (eager only) instead of tiled kernels
    target_blocks: int = 264  # split-K until about this many blocks (2 per H100 SM)
    min_split_k: int = 64  # ... keeping at least this much K per split
    rows_per_block: int = 0  # > 0: the two-kernel step of plan_rows (small nets)
    rows_threads: int = 1024  # threads per block of that step's row kernel
    rows_prefetch: bool = True  # its weights loaded while the rows arrive
    rows_compact: bool = True  # a gathered batch copied once for its parameter kernel
    rows_split: int = 0  # threads per parameter of that kernel (0: the size rule)

    @property
    def depth(self) -> int:
        return len(self.sizes) - 1


def choose_split(M: int, N: int, K: int, target_blocks: int, min_k: int) -> int:
    """Split K (a power of two) when the output alone gives too few blocks."""
    blocks = -(-M // TILE) * -(-N // TILE)
    split = 1
    while blocks * split * 2 <= target_blocks and K // (split * 2) >= min_k:
        split *= 2
    return split


class Plan:
    """Buffers and launches of one stage for one layout and one set of arrays."""

    def __init__(
        self,
        device: Any,
        layout: Layout,
        params: list[Any],
        state: list[list[Any]] | None = None,
        data: tuple[Any, Any] | None = None,
        steps: int = 0,
        use_graph: bool = True,
    ) -> None:
        self.device, self.layout = device, layout
        self.params, self.state, self.data = params, state or [], data
        self.use_graph = use_graph
        self.graph: Any = None
        self.capture_failed = False
        self.runs = 0
        self._scalars: list[tuple[float, ...]] | None = None
        self._rows = 1  # rows of the scalars table the clock points at
        self.steps = steps
        self.bound: OrderedDict[tuple[int, int], Any] = OrderedDict()  # (x ptr, t ptr) -> graph or None
        self.bound_misses = 0
        self.epoch_graphs: dict[int, Any] = {}  # steps -> graph of that many steps
        self._alloc()
        self.ops: list[Callable[[], None]] = []
        self.names: list[str] = []  # launch names, in order (for tests and docs)
        self._sources: list[str] = [src.prelude(src.real_type(layout.dtype), layout.activation, layout.rule)]
        self._pending: list[tuple[str, tuple[int, ...], tuple[int, ...], tuple[Any, ...]]] = []
        self._build()
        self.module = device.module("".join(self._sources))
        self._bind()

    # ------------------------------------------------------------ buffers
    def _alloc(self) -> None:
        L, xp = self.layout, self.device.xp
        dt, B, n = numpy.dtype(L.dtype), L.rows, L.sizes
        self.x = xp.empty((B, n[0]), dt)
        self.labels = xp.zeros(B if not L.onehot else 1, numpy.int64)
        self.tmat = xp.zeros((B, n[-1]) if L.onehot else (1,), dt)
        self.hs = [self.x] + [xp.empty((B, n[i]), dt) for i in range(1, L.depth)]
        self.scores = xp.empty((B, n[-1]), dt)
        # douts[i]: gradient w.r.t. the output of layer i (before its activation)
        self.douts = [xp.empty((B, n[i + 1]), dt) for i in range(L.depth)]
        offsets, total = [], 0
        for i in range(L.depth):
            for size in (n[i] * n[i + 1], n[i + 1]):
                offsets.append(total)
                total += -(-size // _ALIGN) * _ALIGN
        self.gflat = xp.zeros(max(total, 1), dt)
        self.grads = []
        for i in range(L.depth):
            w_off, b_off = offsets[2 * i], offsets[2 * i + 1]
            self.grads.append(self.gflat[w_off : w_off + n[i] * n[i + 1]].reshape(n[i], n[i + 1]))
            self.grads.append(self.gflat[b_off : b_off + n[i + 1]])
        self.clock = xp.zeros(src.CLOCK_SIZE, numpy.int64)
        self.device.upload(self.clock, numpy.array([0, 0, 0, 1], numpy.int64))  # a table of one row
        self.hyper = xp.zeros(max(self.steps, 1) * src.SCALARS, numpy.float64)
        self.dummy = xp.zeros(1, dt)
        self.dummy_i = xp.zeros(1, numpy.int64)
        self.ring = xp.zeros(RING_SIZE, dt)
        self.ring_pos = 0
        self.ringptr = xp.zeros(1, numpy.uint64)
        self.device.upload(self.ringptr, numpy.array([self.device.ptr(self.ring)], numpy.uint64))
        self.wptrs = self._table([self.device.ptr(self.params[2 * i]) for i in range(L.depth)])
        if L.gather:
            self.idx = xp.zeros((max(self.steps, 1), B), numpy.int64)

    def grad_offsets(self) -> list[tuple[int, Any]]:
        """(offset in gflat, view) of each parameter's gradient, worked out once."""
        if not hasattr(self, "_grad_offsets"):
            base, ptr = self.device.ptr(self.gflat), self.device.ptr
            self._grad_offsets = [((ptr(g) - base) // g.itemsize, g) for g in self.grads]
        return self._grad_offsets

    def _table(self, values: list[int], dtype: Any = numpy.uint64) -> Any:
        arr = self.device.xp.zeros(max(len(values), 1), dtype)
        self.device.upload(arr, numpy.array(values or [0], dtype))
        return arr

    # ------------------------------------------------------------ launches
    def _kernel(self, name: str, code: str, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
        self._sources.append(code)
        self._pending.append((name, grid, block, args))
        self.names.append(name)

    def _host(self, name: str, fn: Callable[[], None]) -> None:
        self._pending.append((name, (), (), (fn,)))
        self.names.append(name)

    def _bind(self) -> None:
        """Turn the recorded launches into closures over compiled kernels."""
        dev = self.device
        self.launches: list[tuple[Any, tuple, tuple, tuple]] = []  # kernel launches, for bound runs
        self.host_ops = False
        for name, grid, block, args in self._pending:
            if not grid:
                self.ops.append(args[0])
                self.host_ops = True
                continue
            kernel = self.module.get_function(name)
            self.launches.append((kernel, grid, block, args))

            def op(k: Any = kernel, g: tuple = grid, b: tuple = block, a: tuple = args) -> None:
                dev.launch(k, g, b, a)

            self.ops.append(op)
        self._pending = []

    def _gemm(self, g: Gemm, A: Any, B: Any, aux: Any, out: Any, out2: Any, lam: float) -> None:
        ws = self.dummy
        if g.split > 1:
            ws = self.device.xp.empty(g.split * g.M * g.N, numpy.dtype(self.layout.dtype))
        code = src.gemm_source(g)
        self._kernel(g.name, code, g.grid(), (TILE, TILE, 1), (A, B, aux, out, out2, ws, numpy.float64(lam)))
        if g.split > 1:
            self.names.append(g.name + "_reduce")
            self._pending.append(
                (g.name + "_reduce", g.reduce_grid(), (src.EW_THREADS, 1, 1),
                 (ws, aux, out, out2, numpy.float64(lam)))
            )

    def _split(self, M: int, N: int, K: int) -> int:
        L = self.layout
        return choose_split(M, N, K, L.target_blocks, L.min_split_k)

    def _build(self) -> None:
        L, dev = self.layout, self.device
        B, n, lam = L.rows, L.sizes, float(L.weight_decay)
        blas = L.blas or (False,) * L.depth
        self.capturable = not any(blas)
        if L.gather:
            X, T = self.data  # type: ignore[misc]
            Tl = T if not L.onehot else self.dummy_i
            Tm = T if L.onehot else self.dummy
            size = src.gather_elements(B, n[0], n[-1], L.onehot)
            self._kernel(
                "gather", src.gather_source("gather", B, n[0], n[-1], L.onehot),
                ((size + src.EW_THREADS - 1) // src.EW_THREADS, 1, 1), (src.EW_THREADS, 1, 1),
                (X, Tl, Tm, self.idx, self.clock, self.x, self.labels, self.tmat, numpy.int64(X.shape[0])),
            )
        # forward
        for i in range(L.depth):
            W, b = self.params[2 * i], self.params[2 * i + 1]
            last = i == L.depth - 1
            out = self.scores if last else self.hs[i + 1]
            if blas[i]:
                h_in = self.hs[i]
                self._host(f"matmul_fwd{i}", functools.partial(dev.matmul, h_in, W, out))
                name = f"bias_act{i}"
                self._kernel(name, src.bias_act_source(name, B, n[i + 1], not last),
                             src.ew_grid(B * n[i + 1]), (src.EW_THREADS, 1, 1), (out, b))
            else:
                g = Gemm(f"fwd{i}", B, n[i + 1], n[i], n[i], n[i + 1], False, False, False,
                         "fwd" if last else "fwd_act", self._split(B, n[i + 1], n[i]))
                self._gemm(g, self.hs[i], W, b, out, out, 0.0)
        if L.stage == "predict":
            return
        onehot_t = self.tmat if L.onehot else self.dummy
        self._kernel(
            "loss", src.loss_source("loss", B, n[-1], L.onehot, tuple(n[i] * n[i + 1] for i in range(L.depth)), lam != 0.0),
            (1, 1, 1), (src.LOSS_THREADS, 1, 1),
            (self.scores, self.labels, onehot_t, self.douts[-1], self.wptrs, self.ringptr, self.clock,
             numpy.float64(lam)),
        )
        if L.stage == "loss":
            return
        # backward, last layer first
        for i in reversed(range(L.depth)):
            W = self.params[2 * i]
            gW, gb = self.grads[2 * i], self.grads[2 * i + 1]
            dout, h_in = self.douts[i], self.hs[i]
            if blas[i]:
                self._host(f"matmul_dw{i}", functools.partial(dev.matmul, h_in.T, dout, gW))
                name = f"colsum{i}"
                self._kernel(name, src.colsum_decay_source(name, B, n[i + 1], n[i]),
                             src.ew_grid(max(n[i] * n[i + 1], n[i + 1])), (src.EW_THREADS, 1, 1),
                             (dout, gb, gW, W, numpy.float64(lam)))
            else:
                g = Gemm(f"bwdw{i}", n[i] + 1, n[i + 1], B, n[i], n[i + 1], True, False, True,
                         "bwd_w", self._split(n[i] + 1, n[i + 1], B))
                self._gemm(g, h_in, dout, W, gW, gb, lam)
            if i == 0:
                continue  # the input needs no gradient
            if blas[i]:
                self._host(f"matmul_dx{i}", functools.partial(dev.matmul, dout, W.T, self.douts[i - 1]))
                name = f"act_back{i}"
                self._kernel(name, src.act_back_source(name, B * n[i]), src.ew_grid(B * n[i]),
                             (src.EW_THREADS, 1, 1), (self.douts[i - 1], self.hs[i]))
            else:
                g = Gemm(f"bwdd{i}", B, n[i], n[i + 1], n[i + 1], n[i + 1], False, True, False,
                         "bwd_data", self._split(B, n[i], n[i + 1]))
                self._gemm(g, dout, W, self.hs[i], self.douts[i - 1], self.douts[i - 1], 0.0)
        if L.stage == "train":
            self._update()

    def _update(self) -> None:
        L, dev = self.layout, self.device
        P, G, S1, S2, sizes, ctensor, cstart = [], [], [], [], [], [], []
        for ti, (p, g) in enumerate(zip(self.params, self.grads)):
            slots = [s[ti] for s in self.state]
            P.append(dev.ptr(p))
            G.append(dev.ptr(g))
            S1.append(dev.ptr(slots[0]) if len(slots) > 0 else 0)
            S2.append(dev.ptr(slots[1]) if len(slots) > 1 else 0)
            size = int(p.size)
            sizes.append(size)
            for start in range(0, size, src.UPDATE_CHUNK):
                ctensor.append(ti)
                cstart.append(start)
        self.update_tables = (
            self._table(P), self._table(G), self._table(S1), self._table(S2),
            self._table(sizes, numpy.int64), self._table(ctensor, numpy.int32),
            self._table(cstart, numpy.int64),
        )
        self._kernel("update", src.update_source("update"), (len(ctensor), 1, 1),
                     (src.UPDATE_THREADS, 1, 1), (*self.update_tables, self.hyper, self.clock))

    # ---------------------------------------------------------------- runs
    def _run_ops(self) -> None:
        for op in self.ops:
            op()

    def _capture(self, run: Callable[[], None]) -> Any:
        """`run`'s launches as a CUDA graph, or None (and eager from now on) when capture fails."""
        try:
            return self.device.capture(run)
        except Exception as exc:  # e.g. a driver that refuses capture: stay eager
            self.capture_failed = True
            warnings.warn(f"fastnet: CUDA graph capture failed, running eagerly ({exc})", RuntimeWarning, stacklevel=4)
            return None

    def launch(self) -> None:
        """One run of every launch: a graph replay once one has been captured."""
        if self.graph is not None:
            self.graph.launch()
            return
        dev = self.device
        if self.use_graph and self.capturable and dev.can_capture and self.runs > 0 and not self.capture_failed:
            self.graph = self._capture(self._run_ops)
            if self.graph is not None:
                self.graph.launch()
                return
        self._run_ops()
        self.runs += 1

    # ------------------------------------------------ runs on callers' buffers
    def run(self, x: Any, t: Any) -> None:
        """One run reading `x` and `t` where they are, without copying them in.

        The launches are re-pointed from the static input buffers to the
        caller's arrays, and the graph captured that way is kept per pair of
        addresses (a loop over ``x[idx]`` reuses a few addresses of CuPy's
        pool). Any pair gives the right result: a replay reads whatever those
        addresses hold when it runs. A plan that keeps seeing new addresses
        goes back to copying into its static buffers.
        """
        dev = self.device
        t_static = self.tmat if self.layout.onehot else self.labels
        if (self.host_ops or self.layout.gather or self.bound_misses > BOUND_MISSES
                or t.dtype != t_static.dtype or x.dtype != self.x.dtype):
            self.load(x, t)
            self.launch()
            return
        key = (dev.ptr(x), dev.ptr(t))
        graph = self.bound.get(key)
        if graph is not None:
            graph.launch()
            if len(self.bound) > 1:
                self.bound.move_to_end(key)  # least recently used goes first
            return
        swap = {id(self.x): x, id(t_static): t}
        ops = [
            functools.partial(dev.launch, k, g, b, tuple(swap.get(id(a), a) for a in args))
            for k, g, b, args in self.launches
        ]

        def run_ops() -> None:
            for op in ops:
                op()

        if key in self.bound and dev.can_capture and self.use_graph and not self.capture_failed:
            graph = self._capture(run_ops)  # second sight of this pair: worth a graph
            if graph is not None:
                self.bound[key] = graph
                self.bound.move_to_end(key)
                graph.launch()
                return
        if key not in self.bound:
            self.bound_misses += 1
            self.bound[key] = None
            while len(self.bound) > BOUND_GRAPHS:
                self.bound.popitem(last=False)
        run_ops()

    def load(self, x: Any, t: Any | None) -> None:
        """Copy a batch into the static input buffers the launches read."""
        self.device.copy(self.x, x)
        if t is not None:
            self.device.copy(self.tmat if self.layout.onehot else self.labels, t)

    def reserve(self, count: int) -> int:
        """First of `count` consecutive loss slots; starts a new ring when full."""
        if self.ring_pos + count > self.ring.size:
            xp = self.device.xp
            self.ring = xp.zeros(max(RING_SIZE, count), numpy.dtype(self.layout.dtype))
            self.device.upload(self.ringptr, numpy.array([self.device.ptr(self.ring)], numpy.uint64))
            self.device.zero(self.clock[src.CLOCK_RING : src.CLOCK_RING + 1])
            self.ring_pos = 0  # the old ring lives on in the views already handed out
        start = self.ring_pos
        self.ring_pos += count
        return start

    def set_scalars(self, rows: list[tuple[float, ...]]) -> None:
        """The optimizer's step_scalars() for the next run of len(rows) steps, one row each.

        Uploaded (stream-ordered) only when they differ from the last upload;
        the step counter restarts, so the next step reads row 0.
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

    def launch_steps(self, steps: int) -> None:
        """`steps` runs in a row: one graph of every step once a run has gone eagerly.

        One graph per epoch spares a graph launch per step (and its gap on
        the device); every step still reads its batch and counters from
        device memory, so the same graph serves every epoch of that length.
        """
        graph = self.epoch_graphs.get(steps)
        if graph is not None:
            graph.launch()
            return
        dev = self.device
        if (self.use_graph and self.capturable and dev.can_capture and self.runs > 0
                and not self.capture_failed and steps > 1):
            def run_all() -> None:
                for _ in range(steps):
                    self._run_ops()

            graph = self._capture(run_all)
            if graph is not None:
                while len(self.epoch_graphs) >= 2:
                    self.epoch_graphs.pop(next(iter(self.epoch_graphs)))
                self.epoch_graphs[steps] = graph
                graph.launch()
                return
        for _ in range(steps):
            self._run_ops()
        self.runs += 1

    def start_batches(self, idx: Any) -> None:
        """Load an epoch's index table (steps, rows) and rewind the mini-batch counter."""
        self.device.copy(self.idx[: idx.shape[0]], idx)
        self.device.zero(self.clock[src.CLOCK_BATCH : src.CLOCK_BATCH + 1])
