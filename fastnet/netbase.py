"""What every fastnet net shares: the book's methods, checks at the boundary, the backend hand-off.

A net keeps the book's structure (a ``params`` dict of live arrays, a
``layers`` dict, a ``last_layer``) and hands whole-net work (predict, loss,
backprop, numerical gradient, a training step) to its backend as one
``MLPSpec``, so a backend can fuse it. Other nets (dropout, batch norm,
convolutions) run layer by layer, as in the book, unless ``whole_steps``
hands their training steps to the backend.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy

from . import activations
from .checks import Number, all_finite, layer_params, non_negative, real, targets, writable_params
from .backend import MLPSpec, NumpyBackend, lookup
from .backend.loops import numerical_gradient_loop
from .errors import BackendMismatchError
from .layers import Affine, BatchNormalization, SoftmaxWithLoss, plain_layer

__all__ = ["Net"]

Array = Any
Seed = int | numpy.random.Generator | None
_LOCK_FOR_LOCKS = threading.Lock()

def seed_rng(seed: Seed) -> numpy.random.Generator:
    """The generator a net draws its weights (and dropout seeds) from.

    An int gives ``numpy.random.default_rng(seed)``: the same net on every
    backend and in every process. None seeds a new generator with 128 bits
    drawn from NumPy's global generator (``numpy.random.randint``), so, as in
    the book, ``np.random.seed(n)`` at the top of a script makes every run
    build the same nets; without it each run differs.
    """
    if isinstance(seed, numpy.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, numpy.integer)) or seed < 0):
        raise ValueError(f"seed must be an integer >= 0, a numpy.random.Generator or None, got {seed!r}")
    if seed is None:
        return numpy.random.default_rng(numpy.random.randint(2**32, size=4, dtype=numpy.uint32))
    return numpy.random.default_rng(seed)


def _checked_batches(batches: Any, n: int) -> Any:
    """`batches` as given when it is a 2-D index array, else as a list; no batch may be empty."""
    if getattr(batches, "ndim", None) == 2:
        if batches.shape[1] == 0:
            raise ValueError("batches must hold non-empty index arrays, got batches of 0 indices")
        return batches
    if isinstance(batches, (str, bytes)) or not hasattr(batches, "__iter__"):
        raise TypeError(f"batches must be an iterable of index arrays, got {type(batches).__name__}")
    out = list(batches)
    for i, idx in enumerate(out):
        size = getattr(idx, "size", None)
        if size is None:
            size = len(idx) if hasattr(idx, "__len__") else 1
        if size == 0:
            raise ValueError(f"batch {i} is empty: every batch needs at least one index (of {n} samples)")
    return out


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Net:
    """What every fastnet net shares; subclasses fill params and layers."""

    params: dict[str, Array]
    layers: "OrderedDict[str, Any]"
    last_layer: SoftmaxWithLoss
    activation: Any = activations.RELU
    weight_decay_lambda = Number(non_negative, default=0.0)
    _config: dict[str, Any]

    def __init__(self, *, dtype: Any, backend: NumpyBackend | str | None) -> None:
        self.backend = lookup(backend)
        self.dtype = numpy.dtype(self.backend.default_dtype if dtype is None else dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"dtype must be a floating-point type, got {self.dtype}")

    # -- what the backend sees
    def spec(self) -> MLPSpec | None:
        """The net as an MLPSpec, or None when it has layers a spec cannot hold.

        Built anew on each call (a few attribute reads): what the backend sees
        is always the net's current params, activation and weight decay. None
        too once a layer was swapped or given methods of its own: the net then
        runs its layers one by one, as the book's does.
        """
        if not self._layers_as_built():
            return None
        return MLPSpec(self.params, self.depth, self.activation, self.weight_decay_lambda)

    def _remember_layers(self) -> None:
        """Record the layers the constructor made (the subclass calls this last)."""
        self._built = (tuple(self.layers.items()), self.last_layer)

    def _layers_as_built(self) -> bool:
        built = self.__dict__.get("_built")
        if built is None:
            return False
        pairs, last = built
        layers, act = self.layers, self.activation
        if self.last_layer is not last or type(layers) is not OrderedDict or len(layers) != len(pairs):
            return False
        for name, layer in pairs:  # the same objects, no method replaced, the net's activation
            if layers.get(name) is not layer or not plain_layer(layer) or getattr(layer, "activation", act) is not act:
                return False
        return plain_layer(last)

    @property
    def depth(self) -> int:
        """Number of affine layers."""
        return sum(1 for name in self.params if name.startswith("W"))

    @property
    def input_size(self) -> int:
        return int(self.params["W1"].shape[0])

    @property
    def output_size(self) -> int:
        return int(self.params[f"W{self.depth}"].shape[1])  # read each call: W may be rebound

    # -- checks at the boundary (once per call, never inside kernels)
    def _x(self, x: Array, name: str = "x", *, train: bool = False) -> Array:
        layer_params(self.backend, self.params, self.depth, train=train)
        # the common case in a training loop, decided on metadata alone
        if (type(x) is self.backend.xp.ndarray and x.dtype == self.dtype and x.ndim == 2 and x.shape[0]
                and x.shape[1] == self.params["W1"].shape[0]):
            return x
        x = self.backend.check(x, name)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(
                f"{name} must be a batch of shape (N, {self.input_size}), got shape {x.shape}; "
                f"for one sample use {name}.reshape(1, -1)"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch (0 samples, shape {x.shape})")
        if x.ndim > 2:
            x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.input_size:
            raise ValueError(
                f"{name} must have shape (N, {self.input_size}), got {x.shape}: the net was "
                f"built with input_size={self.input_size}"
            )
        return x.astype(self.dtype, copy=False)

    def checked_batch(
        self, x: Array, t: Array, x_name: str = "x", t_name: str = "t", *, once: bool = False,
        train: bool = False,
    ) -> tuple[Array, Array]:
        """(x, t) checked against this net and converted to its backend and dtype; errors name
        `x_name` and `t_name`."""
        x = self._x(x, x_name, train=train)
        t = targets(self.backend, t, x.shape[0], self.output_size, t_name, x_name, once=once)
        if t.ndim == 2 and t.dtype != self.dtype:
            t = t.astype(self.dtype)
        return x, t

    def _optimizer(self, optimizer: Any) -> None:
        """Bind a fresh optimizer to this net's backend; refuse one bound to another device."""
        if isinstance(optimizer, type):
            raise TypeError(f"optimizer must be an instance, e.g. {optimizer.__name__}(0.1), not the class itself")
        if not hasattr(optimizer, "update"):
            raise TypeError(f"optimizer must be a fastnet Optimizer (e.g. SGD(0.1)), got {type(optimizer).__name__}")
        if not hasattr(optimizer, "backend"):
            return  # a duck-typed optimizer of the user's own
        current = optimizer.backend
        if current is None:
            optimizer.backend = self.backend  # keep its state on the net's device
        elif current.xp is not self.backend.xp:
            raise BackendMismatchError(
                f"the optimizer keeps its state on backend {current.name!r} but the net is on "
                f"{self.backend.name!r}; create a new optimizer for this net"
            )

    # -- the book's methods
    def predict(self, x: Array, train_flg: bool = False) -> Array:
        """Scores (before softmax) for a batch."""
        x = self._x(x)
        spec = self.spec()
        if spec is not None:
            return self.backend.mlp_predict(spec, x)
        return self._predict_layers(x, train_flg)

    def loss(self, x: Array, t: Array, train_flg: bool = False) -> Array:
        """Cross-entropy loss (plus weight decay) on a batch; t one-hot or labels."""
        x, t = self.checked_batch(x, t)
        spec = self.spec()
        if spec is not None:
            return self.backend.mlp_loss(spec, x, t)
        return self.layers_loss(x, t, train_flg)

    def accuracy(self, x: Array, t: Array) -> float:
        """Fraction of samples whose highest score is the true class."""
        x, t = self.checked_batch(x, t)
        xp = self.backend.xp
        y = xp.argmax(self.predict(x), axis=1)
        if t.ndim != 1:
            t = xp.argmax(t, axis=1)
        return float(xp.sum(y == t)) / x.shape[0]

    def gradient(self, x: Array, t: Array) -> dict[str, Array]:
        """Backprop gradients, keyed like ``params``."""
        return self.gradient_and_loss(x, t)[0]

    def gradient_and_loss(self, x: Array, t: Array) -> tuple[dict[str, Array], Array]:
        """Backprop gradients and the loss of the same forward pass."""
        x, t = self.checked_batch(x, t)
        spec = self.spec()
        if spec is not None:
            return self.backend.mlp_gradient(spec, x, t)
        return self._gradient_layers(x, t)

    def numerical_gradient(self, x: Array, t: Array, h: float = 1e-4) -> dict[str, Array]:
        """Central-difference gradients of ``loss``, one parameter at a time. Parameters move in
        place while it runs: calls on one net from several threads take turns (a lock per net)."""
        h = real(h, "h", positive=True)
        x, t = self.checked_batch(x, t)
        writable_params(self.params, "numerical_gradient moves each parameter in place")
        with self._numgrad_lock:
            spec = self.spec()
            if spec is not None and all_finite(self.backend, [x, *self.params.values()]):
                return self.backend.mlp_numerical_gradient(spec, x, t, h)  # fast kernels assume finite values

            def f(_: Array) -> Any:
                return self.layers_loss(x, t, True)

            return {k: numerical_gradient_loop(f, p, h) for k, p in self.params.items()}

    @property
    def _numgrad_lock(self) -> Any:
        lock = self.__dict__.get("_lock")
        if lock is None:
            with _LOCK_FOR_LOCKS:
                lock = self.__dict__.setdefault("_lock", threading.RLock())
        return lock

    def whole_steps(self, x: Array, t: Array, batches: Any, optimizer: Any) -> Any:
        """The backend's run of whole steps (one on x, t when `batches` is None), or None: the layers run."""
        spec = self.spec()
        if spec is not None and batches is None:
            return self.backend.mlp_train_step(spec, x, t, optimizer)
        return None if spec is None else self.backend.mlp_train_batches(spec, x, t, batches, optimizer)

    def train_step(self, x: Array, t: Array, optimizer: Any) -> Array:
        """Backprop and ``optimizer.update`` in one call; returns the loss.

        The loss stays a backend scalar (on a GPU, no device sync happens).
        """
        x, t = self.checked_batch(x, t, train=True)
        self._optimizer(optimizer)
        loss = self.whole_steps(x, t, None, optimizer)
        if loss is not None:
            return loss
        grads, loss = self._gradient_layers(x, t)
        optimizer.update(self.params, grads)
        return loss

    def train_batches(self, x: Array, t: Array, batches: Any, optimizer: Any) -> Any:
        """One ``train_step`` on ``x[idx], t[idx]`` for each index array in `batches`.

        `x` and `t` are a whole data set already on the net's backend (move it
        once with ``net.backend.asarray``); `batches` is an iterable of index
        arrays, e.g. ``backend.batch_indices(...)``. The whole run goes to the
        backend in one call, so a GPU backend can capture it as one graph.
        Returns the losses (backend scalars or an array; nothing is synced).
        """
        x, t = self.checked_batch(x, t, train=True)
        self._optimizer(optimizer)
        batches = _checked_batches(batches, x.shape[0])
        losses = self.whole_steps(x, t, batches, optimizer)
        if losses is not None:
            return losses
        losses = []
        for idx in batches:
            grads, loss = self._gradient_layers(x[idx], t[idx])
            optimizer.update(self.params, grads)
            losses.append(loss)
        return losses

    #: samples per forward pass of ``evaluate`` (and so of ``Trainer``) by default
    EVAL_BATCH = 10000

    def evaluate(self, x: Array, t: Array, batch_size: int | None = None) -> tuple[float, float]:
        """(loss, accuracy) on a data set in test mode, `batch_size` samples at a time
        (default ``EVAL_BATCH``).

        Test mode: dropout off and batch norm on its running averages. The
        loss includes the weight-decay term, like ``loss``. One device sync.
        """
        x, t = self.checked_batch(x, t)
        batch_size = positive_int(self.EVAL_BATCH if batch_size is None else batch_size, "batch_size")
        xp = self.backend.xp
        n = x.shape[0]
        loss_sum: Any = 0.0
        correct: Any = 0
        for start in range(0, n, batch_size):
            xb, tb = x[start:start + batch_size], t[start:start + batch_size]
            scores = self.predict(xb)
            loss, _ = self.backend.softmax_cross_entropy(scores, tb)
            loss_sum = loss_sum + loss * xb.shape[0]
            labels = tb if tb.ndim == 1 else xp.argmax(tb, axis=1)
            correct = correct + xp.sum(xp.argmax(scores, axis=1) == labels)
        loss_value = float(loss_sum) / n
        lam = self.weight_decay_lambda
        if lam:
            for i in range(1, self.depth + 1):
                loss_value += 0.5 * lam * float(xp.sum(self.params[f"W{i}"] ** 2))
        return loss_value, int(correct) / n

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this architecture (JSON-friendly).

        ``fastnet.io`` stores it beside the weights; seed, dtype and backend
        are not part of it.
        """
        return dict(self._config)

    # -- the book's layer-by-layer path
    @property
    def lastLayer(self) -> SoftmaxWithLoss:  # noqa: N802 - the book's ch.5 spelling
        """The book's name for ``last_layer``."""
        return self.last_layer

    def _sync_layers(self) -> None:
        """Point layers at the current params (a user may rebind params['W1'])."""
        for name, layer in self.layers.items():
            if isinstance(layer, Affine):
                i = name[len("Affine"):]
                layer.W, layer.b = self.params["W" + i], self.params["b" + i]
            elif isinstance(layer, BatchNormalization):
                i = name[len("BatchNorm"):]
                layer.gamma, layer.beta = self.params["gamma" + i], self.params["beta" + i]

    def _predict_layers(self, x: Array, train_flg: bool) -> Array:
        self._sync_layers()
        for layer in self.layers.values():
            if isinstance(layer, BatchNormalization) or type(layer).__name__ == "Dropout":
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def layers_loss(self, x: Array, t: Array, train_flg: bool) -> Array:
        """The loss through the layers, as the book computes it (x and t already checked)."""
        return self.scores_loss(self._predict_layers(x, train_flg), t)

    def scores_loss(self, y: Array, t: Array) -> Array:
        """The last layer's loss of the scores `y`, plus weight decay, as the book computes it."""
        loss = self.last_layer.forward_checked(y, t)  # t checked by the caller
        lam = self.weight_decay_lambda
        if lam:
            xp = self.backend.xp
            for i in range(1, self.depth + 1):
                loss = loss + 0.5 * lam * xp.sum(self.params[f"W{i}"] ** 2)
        return loss

    def _gradient_layers(self, x: Array, t: Array) -> tuple[dict[str, Array], Array]:
        loss = self.layers_loss(x, t, True)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads: dict[str, Array] = {}
        lam = self.weight_decay_lambda
        for name, layer in self.layers.items():
            if isinstance(layer, Affine):
                i = name[len("Affine"):]
                grads["W" + i] = layer.dW + lam * layer.W if lam else layer.dW
                grads["b" + i] = layer.db
            elif isinstance(layer, BatchNormalization):
                i = name[len("BatchNorm"):]
                grads["gamma" + i], grads["beta" + i] = layer.dgamma, layer.dbeta
        return {k: grads[k] for k in self.params}, loss

    def gradient_layers(self, x: Array, t: Array) -> dict[str, Array]:
        """Backprop through the ``layers`` dict exactly as the book does (for teaching)."""
        x, t = self.checked_batch(x, t)
        return self._gradient_layers(x, t)[0]

    def __repr__(self) -> str:
        sizes = [self.input_size] + [int(self.params[f"W{i}"].shape[1]) for i in range(1, self.depth + 1)]
        return (
            f"{type(self).__name__}({'-'.join(map(str, sizes))}, activation={activations.name_of(self.activation)!r}, "
            f"dtype={self.dtype.name}, backend={self.backend.name!r})"
        )
