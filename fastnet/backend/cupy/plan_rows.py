"""A plan of two launches: kernel A over groups of rows, kernel B over parameters.

Same buffers, ring, clock and host bookkeeping as ``plan.Plan``; only the
launch list differs (see ``source_rows`` for the kernels and why).
"""

from __future__ import annotations

from typing import Any

import numpy

from . import source_rows as rs
from .plan import Plan


class RowsPlan(Plan):
    def _alloc(self) -> None:
        super()._alloc()
        L, xp = self.layout, self.device.xp
        dt, B, n = numpy.dtype(L.dtype), L.rows, L.sizes
        shape = rs.rows_shape(n, B, dt.itemsize, L.rows_per_block, L.rows_threads,
                              L.rows_prefetch, L.rows_compact, L.rows_split)
        if shape is None or shape.per_block != L.rows_per_block:
            raise ValueError(f"layout {L} does not fit the two-kernel step")
        self.shape = shape
        self.H = xp.empty(max(B * sum(n[1:-1]), 1), dt)
        self.D = xp.empty(B * sum(n[1:]), dt)
        self.rowloss = xp.zeros(B, numpy.float64)
        self.rowix = xp.zeros(B, numpy.int64)
        self.sq = xp.zeros(1, numpy.float64)
        self.bptrs = self._table([self.device.ptr(self.params[2 * i + 1]) for i in range(L.depth)])

    def _build(self) -> None:
        L = self.layout
        lam = numpy.float64(L.weight_decay)
        decay = L.weight_decay != 0.0
        self.capturable = True
        if L.gather:
            X, T = self.data  # type: ignore[misc]
            nrows = numpy.int64(X.shape[0])
            idx = self.idx
        else:
            X, T = self.x, (self.tmat if L.onehot else self.labels)
            nrows, idx = numpy.int64(L.rows), self.dummy_i
        Tl = self.dummy_i if L.onehot else T
        Tm = T if L.onehot else self.dummy
        shape = self.shape
        compact = L.gather and shape.compact  # rows_a copies the gathered batch into self.x for rows_b
        XB = self.x if compact else self.dummy
        self._kernel(
            "rows_a", rs.rows_a_source("rows_a", shape, L.stage, L.onehot, L.gather, decay),
            (shape.blocks, 1, 1), (shape.threads, 1, 1),
            (X, Tl, Tm, idx, self.clock, self.wptrs, self.bptrs, self.H, self.D, self.scores,
             self.rowloss, self.rowix, self.sq, XB, nrows, lam),
        )
        if L.stage == "predict":
            return
        P, G, S1, S2 = self._pointer_tables()
        self._kernel(
            "rows_b", rs.rows_b_source("rows_b", shape, L.stage, decay, L.gather),
            (rs.rows_b_blocks(shape, L.stage), 1, 1), (rs.B_THREADS, 1, 1),
            (XB if compact else X, self.rowix, self.H, self.D, self.rowloss, self.sq, P, G, S1, S2, self.hyper,
             self.clock, self.ringptr, lam),
        )

    def _pointer_tables(self) -> tuple[Any, Any, Any, Any]:
        """Device tables of parameter, gradient and optimizer-state pointers."""
        ptr = self.device.ptr
        slots = [[s[ti] for s in self.state] for ti in range(len(self.params))]
        P = [ptr(p) for p in self.params]
        G = [ptr(g) for g in self.grads]
        S1 = [ptr(s[0]) if len(s) > 0 else 0 for s in slots]
        S2 = [ptr(s[1]) if len(s) > 1 else 0 for s in slots]
        self.update_tables = tuple(self._table(v) for v in (P, G, S1, S2))
        return self.update_tables  # type: ignore[return-value]
