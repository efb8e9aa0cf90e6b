"""The book's conv nets' training step as one fixed list of launches, so one CUDA graph.

conv.cu moves the data (im2col and col2im, bias + ReLU into NCHW, 2x2 pooling
and their backward passes, dropout masks); tiled.cu's products do the
convolutions and the dense layers, then its loss and multi-tensor update
finish the step. Nothing calls cuBLAS, which CuPy refuses while a graph is
captured. The values agree with the layer-by-layer path within rounding (the
products add in another order); dropout uses the masks the net's Dropout
layers draw, copied in before each run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy

from ...patches import output_shape
from .launch import EW_THREADS, ew_grid
from .plan import Slot
from .plan_tiled import Gemm, TiledPlan

POOL = 2  # the book's conv nets pool 2x2 windows with stride 2, no padding


@dataclass(frozen=True)
class Block:
    """One convolution - ReLU (- pooling) of a ``Layout.conv``, with its shapes."""

    C: int
    H: int
    W: int
    FN: int
    FH: int
    FW: int
    stride: int
    pad: int
    pool: bool

    @property
    def out_hw(self) -> tuple[int, int]:
        return output_shape((1, self.C, self.H, self.W), self.FH, self.FW, self.stride, self.pad)

    @property
    def pooled_hw(self) -> tuple[int, int]:
        return output_shape((1, self.FN, *self.out_hw), POOL, POOL, POOL, 0)

    @property
    def K(self) -> int:
        return self.C * self.FH * self.FW


def blocks(conv: tuple[Any, ...]) -> list[Block]:
    """``Layout.conv`` = (C, H, W, (FN, FH, FW, stride, pad, pool), ...) as Blocks."""
    c, h, w = conv[:3]
    out = []
    for fn, fh, fw, s, p, pool in conv[3:]:
        block = Block(c, h, w, fn, fh, fw, s, p, bool(pool))
        out.append(block)
        c, (h, w) = fn, (block.pooled_hw if pool else block.out_hw)
    return out


class ConvPlan(TiledPlan):
    """Convolution blocks, then the dense layers of ``TiledPlan``."""

    kernel_files = ("tiled.cu", "conv.cu")

    def input_shape(self) -> tuple[int, ...]:
        C, H, W = self.layout.conv[:3]
        return (self.layout.rows, C, H, W)

    def param_shapes(self) -> list[tuple[int, ...]]:
        conv = [s for b in blocks(self.layout.conv) for s in ((b.FN, b.C, b.FH, b.FW), (b.FN,))]
        return conv + super().param_shapes()

    def _alloc(self) -> None:
        super()._alloc()
        B, xp, dt = self.layout.rows, self.device.xp, numpy.dtype(self.layout.dtype)
        self.blocks = blocks(self.layout.conv)
        self.first_layer = len(self.blocks)  # the dense layers' W, b come after the filters'
        self.cols, self.conv_rows, self.images, self.masks, self.pooled, self.args = [], [], [], [], [], []
        for b in self.blocks:
            oh, ow = b.out_hw
            rows = B * oh * ow
            self.cols.append(xp.empty((rows, b.K), dt))  # in the backward pass: dout @ W
            self.conv_rows.append(xp.empty((rows, b.FN), dt))  # the products; backward: dout as rows
            self.images.append(xp.empty((B, b.FN, oh, ow), dt))  # after the ReLU; backward: its gradient
            self.masks.append(xp.empty((B, b.FN, oh, ow), numpy.bool_))  # where the ReLU gave 0
            ph, pw = b.pooled_hw if b.pool else (oh, ow)
            self.pooled.append(xp.empty((B, b.FN, ph, pw), dt) if b.pool else None)
            self.args.append(xp.empty(B * b.FN * ph * pw, numpy.int64) if b.pool else None)
        last = self.pooled[-1] if self.blocks[-1].pool else self.images[-1]
        self.hs[0] = last.reshape(B, -1)  # the dense layers' input
        self.input_grad = xp.empty(last.shape, dt)  # its gradient
        n = self.layout.sizes
        self.drop = [xp.ones((B, n[i + 1]), numpy.bool_) for i in range(self.layout.depth)] if self.layout.dropout else []

    def set_masks(self, masks: list[Any]) -> None:
        """The Dropout layers' masks for the next run (one per dense layer's output)."""
        for buf, mask in zip(self.drop, masks):
            self.device.copy(buf, mask)

    def _data(self, name: str, size: int, args: tuple[Any, ...]) -> None:
        """A launch of one of conv.cu's grid-stride kernels over `size` elements."""
        self.instance(name, ew_grid(size), (EW_THREADS, 1, 1), args)

    @staticmethod
    def _dims(*values: int) -> tuple[Any, ...]:
        """conv.cu's shape arguments: the batch as long long, the rest as int."""
        return (numpy.int64(values[0]), *(numpy.int32(v) for v in values[1:]))

    def _geometry(self, k: int) -> tuple[int, ...]:
        """Block k's (C, H, W, FH, FW, stride, pad, OH, OW): conv.cu's im2col/col2im shape arguments."""
        b = self.blocks[k]
        return (b.C, b.H, b.W, b.FH, b.FW, b.stride, b.pad, *b.out_hw)

    def _pool_dims(self, k: int) -> tuple[Any, ...]:
        b = self.blocks[k]
        return self._dims(self.layout.rows, b.FN, *b.out_hw, POOL, POOL, POOL, 0, *b.pooled_hw)

    def _after_dense(self, i: int, out: Any) -> None:
        """Dropout after each dense layer (i = depth: the scores' gradient, with the last mask)."""
        if self.layout.dropout:
            T, _ = self._types()
            mask = self.drop[min(i, self.layout.depth - 1)]
            self._data(f"apply_mask<{T}>", out.size, (out, mask, numpy.int64(out.size)))

    def _front_forward(self) -> None:
        B, (T, _) = self.layout.rows, self._types()
        image: Any = Slot("x")
        for k, b in enumerate(self.blocks):
            col, rows = self.cols[k], self.conv_rows[k]
            self._data(f"im2col<{T}>", col.size, (image, col, *self._dims(B, *self._geometry(k))))
            g = Gemm(rows.shape[0], b.FN, b.K, b.K, b.K, False, True, False, "store",
                     self.split_k(rows.shape[0], b.FN, b.K))  # col @ W.T
            self._gemm(g, col, Slot(f"W{k}"), self.dummy, rows, rows, 0.0)
            oh, ow = b.out_hw
            self._data(f"bias_nchw<{T}, true>", self.images[k].size,
                       (rows, Slot(f"b{k}"), self.images[k], self.masks[k], *self._dims(B, b.FN, oh * ow)))
            image = self.images[k]
            if b.pool:
                self._data(f"pool_forward<{T}>", self.pooled[k].size,
                           (image, self.pooled[k], self.args[k], *self._pool_dims(k)))
                image = self.pooled[k]

    def _front_backward(self) -> None:
        B, (T, _) = self.layout.rows, self._types()
        grad = self.input_grad  # the gradient of block k's output
        for k in reversed(range(len(self.blocks))):
            b, col, rows, image = self.blocks[k], self.cols[k], self.conv_rows[k], self.images[k]
            oh, ow = b.out_hw
            if b.pool:  # into the ReLU's output: its buffer is free once pooled
                self._data(f"pool_backward<{T}>", image.size, (grad, self.args[k], image, *self._pool_dims(k)))
                grad = image
            self._data(f"nchw_rows<{T}, true>", rows.size, (grad, self.masks[k], rows, *self._dims(B, b.FN, oh * ow)))
            gW, gb = self.grads[2 * k], self.grads[2 * k + 1]
            R = rows.shape[0]
            g = Gemm(b.FN, b.K, R, b.FN, b.K, True, False, False, "store", self.split_k(b.FN, b.K, R))  # dout.T @ col
            self._gemm(g, rows, col, self.dummy, gW, gW, 0.0)
            g = Gemm(1, b.FN, R, 1, b.FN, True, False, True, "bwd_w", self.split_k(1, b.FN, R))  # ones @ dout
            self._gemm(g, rows, rows, self.dummy, self.dummy, gb, 0.0)
            if k == 0:
                break  # the images need no gradient
            g = Gemm(R, b.K, b.FN, b.FN, b.K, False, False, False, "store", self.split_k(R, b.K, b.FN))  # dout @ W
            self._gemm(g, rows, Slot(f"W{k}"), self.dummy, col, col, 0.0)  # col was read for the last time
            prev = self.blocks[k - 1]
            grad = self.pooled[k - 1] if prev.pool else self.images[k - 1]  # read by the forward pass only
            self._data(f"col2im<{T}>", grad.size, (col, grad, *self._dims(B, *self._geometry(k))))
