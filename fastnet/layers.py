"""The book's layers (chapter 5 and 6), each a forward/backward pair.

Layers bind to the backend that is active when they are created (or the one
passed as ``backend=``) and do their arithmetic through its kernels, so the
same classes run on NumPy, Numba and CuPy.
"""

from __future__ import annotations

from typing import Any

import numpy

from .checks import floating, need_forward, numeric, same_shape, targets
from .definitions import as_defined, record
from . import activations
from .backend import NumpyBackend, lookup

__all__ = [
    "MulLayer",
    "AddLayer",
    "Activation",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Affine",
    "SoftmaxWithLoss",
    "Dropout",
    "BatchNormalization",
]

Array = Any


class MulLayer:
    """out = x * y for numbers or arrays (the book's shopping example)."""

    def __init__(self) -> None:
        self.x: Any = None
        self.y: Any = None

    def forward(self, x: Any, y: Any) -> Any:
        self.x, self.y = x, y
        return x * y

    def backward(self, dout: Any) -> tuple[Any, Any]:
        return dout * self.y, dout * self.x


class AddLayer:
    """out = x + y; the gradient passes through unchanged to both inputs."""

    def forward(self, x: Any, y: Any) -> Any:
        return x + y

    def backward(self, dout: Any) -> tuple[Any, Any]:
        return dout * 1, dout * 1


class Activation:
    """An activation function as a layer: any object of ``fastnet.activations`` (or your own).

    ``Activation("tanh")``, ``Activation(my_activation)``: forward keeps what
    the activation's backward needs; backward never changes the caller's dout.
    """

    def __init__(self, activation: Any = "relu", *, backend: NumpyBackend | str | None = None) -> None:
        self.backend = lookup(backend)
        self.activation = activations.get(activation)
        self.cache: Array = None
        self.out: Array = None

    def forward(self, x: Array) -> Array:
        self.out, self.cache = self.backend.activation_forward(self.activation, numeric(self.backend, x, "x"))
        return self.out

    def backward(self, dout: Array) -> Array:
        need_forward(self.out, self)
        dout = numeric(self.backend, dout, "dout")
        same_shape(dout, self.out, "dout", "the forward output")
        # copy: a backward may overwrite its input, and a caller's array must not change
        return self.backend.activation_backward(self.activation, dout.copy(), self.cache)


class Relu(Activation):
    """The book's ReLU layer (``mask``: where the input was <= 0)."""

    def __init__(self, *, backend: NumpyBackend | str | None = None) -> None:
        super().__init__(activations.RELU, backend=backend)

    @property
    def mask(self) -> Array:
        return self.cache


class Sigmoid(Activation):
    """The book's sigmoid layer (``out``: its last output)."""

    def __init__(self, *, backend: NumpyBackend | str | None = None) -> None:
        super().__init__(activations.SIGMOID, backend=backend)


class Tanh(Activation):
    """tanh as a layer."""

    def __init__(self, *, backend: NumpyBackend | str | None = None) -> None:
        super().__init__(activations.TANH, backend=backend)


class Affine:
    """out = x @ W + b; an N-d input is flattened to (N, -1) and dx given back in its shape."""

    def __init__(self, W: Array, b: Array, *, backend: NumpyBackend | str | None = None) -> None:
        self.backend = lookup(backend)
        self.W = floating(self.backend, W, "W")
        self.b = floating(self.backend, b, "b")
        if self.W.ndim != 2:
            raise ValueError(f"W must be a matrix (inputs, outputs), got shape {self.W.shape}")
        if self.b.shape != (self.W.shape[1],):
            raise ValueError(
                f"b must have shape ({self.W.shape[1]},) to match W {self.W.shape}, got {self.b.shape}"
            )
        self.x: Array = None
        self.original_x_shape: tuple[int, ...] | None = None
        self.dW: Array = None
        self.db: Array = None

    def forward(self, x: Array) -> Array:
        x = numeric(self.backend, x, "x")
        if x.ndim == 0:
            raise ValueError("x must be a batch of samples, got a scalar")
        if x.shape[0] == 0:
            raise ValueError(f"x is an empty batch (shape {x.shape})")
        original = x.shape
        x = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
        if x.shape[1] != self.W.shape[0]:
            raise ValueError(
                f"x has {x.shape[1]} features per sample (shape {original}) "
                f"but W expects {self.W.shape[0]} (W shape {self.W.shape})"
            )
        self.original_x_shape = original
        self.x = x
        out = self.backend.affine_forward(x, self.W, self.b)
        return out if len(self.original_x_shape) > 1 else out.reshape(-1)

    def backward(self, dout: Array) -> Array:
        need_forward(self.x, self)
        dout = numeric(self.backend, dout, "dout")
        want = (self.x.shape[0], self.W.shape[1])
        if dout.size != want[0] * want[1] or (dout.ndim == 2 and dout.shape != want):
            raise ValueError(f"dout must have shape {want} (batch, outputs), got {dout.shape}")
        dout = dout.reshape(want)
        dx, self.dW, self.db = self.backend.affine_backward(dout, self.x, self.W)
        return dx.reshape(self.original_x_shape)  # type: ignore[union-attr]


class SoftmaxWithLoss:
    """Softmax followed by the cross-entropy error; t one-hot or class indices."""

    def __init__(self, *, backend: NumpyBackend | str | None = None) -> None:
        self.backend = lookup(backend)
        self.loss: Array = None
        self.y: Array = None
        self.t: Array = None

    def forward(self, x: Array, t: Array) -> Array:
        """Loss of scores `x` (N, k) against labels (N,) or one-hot rows (N, k)."""
        x = numeric(self.backend, x, "x")
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"x must be a non-empty batch of scores (N, classes), got shape {x.shape}")
        return self.forward_checked(x, targets(self.backend, t, x.shape[0], x.shape[1]))

    def forward_checked(self, x: Array, t: Array) -> Array:
        """Forward without checks, for nets that checked their inputs once already."""
        self.t = t
        self.loss, self.y = self.backend.softmax_cross_entropy(x, t)
        return self.loss

    def backward(self, dout: Any = 1) -> Array:
        need_forward(self.y, self)
        return self.backend.softmax_cross_entropy_backward(self.y, self.t, dout)


class Dropout:
    """Zero each activation with probability `dropout_ratio` while training.

    Like the book, outputs are scaled by (1 - ratio) at test time rather than
    at training time. `seed` makes the masks reproducible; without it they
    come from NumPy's global generator, so ``np.random.seed(n)`` repeats them.
    """

    def __init__(
        self,
        dropout_ratio: float = 0.5,
        *,
        seed: int | None = None,
        backend: NumpyBackend | str | None = None,
    ) -> None:
        if not 0.0 <= dropout_ratio < 1.0:
            raise ValueError(f"dropout_ratio must be in [0, 1), got {dropout_ratio!r}")
        self.backend = lookup(backend)
        self.dropout_ratio = dropout_ratio
        if seed is None:  # from NumPy's global stream, so np.random.seed(n) repeats the masks (as the book)
            seed = int(numpy.random.randint(2**63 - 1, dtype=numpy.int64))
        self.rng = self.backend.rng(seed)
        self.mask: Array = None

    def forward(self, x: Array, train_flg: bool = True) -> Array:
        x = numeric(self.backend, x, "x")
        if train_flg:
            self.mask = self.backend.dropout_mask(x.shape, self.dropout_ratio, self.rng)
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout: Array) -> Array:
        need_forward(self.mask, self)
        dout = numeric(self.backend, dout, "dout")
        same_shape(dout, self.mask, "dout", "the forward output")
        return dout * self.mask


class BatchNormalization:
    """Normalise each feature over the batch, then scale by gamma and shift by beta.

    Running averages (updated with `momentum`) replace the batch statistics at
    test time. 4-D inputs (N, C, H, W) are normalised per C*H*W feature, as in
    the book.
    """

    def __init__(
        self,
        gamma: Array,
        beta: Array,
        momentum: float = 0.9,
        running_mean: Array = None,
        running_var: Array = None,
        *,
        backend: NumpyBackend | str | None = None,
    ) -> None:
        self.backend = lookup(backend)
        self.gamma = self.backend.check(gamma, "gamma")
        self.beta = self.backend.check(beta, "beta")
        self.momentum = momentum
        self.input_shape: tuple[int, ...] | None = None
        self.running_mean: Array = running_mean
        self.running_var: Array = running_var
        self.batch_size = 0
        self.xc: Array = None
        self.xn: Array = None
        self.std: Array = None
        self.dgamma: Array = None
        self.dbeta: Array = None

    def forward(self, x: Array, train_flg: bool = True) -> Array:
        x = numeric(self.backend, x, "x")
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"x must be a non-empty batch (N, features...), got shape {x.shape}")
        x2 = x.reshape(x.shape[0], -1)
        if self.gamma.shape != (x2.shape[1],) or self.beta.shape != (x2.shape[1],):
            raise ValueError(
                f"x has {x2.shape[1]} features per sample (shape {x.shape}) but gamma and beta "
                f"have shapes {self.gamma.shape} and {self.beta.shape}"
            )
        self.input_shape = x.shape
        xp = self.backend.xp
        if self.running_mean is None:
            self.running_mean = xp.zeros(x2.shape[1], dtype=x2.dtype)
            self.running_var = xp.zeros(x2.shape[1], dtype=x2.dtype)
        if train_flg:
            mu = x2.mean(axis=0)
            xc = x2 - mu
            var = xp.mean(xc**2, axis=0)
            std = xp.sqrt(var + 10e-7)  # the book's epsilon
            xn = xc / std
            self.batch_size, self.xc, self.xn, self.std = x2.shape[0], xc, xn, std
            m = self.momentum
            self.running_mean = m * self.running_mean + (1 - m) * mu
            self.running_var = m * self.running_var + (1 - m) * var
        else:
            xn = (x2 - self.running_mean) / xp.sqrt(self.running_var + 10e-7)
        return (self.gamma * xn + self.beta).reshape(self.input_shape)

    def backward(self, dout: Array) -> Array:
        need_forward(self.xn, self)
        dout = numeric(self.backend, dout, "dout")
        if tuple(dout.shape) != tuple(self.input_shape):  # type: ignore[arg-type]
            raise ValueError(f"dout must have the forward output's shape {self.input_shape}, got {dout.shape}")
        xp = self.backend.xp
        dout = dout.reshape(dout.shape[0], -1)
        self.dbeta = dout.sum(axis=0)
        self.dgamma = xp.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -xp.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar
        dmu = xp.sum(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        return dx.reshape(self.input_shape)

from .conv_layers import Convolution, Pooling  # noqa: E402

__all__ += ["Convolution", "Pooling"]

_PLAIN = (Activation, Relu, Sigmoid, Tanh, Affine, SoftmaxWithLoss, Dropout, BatchNormalization, Convolution, Pooling)


record(*_PLAIN)


def plain_layer(layer: Any) -> bool:
    """Whether `layer` is exactly one of these classes as defined, with no method replaced on the
    class or the instance: what a backend or a net may run its own way. A subclass may compute
    something else."""
    return (type(layer) in _PLAIN and not any(name in vars(layer) for name in ("forward", "backward"))
            and as_defined(layer, instance=False))
