"""Convolution and pooling on the CuPy backend: ``kernels/conv.cu`` for the data
movement, cuBLAS (``xp.dot``) for the products.

The book's algorithm on CuPy arrays launches a copy per filter offset for
every im2col and col2im, plus transposes and a scatter for pooling; here
each of those is one launch. The products and the bias sum are the same
calls on the same layouts as the reference path, and the kernels add in the
reference's order, so the results are the reference path's bit for bit.
Anything the kernels were not written for (other dtypes, mixed dtypes, a
user's activation) takes the reference path.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy

from ... import activations
from ...patches import output_shape
from ..channel_numgrad import channel_numerical_gradient
from ..conv_ops import ConvOps, book_simple_convnet, conv_spec
from . import cuda

Array = Any
THREADS = 256
MAX_BLOCKS = 4096  # each thread loops over the rest (grid-stride)
KERNELS = [f"{k}<{t}>" for t in ("float", "double") for k in ("im2col", "col2im", "pool_forward", "pool_backward")]
KERNELS += [f"{k}<{t}, {b}>" for t in ("float", "double") for k in ("bias_nchw", "nchw_rows")
           for b in ("true", "false")]


class ConvKernels:
    """conv.cu's kernels on one device (the GPU, or the CPU emulator in tests)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self._module: Any = None

    def compile(self) -> None:
        """Build the module now (NVRTC; CuPy caches the binary on disk); raises if it fails."""
        if self._module is None:
            self._module = self.device.module(cuda.source("conv.cu"), KERNELS)

    def _launch(self, name: str, size: int, args: tuple[Any, ...]) -> None:
        self.compile()
        grid = (max(1, min(-(-size // THREADS), MAX_BLOCKS)), 1, 1)
        self.device.launch(self._module.get_function(name), grid, (THREADS, 1, 1), args)

    @staticmethod
    def _dims(shape: tuple[int, ...], *more: int) -> tuple[Any, ...]:
        n, c, h, w = shape
        return (numpy.int64(n), *(numpy.int32(v) for v in (c, h, w, *more)))

    def im2col(self, x: Array, fh: int, fw: int, stride: int, pad: int, out: Array) -> Array:
        oh, ow = output_shape(x.shape, fh, fw, stride, pad)
        self._launch(f"im2col<{cuda.real_type(x.dtype)}>", out.size,
                     (x, out, *self._dims(x.shape, fh, fw, stride, pad, oh, ow)))
        return out

    def col2im(self, col: Array, shape: tuple[int, ...], fh: int, fw: int, stride: int, pad: int,
               out: Array) -> Array:
        oh, ow = output_shape(shape, fh, fw, stride, pad)
        self._launch(f"col2im<{cuda.real_type(col.dtype)}>", out.size,
                     (col, out, *self._dims(shape, fh, fw, stride, pad, oh, ow)))
        return out

    def pool_forward(self, x: Array, ph: int, pw: int, stride: int, pad: int, out: Array, arg: Array) -> None:
        oh, ow = out.shape[2], out.shape[3]
        self._launch(f"pool_forward<{cuda.real_type(x.dtype)}>", out.size,
                     (x, out, arg, *self._dims(x.shape, ph, pw, stride, pad, oh, ow)))

    def pool_backward(self, dout: Array, arg: Array, shape: tuple[int, ...], ph: int, pw: int, stride: int,
                      pad: int, out: Array) -> Array:
        oh, ow = dout.shape[2], dout.shape[3]
        self._launch(f"pool_backward<{cuda.real_type(dout.dtype)}>", out.size,
                     (dout, arg, out, *self._dims(shape, ph, pw, stride, pad, oh, ow)))
        return out

    def bias_nchw(self, rows: Array, b: Array, out: Array, mask: Array | None) -> None:
        n, f, oh, ow = out.shape
        relu = "true" if mask is not None else "false"
        self._launch(f"bias_nchw<{cuda.real_type(out.dtype)}, {relu}>", out.size,
                     (rows, b, out, mask if mask is not None else rows.view(numpy.bool_)[:1],
                      numpy.int64(n), numpy.int32(f), numpy.int32(oh * ow)))

    def nchw_rows(self, dout: Array, mask: Array | None, rows: Array) -> Array:
        n, f, oh, ow = dout.shape
        masked = "true" if mask is not None else "false"
        self._launch(f"nchw_rows<{cuda.real_type(dout.dtype)}, {masked}>", rows.size,
                     (dout, mask if mask is not None else dout.view(numpy.bool_)[:1], rows,
                      numpy.int64(n), numpy.int32(f), numpy.int32(oh * ow)))
        return rows


class CupyConvOps(ConvOps):
    """``ConvOps`` with conv.cu's kernels for contiguous float32/float64 arrays of the backend."""

    xp: Any
    fused: bool
    strict: bool
    engine: Any
    _conv: Any = None
    _conv_failed = False  # the module failed to build: the reference path from then on

    @property
    def conv_kernels(self) -> ConvKernels:
        if self._conv is None:
            self._conv = ConvKernels(self.engine.device)
        return self._conv

    def _fits(self, *arrays: Array) -> bool:
        """Arrays of this backend with one float dtype, C-contiguous, and kernels that built."""
        dtype = arrays[0].dtype
        if not (self.fused and not self._conv_failed and dtype in (numpy.float32, numpy.float64)
                and all(isinstance(a, self.xp.ndarray) and a.dtype == dtype and a.flags.c_contiguous
                        for a in arrays)):
            return False
        try:
            self.conv_kernels.compile()
        except Exception as exc:  # e.g. an NVRTC that cannot build it: warn once, stay correct
            if self.strict:
                raise
            self._conv_failed = True
            warnings.warn(f"fastnet: CUDA convolution kernels failed to build, using plain CuPy ({exc!r})",
                          RuntimeWarning, stacklevel=3)
            return False
        return True

    def im2col(self, x: Array, filter_h: int, filter_w: int, stride: int, pad: int, reuse: Array = None) -> Array:
        if not self._fits(x):
            return super().im2col(x, filter_h, filter_w, stride, pad, reuse)
        oh, ow = output_shape(x.shape, filter_h, filter_w, stride, pad)
        out = self.xp.empty((x.shape[0] * oh * ow, x.shape[1] * filter_h * filter_w), dtype=x.dtype)
        return self.conv_kernels.im2col(x, filter_h, filter_w, stride, pad, out)

    def col2im(self, col: Array, input_shape: tuple[int, ...], filter_h: int, filter_w: int,
               stride: int, pad: int) -> Array:
        n, c = input_shape[0], input_shape[1]
        oh, ow = output_shape(tuple(input_shape), filter_h, filter_w, stride, pad)
        if not (col.shape == (n * oh * ow, c * filter_h * filter_w) and self._fits(col)):
            return super().col2im(col, input_shape, filter_h, filter_w, stride, pad)
        out = self.xp.empty(tuple(input_shape), dtype=col.dtype)
        return self.conv_kernels.col2im(col, tuple(input_shape), filter_h, filter_w, stride, pad, out)

    def _conv_rows(self, x: Array, W: Array, stride: int, pad: int) -> tuple[Array, Array, Array, tuple[int, ...]]:
        fn, _, fh, fw = W.shape
        oh, ow = output_shape(x.shape, fh, fw, stride, pad)
        col = self.im2col(x, fh, fw, stride, pad)
        col_W = W.reshape(fn, -1).T
        return self.xp.dot(col, col_W), col, col_W, (x.shape[0], fn, oh, ow)

    def conv_forward(self, x: Array, W: Array, b: Array, stride: int, pad: int, col: Array = None
                     ) -> tuple[Array, Array, Array]:
        if not self._fits(x, W, b):
            return super().conv_forward(x, W, b, stride, pad, col)
        rows, col, col_W, shape = self._conv_rows(x, W, stride, pad)
        out = self.xp.empty(shape, dtype=x.dtype)
        self.conv_kernels.bias_nchw(rows, b, out, None)
        return out, col, col_W

    def conv_activation_forward(self, x: Array, W: Array, b: Array, stride: int, pad: int,
                                activation: Any, col: Array = None) -> tuple[Array, Array, Array, Array]:
        """The built-in ReLU fused into the launch that adds the bias."""
        if activations.builtin(activation) != "relu" or not self._fits(x, W, b):
            return super().conv_activation_forward(x, W, b, stride, pad, activation, col)
        rows, col, col_W, shape = self._conv_rows(x, W, stride, pad)
        out = self.xp.empty(shape, dtype=x.dtype)
        mask = self.xp.empty(shape, dtype=numpy.bool_)
        self.conv_kernels.bias_nchw(rows, b, out, mask)
        return out, col, col_W, mask

    def conv_activation_backward(self, dout: Array, cache: Array, activation: Any, x_shape: tuple[int, ...],
                                 W_shape: tuple[int, ...], col: Array, col_W: Array, stride: int, pad: int,
                                 need_dx: bool = True) -> tuple[Array | None, Array, Array]:
        if (activations.builtin(activation) != "relu" or not self._fits(dout, col)
                or not isinstance(cache, self.xp.ndarray) or cache.dtype != numpy.bool_
                or cache.shape != dout.shape or not cache.flags.c_contiguous):
            return super().conv_activation_backward(dout, cache, activation, x_shape, W_shape, col, col_W,
                                                    stride, pad, need_dx)
        rows = self.xp.empty((dout.size // dout.shape[1], dout.shape[1]), dtype=dout.dtype)
        return self._backward_rows(self.conv_kernels.nchw_rows(dout, cache, rows), x_shape, W_shape, col, col_W,
                                   stride, pad, need_dx)

    def conv_backward(self, dout: Array, x_shape: tuple[int, ...], W_shape: tuple[int, ...],
                      col: Array, col_W: Array, stride: int, pad: int, need_dx: bool = True
                      ) -> tuple[Array | None, Array, Array]:
        if not self._fits(dout, col):
            return super().conv_backward(dout, x_shape, W_shape, col, col_W, stride, pad, need_dx)
        rows = self.xp.empty((dout.size // dout.shape[1], dout.shape[1]), dtype=dout.dtype)
        return self._backward_rows(self.conv_kernels.nchw_rows(dout, None, rows), x_shape, W_shape, col, col_W,
                                   stride, pad, need_dx)

    def _backward_rows(self, rows: Array, x_shape: tuple[int, ...], W_shape: tuple[int, ...], col: Array,
                       col_W: Array, stride: int, pad: int, need_dx: bool) -> tuple[Array | None, Array, Array]:
        """The reference's sums and products, from dout already laid out as rows (N*oh*ow, FN)."""
        xp = self.xp
        fn, c, fh, fw = W_shape
        db = xp.sum(rows, axis=0)
        dW = xp.dot(col.T, rows).transpose(1, 0).reshape(fn, c, fh, fw)
        if not need_dx:
            return None, dW, db
        return self.col2im(xp.dot(rows, col_W.T), x_shape, fh, fw, stride, pad), dW, db

    def pool_forward(self, x: Array, pool_h: int, pool_w: int, stride: int, pad: int) -> tuple[Array, Array]:
        if not self._fits(x):
            return super().pool_forward(x, pool_h, pool_w, stride, pad)
        oh, ow = output_shape(x.shape, pool_h, pool_w, stride, pad)
        out = self.xp.empty((x.shape[0], x.shape[1], oh, ow), dtype=x.dtype)
        arg = self.xp.empty(out.size, dtype=numpy.int64)
        self.conv_kernels.pool_forward(x, pool_h, pool_w, stride, pad, out, arg)
        return out, arg

    def pool_backward(self, dout: Array, arg_max: Array, x_shape: tuple[int, ...],
                      pool_h: int, pool_w: int, stride: int, pad: int) -> Array:
        want = (*tuple(x_shape)[:2], *output_shape(tuple(x_shape), pool_h, pool_w, stride, pad))
        if not (tuple(dout.shape) == want and isinstance(dout, self.xp.ndarray) and isinstance(arg_max, self.xp.ndarray)
                and arg_max.dtype == numpy.int64 and arg_max.flags.c_contiguous and arg_max.size == dout.size):
            return super().pool_backward(dout, arg_max, x_shape, pool_h, pool_w, stride, pad)
        dout = self.xp.ascontiguousarray(dout)  # a copy only when the layer after the pool gave a view
        if not self._fits(dout):
            return super().pool_backward(dout, arg_max, x_shape, pool_h, pool_w, stride, pad)
        out = self.xp.empty(tuple(x_shape), dtype=dout.dtype)
        return self.conv_kernels.pool_backward(dout, arg_max, tuple(x_shape), pool_h, pool_w, stride, pad, out)

    def convnet_train_steps(self, net: Any, x: Array, t: Array, batches: Any, optimizer: Any) -> Any:
        """The book's conv nets on this backend's arrays (``conv_spec``): each step one captured graph
        of our own kernels (``plan_conv``); an epoch one graph, or with dropout one step at a time,
        each with the masks the net's Dropout layers draw. Any other net runs its layers."""
        spec = conv_spec(net, x) if self.fused else None
        if spec is None or not all(isinstance(a, self.xp.ndarray) for a in (x, t, *net.params.values())):
            return None
        if batches is None:
            rows = int(x.shape[0])
            sizes = (int(net.params[f"W{len(spec.convs) + 1}"].shape[1]), int(net.output_size))
            draws = [_Recorded(d.rng) for d in spec.dropouts]

            def masks() -> list[Array]:  # in the order the layers draw them
                return [self.dropout_mask((rows, n), d.dropout_ratio, r) for n, d, r in zip(sizes, spec.dropouts, draws)]

            loss = self.engine.train_step(spec, x, t, optimizer, masks)
            if loss is None:  # the layers take this step: with the masks already drawn for it, if any
                for d, r in zip(spec.dropouts, draws):
                    if r.values is not None:
                        d.rng = _Replay(d, r.values)
            return loss
        if spec.dropouts:
            return [net.train_step(x[idx], t[idx], optimizer) for idx in batches]
        return self.engine.train_batches(spec, x, t, batches, optimizer)

    def convnet_numerical_gradient(self, net: Any, x: Array, t: Array, h: float = 1e-4) -> dict[str, Array]:
        """SimpleConvNet as the book builds it: exact incremental losses as batched array code
        (``conv_numgrad``), in float64; any other net the filters' losses one output channel at a
        time and the rest from the layer holding each entry (``channel_numerical_gradient``)."""
        arrays = [x, t, *net.params.values()]
        if not (self.fused and book_simple_convnet(net, x) and all(isinstance(a, self.xp.ndarray) for a in arrays)):
            return channel_numerical_gradient(net, x, t, h)
        from .conv_numgrad import simple_convnet_losses

        conv = net.layers["Conv1"]
        plus, minus = simple_convnet_losses(self.xp, net.params, conv.stride, conv.pad, x, t, h)
        return {k: ((plus[k] - minus[k]) / (2 * h)).astype(p.dtype) for k, p in net.params.items()}


class _Recorded:
    """A Dropout layer's generator, keeping the values of its draw for this step."""

    def __init__(self, rng: Any) -> None:
        self.rng, self.values = rng, None

    def random(self, *args: Any, **kwargs: Any) -> Array:
        self.values = self.rng.random(*args, **kwargs)
        return self.values


class _Replay:
    """Stands in for a Dropout layer's generator for one draw, when a plan failed after drawing
    this step's values: the layers retrying the step get the same masks, then the generator is back."""

    def __init__(self, layer: Any, values: Array) -> None:
        self.layer, self.rng, self.values = layer, layer.rng, values

    def random(self, *args: Any, **kwargs: Any) -> Array:
        self.layer.rng = self.rng
        return self.values
