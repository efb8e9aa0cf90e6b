"""The two-kernel layout: rows_a over groups of rows, rows_b over parameters.

Same buffers, ring, clock and bindings as ``plan.Plan``; only the launch
list differs (see ``source_rows`` for the kernels and why).
"""

from __future__ import annotations

import numpy

from . import source_rows as rs
from .launch import B_THREADS, rows_shape
from .plan import Plan, Slot


class RowsPlan(Plan):
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
        L = self.layout
        lam = numpy.float64(L.weight_decay)
        decay = L.weight_decay != 0.0
        if L.gather:
            X, Tl, Tm, nrows, idx = Slot("X"), Slot("TL"), Slot("TM"), Slot("nrows"), self.idx
        else:
            X, nrows, idx = Slot("x"), numpy.int64(L.rows), self.dummy_i
            Tl, Tm = (self.dummy_i, Slot("t")) if L.onehot else (Slot("t"), self.dummy)
        shape = self.shape
        self.kernel(
            "rows_a", rs.rows_a_source("rows_a", shape, L.stage, L.onehot, L.gather, decay),
            (shape.blocks, 1, 1), (shape.threads, 1, 1),
            (X, Tl, Tm, idx, self.clock, Slot("wptrs"), Slot("bptrs"), self.H, self.D, self.scores,
             self.rowloss, self.rowix, self.sq, nrows, lam),
        )
        if L.stage == "predict":
            return
        self.kernel(
            "rows_b", rs.rows_b_source("rows_b", shape, L.stage, decay, L.gather, L.rule),
            (rs.rows_b_blocks(shape, L.stage), 1, 1), (B_THREADS, 1, 1),
            (X, self.rowix, self.H, self.D, self.rowloss, self.sq, Slot("P"), self.gptrs,
             Slot("S1"), Slot("S2"), self.hyper, self.clock, self.ringptr, lam),
        )
