"""The reference backend: the book's algorithms written against ``self.xp``.

Every kernel here is written once against the array module ``self.xp`` so a
backend with a NumPy-compatible module (CuPy) inherits a working version of all
of them; faster backends subclass this class and override only the kernels
they accelerate. Kernels are grouped from fine to coarse:

* functions   sigmoid, relu, softmax, cross_entropy_error, ...
* layers      affine, any activation object, softmax-with-loss: forward and backward
* updates     one optimizer rule on one parameter, in place
* whole net   mlp_predict, mlp_loss, mlp_gradient, mlp_numerical_gradient,
              mlp_train_step: a backend may run these as a few fused calls.

Kernels trust their inputs: checking shapes and array types happens once at
the public boundary (functions, layers, nets), never in here.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy

from ..errors import BackendMismatchError
from .conv_ops import ConvOps
from .loops import numerical_gradient_loop, one_blas_thread
from .spec import MLPSpec

Array = Any  # numpy.ndarray here, cupy.ndarray on the GPU

# The book adds this inside the log of the cross-entropy to avoid log(0).
CE_DELTA = 1e-7


def unavailable_reason() -> str | None:
    return None  # NumPy is a hard dependency: always available


class NumpyBackend(ConvOps):
    """Plain NumPy: the book's code, the reference every backend must match."""

    name = "numpy"
    is_gpu = False
    default_dtype: Any = numpy.float64

    def __init__(self) -> None:
        self.xp: Any = numpy

    def __repr__(self) -> str:
        return f"<fastnet backend {self.name!r}>"

    # ------------------------------------------------------------ arrays
    def owns(self, x: object) -> bool:
        """True when `x` is an array of this backend."""
        return isinstance(x, numpy.ndarray)

    def address(self, a: Array) -> int:
        """Where array `a`'s data starts (fast paths refuse parameters that overlap)."""
        return int(a.ctypes.data)

    def check(self, x: object, name: str) -> Array:
        """Return `x` as this backend's array, refusing other backends' arrays.

        Python lists and scalars are accepted on the CPU; a GPU array is not
        copied silently (that copy would hide in a hot loop): the error says
        how to move it.
        """
        if isinstance(x, numpy.ndarray):
            # a subclass (numpy.matrix keeps rows 2-D under indexing) becomes a plain array
            return x if type(x) is numpy.ndarray else numpy.asarray(x)
        if _module_of(x) == "cupy":
            raise BackendMismatchError(
                f"{name} is a CuPy (GPU) array but the active backend is "
                f"{self.name!r}; copy it to the host with fastnet.to_numpy({name}) "
                f"or run on the GPU with fastnet.set_backend('cupy')"
            )
        return numpy.asarray(x)

    def asarray(self, x: object, dtype: Any = None) -> Array:
        """Explicitly move `x` (host data, or another backend's array) here."""
        if _module_of(x) == "cupy":
            x = x.get()  # type: ignore[attr-defined]
        return numpy.asarray(x, dtype=dtype)

    def to_numpy(self, x: Array) -> numpy.ndarray:
        return numpy.asarray(x)

    def check_targets(self, t: Array, n_classes: int, name: str = "t") -> None:
        """Refuse labels outside 0..n_classes-1 and one-hot rows that are not one-hot.

        Called once per call at a net's boundary; cheap next to the matrix
        products on the CPU. A GPU backend may skip it (it would stall every
        step); ``check_targets_once`` is for places that check data once.
        """
        self.check_targets_once(t, n_classes, name)

    def check_targets_once(self, t: Array, n_classes: int, name: str = "t") -> None:
        """The full check of target values, for data checked once (the trainer's)."""
        xp = self.xp
        if t.ndim == 1:
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= n_classes:
                raise ValueError(
                    f"{name} holds class labels from {lo} to {hi}, but there are {n_classes} "
                    f"classes (outputs): labels must be integers in 0..{n_classes - 1}"
                )
            return
        good = xp.all((t == 0) | (t == 1), axis=1) & (xp.sum(t, axis=1) == 1)
        if not bool(xp.all(good)):
            row = int(xp.argmin(good))
            raise ValueError(
                f"row {row} of one-hot {name} is not one-hot (exactly one 1, the rest 0): "
                f"{self.to_numpy(t[row]).tolist()}"
            )

    def synchronize(self) -> None:
        """Wait for queued device work (nothing to wait for on the CPU)."""

    # --------------------------------------------------------- functions
    def step_function(self, x: Array) -> Array:
        return (x > 0).astype(numpy.int64)

    def sigmoid(self, x: Array) -> Array:
        return 1 / (1 + self.xp.exp(-x))

    def sigmoid_grad(self, x: Array) -> Array:
        return (1.0 - self.sigmoid(x)) * self.sigmoid(x)

    def relu(self, x: Array) -> Array:
        return self.xp.maximum(0, x)

    def relu_grad(self, x: Array) -> Array:
        grad = self.xp.zeros_like(x)
        grad[x >= 0] = 1
        return grad

    def softmax(self, x: Array) -> Array:
        xp = self.xp
        x = x - xp.max(x, axis=-1, keepdims=True)  # exp of the shifted value never overflows
        return xp.exp(x) / xp.sum(xp.exp(x), axis=-1, keepdims=True)

    def mean_squared_error(self, y: Array, t: Array) -> Array:
        return 0.5 * self.xp.sum((y - t) ** 2)

    def cross_entropy_error(self, y: Array, t: Array) -> Array:
        """Batch mean of -log(y[t] + 1e-7); t one-hot or class indices."""
        xp = self.xp
        if y.ndim == 1:
            t = t.reshape(1, t.size)
            y = y.reshape(1, y.size)
        if t.size == y.size and t.ndim == y.ndim:  # one-hot rows -> class indices (labels: one class)
            t = t.argmax(axis=1)
        batch_size = y.shape[0]
        return -xp.sum(xp.log(y[xp.arange(batch_size), t] + CE_DELTA)) / batch_size

    # ------------------------------------------------------------ layers
    def affine_forward(self, x: Array, W: Array, b: Array) -> Array:
        return self.xp.dot(x, W) + b

    def affine_backward(
        self, dout: Array, x: Array, W: Array, need_dx: bool = True
    ) -> tuple[Array | None, Array, Array]:
        """(dx, dW, db) of ``x @ W + b``; dx is skipped for a net's first layer."""
        xp = self.xp
        dx = xp.dot(dout, W.T) if need_dx else None
        dW = xp.dot(x.T, dout)
        db = xp.sum(dout, axis=0)
        return dx, dW, db

    def activation_forward(self, activation: Any, x: Array) -> tuple[Array, Array]:
        """(output, cache) of an activation object (``fastnet.activations``)."""
        return activation.forward(self.xp, x)

    def activation_backward(self, activation: Any, dout: Array, cache: Array) -> Array:
        """dx of an activation from its cache; may overwrite `dout`."""
        return activation.backward(self.xp, dout, cache)

    def softmax_cross_entropy(self, x: Array, t: Array) -> tuple[Array, Array]:
        """(loss, softmax(x)) for a batch of scores `x`."""
        y = self.softmax(x)
        return self.cross_entropy_error(y, t), y

    def softmax_cross_entropy_backward(self, y: Array, t: Array, dout: Any = 1) -> Array:
        batch_size = t.shape[0]
        if t.ndim == y.ndim:  # one-hot
            dx = (y - t) / batch_size
        else:
            dx = y.copy()
            dx[self.xp.arange(batch_size), t] -= 1
            dx = dx / batch_size
        if not (isinstance(dout, (int, float)) and dout == 1):
            dx = dx * dout  # the book assumes dout == 1 and skips this
        return dx

    # ----------------------------------------------------------- updates
    def apply_rule(self, optimizer: Any, kernel: str | None, p: Array, g: Array,
                   state: list[Array], scalars: tuple[float, ...]) -> None:
        """One optimizer step on one parameter, in place: the optimizer's own ``rule``.

        `kernel` names the compiled version of a built-in rule
        (``fastnet.optimizers.builtin``) for backends that keep one; None for
        any other optimizer.
        """
        optimizer.rule(self.xp, p, g, *state, *scalars)

    # --------------------------------------------------------- whole net
    def _decay_loss(self, spec: MLPSpec) -> Any:
        lam = spec.weight_decay
        total = 0.0
        for i in range(spec.depth):
            total += 0.5 * lam * self.xp.sum(spec.weight(i) ** 2)
        return total

    def mlp_predict(self, spec: MLPSpec, x: Array) -> Array:
        """Scores (before softmax) of a batch."""
        h = x
        for i in range(spec.depth):
            h = self.affine_forward(h, spec.weight(i), spec.bias(i))
            if i < spec.depth - 1:
                h, _ = self.activation_forward(spec.activation, h)
        return h

    def mlp_loss(self, spec: MLPSpec, x: Array, t: Array) -> Array:
        """The net's loss on a batch: the function the numerical gradient differentiates."""
        loss, _ = self.softmax_cross_entropy(self.mlp_predict(spec, x), t)
        if spec.weight_decay:
            loss = loss + self._decay_loss(spec)
        return loss

    def mlp_gradient(self, spec: MLPSpec, x: Array, t: Array) -> tuple[dict[str, Array], Array]:
        """Backprop: (gradients by parameter name, loss), the book's layer order."""
        inputs, caches = [], []
        h = x
        for i in range(spec.depth):
            inputs.append(h)
            h = self.affine_forward(h, spec.weight(i), spec.bias(i))
            if i < spec.depth - 1:
                h, cache = self.activation_forward(spec.activation, h)
                caches.append(cache)
        loss, y = self.softmax_cross_entropy(h, t)
        if spec.weight_decay:
            loss = loss + self._decay_loss(spec)
        dout = self.softmax_cross_entropy_backward(y, t)
        grads: dict[str, Array] = {}
        for i in reversed(range(spec.depth)):
            W = spec.weight(i)
            dout, dW, db = self.affine_backward(dout, inputs[i], W, need_dx=i > 0)
            if spec.weight_decay:
                dW = dW + spec.weight_decay * W
            grads[f"W{i + 1}"], grads[f"b{i + 1}"] = dW, db
            if i > 0:
                dout = self.activation_backward(spec.activation, dout, caches[i - 1])
        return {name: grads[name] for name in spec.names()}, loss

    def mlp_numerical_gradient(
        self, spec: MLPSpec, x: Array, t: Array, h: float = 1e-4
    ) -> dict[str, Array]:
        """Central differences of ``mlp_loss``, one parameter at a time (the book's loop).

        Runs with one BLAS thread: OpenBLAS rounds differently with 1 and 2
        threads, and a fixed count makes the result the same everywhere (a
        sharded run on a cluster included).
        """
        def loss(_: Array) -> Any:
            return self.mlp_loss(spec, x, t)

        with one_blas_thread():
            return {name: numerical_gradient_loop(loss, spec.params[name], h) for name in spec.names()}

    def mlp_numerical_gradient_part(
        self, spec: MLPSpec, x: Array, t: Array, name: str, start: int, stop: int, h: float = 1e-4
    ) -> Array:
        """Entries ``start:stop`` of the flattened numerical gradient of ``params[name]``.

        Each entry is computed exactly as ``mlp_numerical_gradient`` computes
        it, so shards assembled side by side equal the whole, bit for bit
        (what the distributed gradient relies on).
        """
        def loss(_: Array) -> Any:
            return self.mlp_loss(spec, x, t)

        flat = spec.params[name].reshape(-1)  # a view: params are contiguous
        with one_blas_thread():
            return numerical_gradient_loop(loss, flat[start:stop], h)

    def mlp_train_step(self, spec: MLPSpec, x: Array, t: Array, optimizer: Any) -> Array:
        """One step: backprop then ``optimizer.update``; returns the loss (left on the device)."""
        grads, loss = self.mlp_gradient(spec, x, t)
        optimizer.update(spec.params, grads)
        return loss

    def mlp_train_batches(
        self, spec: MLPSpec, x: Array, t: Array, batches: Iterable[Array], optimizer: Any
    ) -> list[Array]:
        """Many steps on ``x[idx], t[idx]`` for each index array; a GPU may capture them all."""
        return [self.mlp_train_step(spec, x[idx], t[idx], optimizer) for idx in batches]

    def numerical_gradient(self, f: Any, x: Array, h: float = 1e-4) -> Array:
        """Central-difference gradient of ``f`` at ``x`` (``fastnet.gradient`` calls this)."""
        return numerical_gradient_loop(f, x, h)

    # ------------------------------------------------------------ random
    def batch_indices(
        self, n: int, batch_size: int, rng: numpy.random.Generator, shuffle: bool = True
    ) -> Array:
        """One epoch of mini-batch indices, shape ``(n // batch_size, batch_size)``.

        ``shuffle``: a permutation of ``range(n)`` cut into batches (the last
        ``n % batch_size`` samples sit this epoch out); otherwise draws with
        replacement, like the book's ``np.random.choice(n, batch_size)``.
        Drawn on the host from the trainer's NumPy generator, so every backend
        gets the same batches, and moved here in one transfer per epoch. A GPU
        backend may override this to sample on the device (seeding its own
        generator from `rng`).
        """
        steps = n // batch_size
        if shuffle:
            idx = rng.permutation(n)[: steps * batch_size]
        else:
            idx = rng.integers(0, n, steps * batch_size)
        return self.asarray(idx.reshape(steps, batch_size))

    def rng(self, seed: int | None = None) -> Any:
        """A random generator living where this backend's arrays live."""
        return numpy.random.default_rng(seed)

    def dropout_mask(self, shape: tuple[int, ...], ratio: float, rng: Any) -> Array:
        return rng.random(shape) > ratio


def _module_of(x: object) -> str:
    return type(x).__module__.split(".")[0]


Backend = NumpyBackend
