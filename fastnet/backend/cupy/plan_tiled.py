"""The tiled layout: shared-memory matmul kernels with fused epilogues, one
loss kernel and one multi-tensor update; cuBLAS for layers past
``blas_min_flops`` (then the step cannot be captured in a graph)."""

from __future__ import annotations

from typing import Any

import numpy

from . import source as src
from .launch import EW_THREADS, ew_grid
from .plan import Plan, Slot
from .source import Gemm


class TiledPlan(Plan):
    def _build(self) -> None:
        L, dev = self.layout, self.device
        B, n, lam = L.rows, L.sizes, float(L.weight_decay)
        blas = L.blas or (False,) * L.depth
        if L.gather:
            size = src.gather_elements(B, n[0], n[-1], L.onehot)
            self.kernel(
                "gather", src.gather_source("gather", B, n[0], n[-1], L.onehot),
                ((size + EW_THREADS - 1) // EW_THREADS, 1, 1), (EW_THREADS, 1, 1),
                (Slot("X"), Slot("TL"), Slot("TM"), self.idx, self.clock, self.x, self.labels, self.tmat,
                 Slot("nrows")),
            )
        t = Slot("t")
        labels, tmat = (self.dummy_i, t) if L.onehot else (t, self.dummy)
        if L.gather:
            labels, tmat = (self.labels, self.tmat)
        for i in range(L.depth):  # forward
            W, b = Slot(f"W{i}"), Slot(f"b{i}")
            last = i == L.depth - 1
            out = self.scores if last else self.hs[i + 1]
            if blas[i]:
                self.host(f"matmul_fwd{i}", dev.matmul, self.hs[i], W, out)
                name = f"bias_act{i}"
                self.kernel(name, src.bias_act_source(name, B, n[i + 1], not last),
                            ew_grid(B * n[i + 1]), (EW_THREADS, 1, 1), (out, b))
            else:
                g = Gemm(f"fwd{i}", B, n[i + 1], n[i], n[i], n[i + 1], False, False, False,
                         "fwd" if last else "fwd_act", self.split_k(B, n[i + 1], n[i]))
                self.gemm(g, self.hs[i], W, b, out, out, 0.0)
        if L.stage == "predict":
            return
        self.kernel(
            "loss", src.loss_source("loss", B, n[-1], L.onehot, tuple(n[i] * n[i + 1] for i in range(L.depth)), lam != 0.0),
            (1, 1, 1), (src.LOSS_THREADS, 1, 1),
            (self.scores, labels, tmat if L.onehot else self.dummy, self.douts[-1], Slot("wptrs"), self.ringptr,
             self.clock, numpy.float64(lam)),
        )
        if L.stage == "loss":
            return
        for i in reversed(range(L.depth)):  # backward, last layer first
            W = Slot(f"W{i}")
            gW, gb = self.grads[2 * i], self.grads[2 * i + 1]
            dout, h_in = self.douts[i], self.hs[i]
            if blas[i]:
                self.host(f"matmul_dw{i}", dev.matmul, Slot("x.T") if i == 0 else h_in.T, dout, gW)
                name = f"colsum{i}"
                self.kernel(name, src.colsum_decay_source(name, B, n[i + 1], n[i]),
                            ew_grid(max(n[i] * n[i + 1], n[i + 1])), (EW_THREADS, 1, 1),
                            (dout, gb, gW, W, numpy.float64(lam)))
            else:
                g = Gemm(f"bwdw{i}", n[i] + 1, n[i + 1], B, n[i], n[i + 1], True, False, True,
                         "bwd_w", self.split_k(n[i] + 1, n[i + 1], B))
                self.gemm(g, h_in, dout, W, gW, gb, lam)
            if i == 0:
                continue  # the input needs no gradient
            if blas[i]:
                self.host(f"matmul_dx{i}", dev.matmul, dout, Slot(f"W{i}.T"), self.douts[i - 1])
                name = f"act_back{i}"
                self.kernel(name, src.act_back_source(name, B * n[i]), ew_grid(B * n[i]),
                            (EW_THREADS, 1, 1), (self.douts[i - 1], self.hs[i]))
            else:
                g = Gemm(f"bwdd{i}", B, n[i], n[i + 1], n[i + 1], n[i + 1], False, True, False,
                         "bwd_data", self.split_k(B, n[i], n[i + 1]))
                self.gemm(g, dout, W, self.hs[i], self.douts[i - 1], self.douts[i - 1], 0.0)
        if L.stage == "train":
            self._update()

    def _update(self) -> None:
        sizes, ctensor, cstart = [], [], []
        for ti, g in enumerate(self.grads):
            size = int(g.size)
            sizes.append(size)
            for start in range(0, size, src.UPDATE_CHUNK):
                ctensor.append(ti)
                cstart.append(start)
        chunks: Any = (self.table(sizes, numpy.int64), self.table(ctensor, numpy.int32), self.table(cstart, numpy.int64))
        self.kernel("update", src.update_source("update"), (len(ctensor), 1, 1), (src.UPDATE_THREADS, 1, 1),
                    (Slot("P"), self.gptrs, Slot("S1"), Slot("S2"), *chunks, self.hyper, self.clock))
