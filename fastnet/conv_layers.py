"""The book's convolution and max-pooling layers (chapter 7).

Both bind to the backend active when they are created (or ``backend=``) and
run its kernels (``conv_forward``, ``pool_forward``, ...), so the same layer
runs on NumPy, Numba and CuPy. Inputs are batches of images (N, C, H, W).
"""

from __future__ import annotations

from typing import Any

from .checks import floating, need_forward, numeric
from .backend import NumpyBackend, lookup
from .patches import output_shape

__all__ = ["Convolution", "Pooling"]

Array = Any


def _size(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _images(backend: Any, x: Any, name: str = "x") -> Array:
    x = numeric(backend, x, name)
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    return x


def _check_dout(dout: Array, want: tuple[int, ...]) -> None:
    if tuple(dout.shape) != want:
        raise ValueError(f"dout must have the forward output's shape {want}, got {tuple(dout.shape)}")


class Convolution:
    """Filters W (FN, C, FH, FW) and biases b (FN,) slid over the images with `stride` and zero `pad`.

    forward keeps ``x``, ``col`` (the im2col rows) and ``col_W`` (W as a
    (C*FH*FW, FN) matrix); backward sets ``dW`` and ``db`` and returns dx.
    A backend may write a forward's ``col`` into the array of the previous
    forward (copy ``col`` to keep it across calls).
    """

    def __init__(self, W: Array, b: Array, stride: int = 1, pad: int = 0, *,
                 backend: NumpyBackend | str | None = None) -> None:
        self.backend = lookup(backend)
        self.W = floating(self.backend, W, "W")
        self.b = floating(self.backend, b, "b")
        if self.W.ndim != 4:
            raise ValueError(f"W must hold filters (FN, C, FH, FW), got shape {tuple(self.W.shape)}")
        if tuple(self.b.shape) != (self.W.shape[0],):
            raise ValueError(
                f"b must have shape ({self.W.shape[0]},), one bias per filter of W {tuple(self.W.shape)}, "
                f"got {tuple(self.b.shape)}"
            )
        self.stride = _size(stride, "stride", 1)
        self.pad = _size(pad, "pad", 0)
        self.x: Array = None
        self.col: Array = None
        self.col_W: Array = None
        self.dW: Array = None
        self.db: Array = None
        self.out_shape: tuple[int, ...] = ()

    def forward(self, x: Array) -> Array:
        x = _images(self.backend, x)
        fn, c, fh, fw = self.W.shape
        if x.shape[1] != c:
            raise ValueError(f"x has {x.shape[1]} channels (shape {tuple(x.shape)}) but W expects {c} "
                             f"(W shape {tuple(self.W.shape)})")
        try:
            out_h, out_w = output_shape(x.shape, fh, fw, self.stride, self.pad)
        except ValueError as exc:
            raise ValueError(f"x of shape {tuple(x.shape)} does not fit filters {fh}x{fw}: {exc}") from None
        return self._forward(x, (x.shape[0], fn, out_h, out_w))

    def _forward(self, x: Array, out_shape: tuple[int, ...]) -> Array:
        """Forward without checks, for nets that checked their input once."""
        self.x, self.out_shape = x, out_shape
        out, self.col, self.col_W = self.backend.conv_forward(x, self.W, self.b, self.stride, self.pad, self.col)
        return out

    def backward(self, dout: Array) -> Array:
        need_forward(self.x, self)
        dout = numeric(self.backend, dout, "dout")
        _check_dout(dout, self.out_shape)
        return self.backward_checked(dout, True)

    def backward_checked(self, dout: Array, need_dx: bool) -> Array:
        """backward for a `dout` already checked (a net's own); without dx when `need_dx` is False."""
        dx, self.dW, self.db = self.backend.conv_backward(
            dout, tuple(self.x.shape), tuple(self.W.shape), self.col, self.col_W,
            self.stride, self.pad, need_dx,
        )
        return dx


class Pooling:
    """Max pooling over pool_h x pool_w windows moved by `stride`, after zero `pad`.

    forward keeps ``x`` and ``arg_max`` (where each window's max was, in its
    row-major window order); backward sends each gradient to that position.
    `stride` defaults to 1, as the book's layer does (its nets pass stride=2).
    """

    def __init__(self, pool_h: int, pool_w: int, stride: int = 1, pad: int = 0, *,
                 backend: NumpyBackend | str | None = None) -> None:
        self.backend = lookup(backend)
        self.pool_h = _size(pool_h, "pool_h", 1)
        self.pool_w = _size(pool_w, "pool_w", 1)
        self.stride = _size(stride, "stride", 1)
        self.pad = _size(pad, "pad", 0)
        self.x: Array = None
        self.arg_max: Array = None
        self.out_shape: tuple[int, ...] = ()

    def forward(self, x: Array) -> Array:
        x = _images(self.backend, x)
        try:
            out_h, out_w = output_shape(x.shape, self.pool_h, self.pool_w, self.stride, self.pad)
        except ValueError as exc:
            raise ValueError(f"x of shape {tuple(x.shape)} does not fit the "
                             f"{self.pool_h}x{self.pool_w} pooling window: {exc}") from None
        return self._forward(x, (x.shape[0], x.shape[1], out_h, out_w))

    def _forward(self, x: Array, out_shape: tuple[int, ...]) -> Array:
        self.x, self.out_shape = x, out_shape
        out, self.arg_max = self.backend.pool_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
        return out

    def backward(self, dout: Array) -> Array:
        need_forward(self.x, self)
        dout = numeric(self.backend, dout, "dout")
        _check_dout(dout, self.out_shape)
        return self._backward(dout)

    def _backward(self, dout: Array) -> Array:
        return self.backend.pool_backward(dout, self.arg_max, tuple(self.x.shape), self.pool_h,
                                          self.pool_w, self.stride, self.pad)
