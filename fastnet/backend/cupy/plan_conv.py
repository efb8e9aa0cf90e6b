"""The book's SimpleConvNet step as one fixed list of launches, so one CUDA graph.

conv.cu moves the data (im2col, bias + ReLU into NCHW, 2x2 pooling and their
backward passes); tiled.cu's products do the convolution and the dense
layers, then its loss and multi-tensor update finish the step. Nothing calls
cuBLAS, which CuPy refuses while a graph is captured. The values agree with
the layer-by-layer path within rounding (the products add in another order).
"""

from __future__ import annotations

from typing import Any

import numpy

from ...patches import output_shape
from .launch import EW_THREADS, ew_grid
from .plan import Slot
from .plan_tiled import Gemm, TiledPlan

POOL = 2  # the book's SimpleConvNet pools 2x2 windows with stride 2, no padding


class ConvPlan(TiledPlan):
    """Convolution -> ReLU -> pooling, then the dense layers of ``TiledPlan``."""

    kernel_files = ("tiled.cu", "conv.cu")
    first_layer = 1  # W1, b1 are the convolution's

    def _geometry(self) -> tuple[int, ...]:
        """(C, H, W, FN, FH, FW, stride, pad, OH, OW, PH, PW)."""
        C, H, W, FN, FH, FW, S, P = self.layout.conv
        OH, OW = output_shape((1, C, H, W), FH, FW, S, P)
        PH, PW = output_shape((1, FN, OH, OW), POOL, POOL, POOL, 0)
        return C, H, W, FN, FH, FW, S, P, OH, OW, PH, PW

    def input_shape(self) -> tuple[int, ...]:
        C, H, W = self.layout.conv[:3]
        return (self.layout.rows, C, H, W)

    def param_shapes(self) -> list[tuple[int, ...]]:
        C, _, _, FN, FH, FW = self.layout.conv[:6]
        return [(FN, C, FH, FW), (FN,), *super().param_shapes()]

    def _alloc(self) -> None:
        super()._alloc()
        C, _, _, FN, FH, FW, _, _, OH, OW, PH, PW = self._geometry()
        B, xp, dt = self.layout.rows, self.device.xp, numpy.dtype(self.layout.dtype)
        rows = B * OH * OW
        self.col = xp.empty((rows, C * FH * FW), dt)
        self.conv_rows = xp.empty((rows, FN), dt)  # the products; in the backward pass, dout as rows
        self.image = xp.empty((B, FN, OH, OW), dt)  # after the ReLU; in the backward pass, its gradient
        self.mask = xp.empty((B, FN, OH, OW), numpy.bool_)  # where the ReLU gave 0
        self.arg = xp.empty(B * FN * PH * PW, numpy.int64)
        self.hs[0] = xp.empty((B, FN * PH * PW), dt)  # the pooled images: the dense layers' input
        self.input_grad = xp.empty((B, FN * PH * PW), dt)  # the pooled images' gradient

    def _data(self, name: str, size: int, args: tuple[Any, ...]) -> None:
        """A launch of one of conv.cu's grid-stride kernels over `size` elements."""
        self.instance(name, ew_grid(size), (EW_THREADS, 1, 1), args)

    @staticmethod
    def _dims(*values: int) -> tuple[Any, ...]:
        """conv.cu's shape arguments: the batch as long long, the rest as int."""
        return (numpy.int64(values[0]), *(numpy.int32(v) for v in values[1:]))

    def _front_forward(self) -> None:
        C, H, W, FN, FH, FW, S, P, OH, OW, PH, PW = self._geometry()
        B, (T, _) = self.layout.rows, self._types()
        rows, K = B * OH * OW, C * FH * FW
        self._data(f"im2col<{T}>", rows * K, (Slot("x"), self.col, *self._dims(B, C, H, W, FH, FW, S, P, OH, OW)))
        g = Gemm(rows, FN, K, K, K, False, True, False, "store", self.split_k(rows, FN, K))  # col @ W1.T
        self._gemm(g, self.col, Slot("W0"), self.dummy, self.conv_rows, self.conv_rows, 0.0)
        self._data(f"bias_nchw<{T}, true>", self.image.size,
                   (self.conv_rows, Slot("b0"), self.image, self.mask, *self._dims(B, FN, OH * OW)))
        self._data(f"pool_forward<{T}>", self.hs[0].size,
                   (self.image, self.hs[0], self.arg, *self._dims(B, FN, OH, OW, POOL, POOL, POOL, 0, PH, PW)))

    def _front_backward(self) -> None:
        C, _, _, FN, FH, FW, _, _, OH, OW, PH, PW = self._geometry()
        B, (T, _) = self.layout.rows, self._types()
        rows, K = B * OH * OW, C * FH * FW
        self._data(f"pool_backward<{T}>", self.image.size,
                   (self.input_grad, self.arg, self.image, *self._dims(B, FN, OH, OW, POOL, POOL, POOL, 0, PH, PW)))
        self._data(f"nchw_rows<{T}, true>", self.conv_rows.size,
                   (self.image, self.mask, self.conv_rows, *self._dims(B, FN, OH * OW)))
        gW, gb = self.grads[0], self.grads[1]
        g = Gemm(FN, K, rows, FN, K, True, False, False, "store", self.split_k(FN, K, rows))  # dout.T @ col
        self._gemm(g, self.conv_rows, self.col, self.dummy, gW, gW, 0.0)
        g = Gemm(1, FN, rows, 1, FN, True, False, True, "bwd_w", self.split_k(1, FN, rows))  # a row of ones @ dout
        self._gemm(g, self.conv_rows, self.conv_rows, self.dummy, self.dummy, gb, 0.0)
