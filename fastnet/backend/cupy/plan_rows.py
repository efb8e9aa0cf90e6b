"""The two-kernel layout (``kernels/rows.cu``): rows_a over groups of rows,
rows_b over parameters.

Same buffers, ring, clock and bindings as ``plan.Plan``; only the launch
list differs. Python picks the instantiation (the net's sizes as a
``Sizes<...>`` type, rows per block, threads) and the launch shapes.
"""

from __future__ import annotations

import numpy

from . import cuda
from .launch import B_THREADS, rows_b_blocks, rows_shape
from .plan import Plan, Slot

STAGES = {"predict": 0, "loss": 1, "grad": 2, "train": 3}  # rows.cu's Stage


def _b(flag: bool) -> str:
    return "true" if flag else "false"


class RowsPlan(Plan):
    kernel_files = ("rows.cu",)

    def _alloc(self) -> None:
        super()._alloc()
        L, xp = self.layout, self.device.xp
        dt, B, n = numpy.dtype(L.dtype), L.rows, L.sizes
        shape = rows_shape(n, B, dt.itemsize, self.hw)
        if shape is None or shape.per_block != L.rows_per_block:
            raise ValueError(f"layout {L} does not fit the two-kernel step")
        self.shape = shape
        self.H = xp.empty(max(B * sum(n[1:-1]), 1), dt)
        self.D = xp.empty(B * sum(n[1:]), dt)
        self.rowloss = xp.zeros(B, numpy.float64)
        self.rowix = xp.zeros(B, numpy.int64)
        self.sq = xp.zeros(1, numpy.float64)

    def _build(self) -> None:
        L, shape = self.layout, self.shape
        T = cuda.real_type(L.dtype)
        act = f"{cuda.ACTIVATIONS[L.activation]}<{T}>"
        rule = cuda.RULES[L.rule] if L.rule is not None else "Sgd"  # read only by stage "train"
        net = f"Sizes<{', '.join(map(str, L.sizes))}>"
        stage, decay = STAGES[L.stage], L.weight_decay != 0.0
        lam = numpy.float64(L.weight_decay)
        if L.gather:
            X, Tl, Tm, nrows, idx = Slot("X"), Slot("TL"), Slot("TM"), Slot("nrows"), self.idx
        else:
            X, nrows, idx = Slot("x"), numpy.int64(L.rows), self.dummy_i
            Tl, Tm = (self.dummy_i, Slot("t")) if L.onehot else (Slot("t"), self.dummy)
        self.instance(
            f"rows_a<{T}, {act}, {net}, {L.rows}, {shape.per_block}, {shape.threads}, {stage}, {_b(L.onehot)},"
            f" {_b(L.gather)}, {_b(decay)}>",
            (shape.blocks, 1, 1), (shape.threads, 1, 1),
            (X, Tl, Tm, idx, self.clock, Slot("wptrs"), Slot("bptrs"), self.H, self.D, self.scores,
             self.rowloss, self.rowix, self.sq, nrows, lam),
        )
        if L.stage == "predict":
            return
        self.instance(
            f"rows_b<{T}, {rule}, {net}, {L.rows}, {shape.b_split}, {B_THREADS}, {stage}, {_b(decay)},"
            f" {_b(L.gather)}>",
            (rows_b_blocks(shape, L.stage), 1, 1), (B_THREADS, 1, 1),
            (X, self.rowix, self.H, self.D, self.rowloss, self.sq, Slot("P"), self.gptrs,
             Slot("S1"), Slot("S2"), self.hyper, self.clock, self.ringptr, lam),
        )
