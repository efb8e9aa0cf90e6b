"""The tiled layout (``kernels/tiled.cu``): matmul kernels with fused
epilogues, one loss kernel and one multi-tensor update; cuBLAS for layers past
``blas_min_flops`` (then the step cannot be captured in a graph). Python picks
each template instantiation and its launch shape here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy

from . import cuda
from . import source as src
from .launch import EW_THREADS, TILE, ew_grid
from .plan import Plan, Slot

EPILOGUES = {"fwd_act": 0, "fwd": 1, "bwd_data": 2, "bwd_w": 3, "store": 4}  # tiled.cu's Epilogue


def _b(flag: bool) -> str:
    return "true" if flag else "false"


@dataclass(frozen=True)
class Gemm:
    """One product C[M, N] = A @ B of tiled.cu's ``gemm`` (its arguments there)."""

    M: int
    N: int
    K: int
    lda: int
    ldb: int
    a_trans: bool
    b_trans: bool
    ones_row: bool
    epilogue: str
    split: int = 1

    def grid(self) -> tuple[int, int, int]:
        return (-(-self.N // TILE), -(-self.M // TILE), self.split)

    def reduce_grid(self) -> tuple[int, int, int]:
        return (-(-(self.M * self.N) // EW_THREADS), 1, 1)


class TiledPlan(Plan):
    kernel_files = ("tiled.cu",)

    def _types(self) -> tuple[str, str]:
        real = cuda.real_type(self.layout.dtype)
        return real, f"{cuda.ACTIVATIONS[self.layout.activation]}<{real}>"

    def _gemm(self, g: Gemm, A: Any, B: Any, aux: Any, out: Any, out2: Any, lam: float) -> None:
        T, act = self._types()
        epi = EPILOGUES[g.epilogue]
        ws = self.dummy
        if g.split > 1:
            ws = self.device.xp.empty(g.split * g.M * g.N, numpy.dtype(self.layout.dtype))
        self.instance(f"gemm<{T}, {act}, {g.M}, {g.N}, {g.K}, {g.lda}, {g.ldb}, {_b(g.a_trans)}, {_b(g.b_trans)},"
                      f" {_b(g.ones_row)}, {epi}, {g.split}, {TILE}>",
                      g.grid(), (TILE, TILE, 1), (A, B, aux, out, out2, ws, numpy.float64(lam)))
        if g.split > 1:
            self.instance(f"gemm_reduce<{T}, {act}, {g.M}, {g.N}, {epi}, {g.split}>", g.reduce_grid(),
                          (EW_THREADS, 1, 1), (ws, aux, out, out2, numpy.float64(lam)))

    # the dense layers' first parameter among the plan's (ConvPlan puts its convolution first)
    first_layer = 0
    input_grad: Any = None  # where the dense layers' input gradient goes (None: not computed)

    def _build(self) -> None:
        stage = self.layout.stage
        labels, tmat = self._batch()
        self._front_forward()
        self._dense_forward()
        if stage == "predict":
            return
        self._loss(labels, tmat)
        if stage == "loss":
            return
        self._dense_backward(self.input_grad)
        self._front_backward()
        if stage == "train":
            self._update()

    def _front_forward(self) -> None:
        """Layers before the dense ones (none here; ConvPlan's convolution and pooling)."""

    def _front_backward(self) -> None:
        """Their backward pass, from ``input_grad``."""

    def _batch(self) -> tuple[Any, Any]:
        """The gather of an epoch's mini-batch (layouts with `gather`); the (labels, one-hot) to read."""
        L = self.layout
        B, classes = L.rows, L.sizes[-1]
        T, _ = self._types()
        if L.gather:
            features = int(numpy.prod(self.input_shape()[1:]))
            size = src.gather_elements(B, features, classes, L.onehot)
            self.instance(
                f"gather<{T}, {B}, {features}, {classes}, {_b(L.onehot)}>", (-(-size // EW_THREADS), 1, 1),
                (EW_THREADS, 1, 1),
                (Slot("X"), Slot("TL"), Slot("TM"), self.idx, self.clock, self.x, self.labels, self.tmat, Slot("nrows")),
            )
            return self.labels, (self.tmat if L.onehot else self.dummy)
        t = Slot("t")
        return (self.dummy_i, t) if L.onehot else (t, self.dummy)

    def _dense_forward(self) -> None:
        L, dev = self.layout, self.device
        B, n = L.rows, L.sizes
        T, act = self._types()
        blas = L.blas or (False,) * L.depth
        for i in range(L.depth):
            W, b = Slot(f"W{i + self.first_layer}"), Slot(f"b{i + self.first_layer}")
            last = i == L.depth - 1
            out = self.scores if last else self.hs[i + 1]
            if blas[i]:
                self.host(f"matmul_fwd{i}", dev.matmul, self.hs[i], W, out)
                self.instance(f"bias_act<{T}, {act}, {_b(not last)}, {B}, {n[i + 1]}>", ew_grid(B * n[i + 1]),
                              (EW_THREADS, 1, 1), (out, b), f"bias_act{i}")
            else:
                g = Gemm(B, n[i + 1], n[i], n[i], n[i + 1], False, False, False,
                         "fwd" if last else "fwd_act", self.split_k(B, n[i + 1], n[i]))
                self._gemm(g, self.hs[i], W, b, out, out, 0.0)
            self._after_dense(i, out)

    def _after_dense(self, i: int, out: Any) -> None:
        """What follows dense layer i's output `out` (nothing here; ConvPlan's dropout)."""

    def _loss(self, labels: Any, tmat: Any) -> None:
        L = self.layout
        B, n, lam = L.rows, L.sizes, float(L.weight_decay)
        T, _ = self._types()
        sizes = ", ".join(f"{n[i] * n[i + 1]}LL" for i in range(L.depth))
        self.instance(
            f"loss<{T}, {B}, {n[-1]}, {_b(L.onehot)}, {_b(lam != 0.0)}, {src.LOSS_THREADS}, {sizes}>",
            (1, 1, 1), (src.LOSS_THREADS, 1, 1),
            (self.scores, labels, tmat, self.douts[-1], Slot("wptrs"), self.ringptr, self.clock, numpy.float64(lam)),
        )
        self._after_dense(L.depth, self.douts[-1])  # the scores' gradient, through what followed them

    def _dense_backward(self, dx: Any) -> None:
        """Backprop through the dense layers, last first; `dx`: where the first layer's input
        gradient goes (None: nobody reads it, so it is not computed)."""
        L, dev = self.layout, self.device
        B, n, lam = L.rows, L.sizes, float(L.weight_decay)
        T, act = self._types()
        blas = L.blas or (False,) * L.depth
        for i in reversed(range(L.depth)):
            W = Slot(f"W{i + self.first_layer}")
            gW, gb = self.grads[2 * (i + self.first_layer)], self.grads[2 * (i + self.first_layer) + 1]
            dout, h_in = self.douts[i], self.hs[i]
            if blas[i]:
                self.host(f"matmul_dw{i}", dev.matmul, Slot("x.T") if isinstance(h_in, Slot) else h_in.T, dout, gW)
                self.instance(f"colsum_decay<{T}, {B}, {n[i + 1]}, {n[i]}>", ew_grid(max(n[i] * n[i + 1], n[i + 1])),
                              (EW_THREADS, 1, 1), (dout, gb, gW, W, numpy.float64(lam)), f"colsum{i}")
            else:
                g = Gemm(n[i] + 1, n[i + 1], B, n[i], n[i + 1], True, False, True,
                         "bwd_w", self.split_k(n[i] + 1, n[i + 1], B))
                self._gemm(g, h_in, dout, W, gW, gb, lam)
            if i == 0:
                if dx is not None:  # no activation before the dense layers: the product alone
                    g = Gemm(B, n[0], n[1], n[1], n[1], False, True, False, "store", self.split_k(B, n[0], n[1]))
                    self._gemm(g, dout, W, self.dummy, dx, dx, 0.0)
                continue
            if blas[i]:
                self.host(f"matmul_dx{i}", dev.matmul, dout, Slot(f"W{i}.T"), self.douts[i - 1])
                self.instance(f"act_back<{T}, {act}, {B * n[i]}LL>", ew_grid(B * n[i]), (EW_THREADS, 1, 1),
                              (self.douts[i - 1], self.hs[i]), f"act_back{i}")
            else:
                g = Gemm(B, n[i], n[i + 1], n[i + 1], n[i + 1], False, True, False,
                         "bwd_data", self.split_k(B, n[i], n[i + 1]))
                self._gemm(g, dout, W, self.hs[i], self.douts[i - 1], self.douts[i - 1], 0.0)

    def _update(self) -> None:
        T, _ = self._types()
        sizes, ctensor, cstart = [], [], []
        for ti, g in enumerate(self.grads):
            size = int(g.size)
            sizes.append(size)
            for start in range(0, size, src.UPDATE_CHUNK):
                ctensor.append(ti)
                cstart.append(start)
        chunks: Any = (self.table(sizes, numpy.int64), self.table(ctensor, numpy.int32), self.table(cstart, numpy.int64))
        self.instance(f"update<{T}, {cuda.RULES[self.layout.rule]}, {src.UPDATE_CHUNK}>", (len(ctensor), 1, 1),
                      (src.UPDATE_THREADS, 1, 1),
                      (Slot("P"), self.gptrs, Slot("S1"), Slot("S2"), *chunks, self.hyper, self.clock))
