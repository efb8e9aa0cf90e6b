"""im2col and col2im: convolution as one matrix product (the book's ch.7 helpers).

``im2col`` lays every filter-sized patch of a batch of images out as one row,
so a convolution becomes ``col @ W.reshape(FN, -1).T``; ``col2im`` sends the
rows of such a matrix back onto the images, adding where patches overlap.
Both work on any backend's arrays (NumPy or CuPy); the layers call the
active backend's versions, which may be compiled.
"""

from __future__ import annotations

from typing import Any

__all__ = ["col2im", "conv_output_size", "im2col"]

Array = Any


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def conv_output_size(input_size: int, filter_size: int, stride: int = 1, pad: int = 0) -> int:
    """Positions a filter takes along one axis: (input + 2*pad - filter) // stride + 1."""
    input_size = _int(input_size, "input_size", 1)
    filter_size = _int(filter_size, "filter_size", 1)
    stride = _int(stride, "stride", 1)
    pad = _int(pad, "pad", 0)
    span = input_size + 2 * pad - filter_size
    if span < 0:
        raise ValueError(
            f"filter_size {filter_size} is larger than the padded input "
            f"({input_size} + 2*{pad} = {input_size + 2 * pad})"
        )
    return span // stride + 1


def output_shape(input_shape: tuple[int, ...], filter_h: int, filter_w: int,
                 stride: int, pad: int) -> tuple[int, int]:
    """(out_h, out_w) for images of shape (N, C, H, W), with checked arguments."""
    return (conv_output_size(input_shape[2], filter_h, stride, pad),
            conv_output_size(input_shape[3], filter_w, stride, pad))


def _xp(a: Array) -> Any:
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    import numpy

    return numpy


def _float_dtype(xp: Any, a: Array) -> Any:
    # floating inputs keep their precision; integers become float64 (what the book computes in)
    return a.dtype if a.dtype.kind == "f" else xp.float64


def reference_im2col(xp: Any, x: Array, filter_h: int, filter_w: int, stride: int, pad: int) -> Array:
    """The book's algorithm, arguments already checked."""
    n, c = x.shape[0], x.shape[1]
    out_h, out_w = output_shape(x.shape, filter_h, filter_w, stride, pad)
    img = xp.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
    col = xp.zeros((n, c, filter_h, filter_w, out_h, out_w), dtype=_float_dtype(xp, x))
    for y in range(filter_h):
        y_stop = y + stride * out_h
        for x_ in range(filter_w):
            x_stop = x_ + stride * out_w
            col[:, :, y, x_, :, :] = img[:, :, y:y_stop:stride, x_:x_stop:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * out_h * out_w, -1)


def reference_col2im(xp: Any, col: Array, input_shape: tuple[int, ...], filter_h: int, filter_w: int,
                     stride: int, pad: int) -> Array:
    """The book's algorithm: patches added back in (y, x) filter order."""
    n, c, h, w = input_shape
    out_h, out_w = output_shape(input_shape, filter_h, filter_w, stride, pad)
    col = col.reshape(n, out_h, out_w, c, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = xp.zeros((n, c, h + 2 * pad + stride - 1, w + 2 * pad + stride - 1), dtype=col.dtype)
    for y in range(filter_h):
        y_stop = y + stride * out_h
        for x_ in range(filter_w):
            x_stop = x_ + stride * out_w
            img[:, :, y:y_stop:stride, x_:x_stop:stride] += col[:, :, y, x_, :, :]
    return img[:, :, pad:h + pad, pad:w + pad]


def check_images(x: Array, name: str = "input_data") -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")


def im2col(input_data: Array, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0) -> Array:
    """Rows of patches: shape (N*out_h*out_w, C*filter_h*filter_w).

    Row ``(n*out_h + i)*out_w + j`` holds the patch under the filter at output
    position (i, j) of image n, in (channel, y, x) order; the image is padded
    with `pad` zeros on every side first.
    """
    xp = _xp(input_data)
    x = xp.asarray(input_data)
    check_images(x)
    filter_h = _int(filter_h, "filter_h", 1)
    filter_w = _int(filter_w, "filter_w", 1)
    output_shape(x.shape, filter_h, filter_w, stride, pad)  # checks stride, pad and sizes
    return reference_im2col(xp, x, filter_h, filter_w, int(stride), int(pad))


def col2im(col: Array, input_shape: tuple[int, ...], filter_h: int, filter_w: int,
           stride: int = 1, pad: int = 0) -> Array:
    """The images (shape `input_shape`) whose patches, summed where they overlap, are `col`."""
    xp = _xp(col)
    col = xp.asarray(col)
    if len(tuple(input_shape)) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {input_shape!r}")
    shape = tuple(_int(s, "each entry of input_shape", 1) for s in input_shape)
    filter_h = _int(filter_h, "filter_h", 1)
    filter_w = _int(filter_w, "filter_w", 1)
    out_h, out_w = output_shape(shape, filter_h, filter_w, stride, pad)
    want = (shape[0] * out_h * out_w, shape[1] * filter_h * filter_w)
    if col.ndim != 2 or tuple(col.shape) != want:
        raise ValueError(f"col must have shape {want} for input_shape {shape}, got {tuple(col.shape)}")
    if col.dtype.kind != "f":
        col = col.astype(xp.float64)
    return reference_col2im(xp, col, shape, filter_h, filter_w, int(stride), int(pad))
