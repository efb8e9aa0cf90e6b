"""The Numba backend's convolution and pooling: compiled data movement, NumPy's BLAS.

The matrix products are NumPy's own ``dot`` on operands laid out as the
reference lays them out, and the bias sum is NumPy's own ``sum``; compiled
kernels (``conv_kernels``) replace im2col, col2im and pooling, which only
copy, compare and add in the reference's order. So every result equals the
NumPy backend's bit for bit. Outputs are C-ordered (the reference returns
transposed views of the same values), which spares the next layer a copy. Inputs the kernels were not written for (not
float32/float64 NumPy arrays, or mixed dtypes) take the reference path.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy

from ... import activations
from ...patches import output_shape
from ..channel_numgrad import channel_numerical_gradient
from ..conv_ops import ConvOps, book_simple_convnet
from ..loops import cores_free_between_products

Array = Any
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
_K: Any = None
_MAX_SCRATCH = 16  # work arrays kept per thread (DeepConvNet uses 13 distinct ones)


def _kernel(name: str, size: int) -> tuple[Any, bool]:
    """(The compiled kernel `name`, whether it is the threaded one): threaded when its output
    has `size` >= PARALLEL_MIN elements and the cores are free between NumPy's products.

    By default OpenBLAS's idle threads keep spinning on the cores a threaded
    kernel would need, and both then wait on each other: a B=100
    SimpleConvNet step in float64 took 41 ms with threaded kernels beside
    two BLAS threads, 21 ms with one-thread kernels. The cores are free when
    NumPy's BLAS runs on one thread (``OPENBLAS_NUM_THREADS=1``, or inside
    the numerical gradient) or when idle threads sleep at once
    (``loops.idle_threads_sleep``: ``OPENBLAS_THREAD_TIMEOUT=4
    OMP_WAIT_POLICY=passive``); then the threaded kernels take a DeepConvNet
    float64 step from 257 to 203 ms (``benchmarks/bench_conv.py``,
    ``test_conv_step``, 2-core host).
    """
    global _K
    if _K is None:
        from . import conv_kernels

        _K = conv_kernels
    threaded = size >= _K.PARALLEL_MIN and cores_free_between_products()
    return _K.KERNELS[name][threaded], threaded


def _float(*arrays: Array) -> bool:
    """All NumPy arrays of one float dtype (what the kernels are compiled for)."""
    dtype = arrays[0].dtype
    return dtype in _FLOATS and all(type(a) is numpy.ndarray and a.dtype == dtype for a in arrays)


def _conv_fits(x: Array, W: Array, b: Array) -> bool:
    """Float arrays of one dtype shaped as a convolution's: images, filters and one bias per filter
    (NumPy would broadcast any other bias; the kernels read exactly one per filter)."""
    return (_float(x, W, b) and x.ndim == 4 and W.ndim == 4 and x.shape[1] == W.shape[1]
            and b.shape == (W.shape[0],))


def _rows_fit(dout: Array, *arrays: Array) -> bool:
    """A C-ordered dout of more than one image: the reference's rows are then a C-ordered
    array (a copy, or a view when one of its dimensions is 1), summed as the kernels sum them."""
    return _float(dout, *arrays) and dout.ndim == 4 and dout.shape[0] > 1 and dout.flags.c_contiguous


class NumbaConvOps(ConvOps):
    """Overrides of ``ConvOps`` for float32/float64 NumPy arrays."""

    _local: Any  # the backend's threading.local()
    _parallel_lock: Any  # the backend's lock around parallel kernels

    def _scratch(self, tag: str, shape: tuple[int, ...], dtype: Any) -> Array:
        """A work array of this thread, reused across calls: only for values consumed within one call.

        Fresh arrays this large are page-faulted in on every call; nothing
        that is returned or kept by a layer ever lives in one.
        """
        pool = self._local.__dict__.setdefault("conv_scratch", OrderedDict())
        key = (tag, shape, numpy.dtype(dtype).char)
        buf = pool.pop(key, None)
        if buf is None:
            buf = numpy.empty(shape, dtype=dtype)
        pool[key] = buf  # most recently used last
        while len(pool) > _MAX_SCRATCH:
            pool.popitem(last=False)
        return buf

    def _run(self, name: str, size: int, *args: Any) -> Any:
        """Kernel `name` on `args`; a threaded one under the backend's lock (Numba's workqueue
        threading layer must not run two parallel kernels at once)."""
        fn, threaded = _kernel(name, size)
        if not threaded:
            return fn(*args)
        with self._parallel_lock:
            return fn(*args)

    def im2col(self, x: Array, filter_h: int, filter_w: int, stride: int, pad: int,
               reuse: Array = None) -> Array:
        """`reuse`: an old col to overwrite when it has the right shape and dtype (else a new one).

        One image: the reference's col is then a transposed view, not a copy,
        and the products it feeds round differently; that layout is kept.
        """
        if not _float(x) or x.shape[0] == 1:
            return super().im2col(x, filter_h, filter_w, stride, pad)
        n, c = x.shape[0], x.shape[1]
        oh, ow = output_shape(x.shape, filter_h, filter_w, stride, pad)
        shape = (n * oh * ow, c * filter_h * filter_w)
        if (type(reuse) is numpy.ndarray and reuse.shape == shape and reuse.dtype == x.dtype
                and reuse.flags.c_contiguous and reuse.flags.writeable):
            col = reuse  # fresh arrays this large are page-faulted in again on every call
        else:
            col = numpy.empty(shape, dtype=x.dtype)
        self._run("im2col", col.size, x, filter_h, filter_w, stride, pad, oh, ow, col)
        return col

    def col2im(self, col: Array, input_shape: tuple[int, ...], filter_h: int, filter_w: int,
               stride: int, pad: int) -> Array:
        if not (_float(col) and col.ndim == 2):
            return super().col2im(col, input_shape, filter_h, filter_w, stride, pad)
        n, c, h, w = input_shape
        oh, ow = output_shape(input_shape, filter_h, filter_w, stride, pad)
        img = numpy.zeros((n, c, h + 2 * pad + stride - 1, w + 2 * pad + stride - 1), dtype=col.dtype)
        self._run("col2im", img.size, col, c, filter_h, filter_w, stride, oh, ow, img)
        return img[:, :, pad:h + pad, pad:w + pad]

    def conv_forward(self, x: Array, W: Array, b: Array, stride: int, pad: int, col: Array = None
                     ) -> tuple[Array, Array, Array]:
        if not _conv_fits(x, W, b):
            return super().conv_forward(x, W, b, stride, pad, col)
        fn, _, fh, fw = W.shape
        oh, ow = output_shape(x.shape, fh, fw, stride, pad)
        col = self.im2col(x, fh, fw, stride, pad, col)
        col_W = W.reshape(fn, -1).T
        rows = numpy.dot(col, col_W, out=self._scratch("rows", (col.shape[0], fn), x.dtype))
        out = numpy.empty((x.shape[0], fn, oh, ow), dtype=x.dtype)
        self._run("bias_nchw", out.size, rows, b, out)  # the same sums as dot + b, stored C-ordered
        return out, col, col_W

    def conv_activation_forward(self, x: Array, W: Array, b: Array, stride: int, pad: int,
                                activation: Any, col: Array = None) -> tuple[Array, Array, Array, Array]:
        """The built-in ReLU fused into the pass that adds the bias; any other activation as two steps."""
        if activations.builtin(activation) != "relu" or not _conv_fits(x, W, b):
            return super().conv_activation_forward(x, W, b, stride, pad, activation, col)
        fn, _, fh, fw = W.shape
        oh, ow = output_shape(x.shape, fh, fw, stride, pad)
        col = self.im2col(x, fh, fw, stride, pad, col)
        col_W = W.reshape(fn, -1).T
        rows = numpy.dot(col, col_W, out=self._scratch("rows", (col.shape[0], fn), x.dtype))
        out = numpy.empty((x.shape[0], fn, oh, ow), dtype=x.dtype)
        mask = numpy.empty(out.shape, dtype=numpy.bool_)
        self._run("bias_relu_nchw", out.size, rows, b, out, mask)
        return out, col, col_W, mask

    def conv_activation_backward(self, dout: Array, cache: Array, activation: Any, x_shape: tuple[int, ...],
                                 W_shape: tuple[int, ...], col: Array, col_W: Array, stride: int, pad: int,
                                 need_dx: bool = True) -> tuple[Array | None, Array, Array]:
        if (activations.builtin(activation) != "relu" or not _rows_fit(dout, col, col_W)
                or type(cache) is not numpy.ndarray or cache.dtype != numpy.bool_ or cache.shape != dout.shape
                or not cache.flags.c_contiguous):
            return super().conv_activation_backward(dout, cache, activation, x_shape, W_shape, col, col_W,
                                                    stride, pad, need_dx)
        n, fn, oh, ow = dout.shape
        rows = self._scratch("rows", (n * oh * ow, fn), dout.dtype)
        self._run("masked_nhwc_rows", rows.size, dout, cache, rows)
        return self._conv_backward_rows(rows, x_shape, W_shape, col, col_W, stride, pad, need_dx)

    def conv_backward(self, dout: Array, x_shape: tuple[int, ...], W_shape: tuple[int, ...],
                      col: Array, col_W: Array, stride: int, pad: int, need_dx: bool = True
                      ) -> tuple[Array | None, Array, Array]:
        if not _rows_fit(dout, col, col_W):
            return super().conv_backward(dout, x_shape, W_shape, col, col_W, stride, pad, need_dx)
        fn = W_shape[0]
        n, _, oh, ow = dout.shape
        rows = self._scratch("rows", (n * oh * ow, fn), dout.dtype)
        self._run("nhwc_rows", rows.size, dout, rows)
        return self._conv_backward_rows(rows, x_shape, W_shape, col, col_W, stride, pad, need_dx)

    def _conv_backward_rows(self, rows: Array, x_shape: tuple[int, ...], W_shape: tuple[int, ...],
                            col: Array, col_W: Array, stride: int, pad: int, need_dx: bool
                            ) -> tuple[Array | None, Array, Array]:
        """conv_backward from dout already laid out as rows (N*oh*ow, FN)."""
        fn, c, fh, fw = W_shape
        db = numpy.sum(rows, axis=0)
        dW = numpy.dot(col.T, rows).transpose(1, 0).reshape(fn, c, fh, fw)
        if not need_dx:
            return None, dW, db
        dcol = numpy.dot(rows, col_W.T, out=self._scratch("dcol", (rows.shape[0], col_W.shape[0]), rows.dtype))
        return self.col2im(dcol, x_shape, fh, fw, stride, pad), dW, db

    def pool_forward(self, x: Array, pool_h: int, pool_w: int, stride: int, pad: int
                     ) -> tuple[Array, Array]:
        if not _float(x):
            return super().pool_forward(x, pool_h, pool_w, stride, pad)
        n, c = x.shape[0], x.shape[1]
        oh, ow = output_shape(x.shape, pool_h, pool_w, stride, pad)
        out = numpy.empty((n, c, oh, ow), dtype=x.dtype)
        arg_max = numpy.empty(n * oh * ow * c, dtype=numpy.intp)
        if self._run("pool_forward", x.size, x, pool_h, pool_w, stride, pad, out, arg_max):
            # a window whose max is both 0.0 and -0.0: only NumPy knows which sign its max gives
            return super().pool_forward(x, pool_h, pool_w, stride, pad)
        return out, arg_max

    def pool_backward(self, dout: Array, arg_max: Array, x_shape: tuple[int, ...],
                      pool_h: int, pool_w: int, stride: int, pad: int) -> Array:
        if not (_float(dout) and type(arg_max) is numpy.ndarray and arg_max.dtype == numpy.intp):
            return super().pool_backward(dout, arg_max, x_shape, pool_h, pool_w, stride, pad)
        n, c, h, w = x_shape
        img = numpy.zeros((n, c, h + 2 * pad + stride - 1, w + 2 * pad + stride - 1), dtype=dout.dtype)
        self._run("pool_backward", img.size, dout, arg_max, pool_h, pool_w, stride, img)
        return img[:, :, pad:h + pad, pad:w + pad]

    def convnet_numerical_gradient(self, net: Any, x: Array, t: Array, h: float = 1e-4) -> dict[str, Array]:
        """SimpleConvNet as the book builds it: exact incremental losses (``conv_numgrad``), in float64.

        Equal to the book's loop within rounding, not bit for bit (the losses
        are computed in float64 here, in the net's dtype there). Any other
        net (DeepConvNet, or a SimpleConvNet whose layers were changed) takes
        ``channel_numerical_gradient``: float64 filters one output channel at
        a time, everything else the loop from the layer holding the entry.
        """
        if not _book_simple_convnet(net, x, t):
            return channel_numerical_gradient(net, x, t, h)
        import numba

        from ..loops import one_blas_thread
        from .conv_numgrad import simple_convnet_losses

        conv = net.layers["Conv1"]
        with self._parallel_lock, one_blas_thread(), numba.parallel_chunksize(1):  # type: ignore[attr-defined]
            plus, minus = simple_convnet_losses(net.params, conv.stride, conv.pad, x, t, h)
        return {k: ((plus[k] - minus[k]) / (2 * h)).astype(p.dtype) for k, p in net.params.items()}


def _book_simple_convnet(net: Any, x: Array, t: Array) -> bool:
    """Whether `net` is exactly the book's SimpleConvNet structure, on float NumPy arrays."""
    arrays = [x, t, *net.params.values()]
    return book_simple_convnet(net, x) and all(type(a) is numpy.ndarray for a in arrays)
