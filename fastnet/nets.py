"""Nets from the book: TwoLayerNet (ch.4/ch.5) and MultiLayerNet (ch.6), on a shared base.

A net keeps the book's structure (a ``params`` dict of live arrays, a
``layers`` dict, a ``last_layer``) and hands whole-net work (predict, loss,
backprop, numerical gradient, a training step) to its backend as one
``MLPSpec``, so a backend can fuse it. Nets whose layers cannot be described
that way (dropout, batch norm) run layer by layer, as in the book.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy

from . import activations
from ._checks import targets
from .backend import MLPSpec, NumpyBackend, lookup
from .errors import BackendMismatchError
from .layers import Activation, Affine, BatchNormalization, Dropout, SoftmaxWithLoss

__all__ = ["Net", "TwoLayerNet", "MultiLayerNet", "ACTIVATIONS", "NETS"]

Array = Any
ACTIVATIONS = tuple(activations.ACTIVATIONS)  # the built-in names
Seed = int | numpy.random.Generator | None


def _rng(seed: Seed) -> numpy.random.Generator:
    if isinstance(seed, numpy.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, numpy.integer)) or seed < 0):
        raise ValueError(f"seed must be an integer >= 0, a numpy.random.Generator or None, got {seed!r}")
    return numpy.random.default_rng(seed)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Net:
    """What every fastnet net shares; subclasses fill params and layers."""

    params: dict[str, Array]
    layers: "OrderedDict[str, Any]"
    last_layer: SoftmaxWithLoss
    activation: Any = activations.RELU
    weight_decay_lambda: float = 0.0
    _config: dict[str, Any]

    def __init__(self, *, dtype: Any, backend: NumpyBackend | str | None) -> None:
        self.backend = lookup(backend)
        self.dtype = numpy.dtype(self.backend.default_dtype if dtype is None else dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"dtype must be a floating-point type, got {self.dtype}")

    # -- what the backend sees
    def spec(self) -> MLPSpec | None:
        """The net as an MLPSpec, or None when it has layers a spec cannot hold."""
        # kept while nothing it holds changed: a GPU step costs little more than this call
        memo = self.__dict__.get("_spec_memo")
        depth = self.depth
        if (memo is None or memo.params is not self.params or memo.depth != depth
                or memo.activation is not self.activation or memo.weight_decay != self.weight_decay_lambda):
            memo = self._spec_memo = MLPSpec(self.params, depth, self.activation, self.weight_decay_lambda)
        return memo

    @property
    def depth(self) -> int:
        """Number of affine layers."""
        memo = self.__dict__.get("_depth_memo")
        keys = self.params.keys()
        if memo is None or memo[0] is not self.params or memo[1] != len(keys):
            memo = self._depth_memo = (self.params, len(keys), sum(1 for name in keys if name.startswith("W")))
        return memo[2]

    @property
    def input_size(self) -> int:
        return int(self.params["W1"].shape[0])

    @property
    def output_size(self) -> int:
        return int(self.params[f"W{self.depth}"].shape[1])  # read each call: W may be rebound

    # -- checks at the boundary (once per call, never inside kernels)
    def _x(self, x: Array, name: str = "x") -> Array:
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

    def _xt(
        self, x: Array, t: Array, x_name: str = "x", t_name: str = "t", *, once: bool = False
    ) -> tuple[Array, Array]:
        x = self._x(x, x_name)
        t = targets(self.backend, t, x.shape[0], self.output_size, t_name, x_name, once=once)
        if t.ndim == 2 and t.dtype != self.dtype:
            t = t.astype(self.dtype)
        return x, t

    def _optimizer(self, optimizer: Any) -> None:
        """Bind a fresh optimizer to this net's backend; refuse one bound to another device."""
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
        x, t = self._xt(x, t)
        spec = self.spec()
        if spec is not None:
            return self.backend.mlp_loss(spec, x, t)
        return self._loss_layers(x, t, train_flg)

    def accuracy(self, x: Array, t: Array) -> float:
        """Fraction of samples whose highest score is the true class."""
        x, t = self._xt(x, t)
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
        x, t = self._xt(x, t)
        spec = self.spec()
        if spec is not None:
            return self.backend.mlp_gradient(spec, x, t)
        return self._gradient_layers(x, t)

    def numerical_gradient(self, x: Array, t: Array, h: float = 1e-4) -> dict[str, Array]:
        """Central-difference gradients of ``loss``, one parameter at a time."""
        x, t = self._xt(x, t)
        spec = self.spec()
        if spec is not None:
            return self.backend.mlp_numerical_gradient(spec, x, t, h)
        from .gradient import numerical_gradient_loop

        def f(_: Array) -> Any:
            return self._loss_layers(x, t, True)

        return {k: numerical_gradient_loop(f, p, h) for k, p in self.params.items()}

    def train_step(self, x: Array, t: Array, optimizer: Any) -> Array:
        """Backprop and ``optimizer.update`` in one call; returns the loss.

        The loss stays a backend scalar (on a GPU, no device sync happens).
        """
        x, t = self._xt(x, t)
        self._optimizer(optimizer)
        spec = self.spec()
        if spec is not None:
            return self.backend.mlp_train_step(spec, x, t, optimizer)
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
        x, t = self._xt(x, t)
        self._optimizer(optimizer)
        spec = self.spec()
        if spec is not None:
            return self.backend.mlp_train_batches(spec, x, t, batches, optimizer)
        losses = []
        for idx in batches:
            grads, loss = self._gradient_layers(x[idx], t[idx])
            optimizer.update(self.params, grads)
            losses.append(loss)
        return losses

    def evaluate(self, x: Array, t: Array, batch_size: int = 10000) -> tuple[float, float]:
        """(loss, accuracy) on a data set in test mode, `batch_size` samples at a time.

        Test mode: dropout off and batch norm on its running averages. The
        loss includes the weight-decay term, like ``loss``. One device sync.
        """
        x, t = self._xt(x, t)
        batch_size = _positive_int(batch_size, "batch_size")
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

    def _loss_layers(self, x: Array, t: Array, train_flg: bool) -> Array:
        loss = self.last_layer._forward(self._predict_layers(x, train_flg), t)  # t checked by the caller
        lam = self.weight_decay_lambda
        if lam:
            xp = self.backend.xp
            for i in range(1, self.depth + 1):
                loss = loss + 0.5 * lam * xp.sum(self.params[f"W{i}"] ** 2)
        return loss

    def _gradient_layers(self, x: Array, t: Array) -> tuple[dict[str, Array], Array]:
        loss = self._loss_layers(x, t, True)
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
        x, t = self._xt(x, t)
        return self._gradient_layers(x, t)[0]

    def __repr__(self) -> str:
        sizes = [self.input_size] + [int(self.params[f"W{i}"].shape[1]) for i in range(1, self.depth + 1)]
        return (
            f"{type(self).__name__}({'-'.join(map(str, sizes))}, activation={self.activation!r}, "
            f"dtype={self.dtype.name}, backend={self.backend.name!r})"
        )


def _activation_layer(activation: Any, backend: NumpyBackend) -> Any:
    return Activation(activation, backend=backend)


def _layer_name(activation: Any) -> str:
    return activations.name_of(activation).capitalize()


class TwoLayerNet(Net):
    """input -> Affine -> activation -> Affine -> softmax, the book's ch.4/ch.5 net.

    ``activation="relu"`` is the ch.5 net (the default), ``"sigmoid"`` the ch.4
    one. Weights are drawn on the host from ``numpy.random.default_rng(seed)``
    (std ``weight_init_std``) and then moved to the backend, so one seed gives
    the same starting net on every backend; biases start at zero.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        weight_init_std: float = 0.01,
        activation: str = "relu",
        *,
        seed: Seed = None,
        dtype: Any = None,
        backend: NumpyBackend | str | None = None,
    ) -> None:
        super().__init__(dtype=dtype, backend=backend)
        sizes = (
            _positive_int(input_size, "input_size"),
            _positive_int(hidden_size, "hidden_size"),
            _positive_int(output_size, "output_size"),
        )
        self.activation = activations.get(activation)
        if isinstance(weight_init_std, str):
            raise TypeError(
                f"weight_init_std of TwoLayerNet is a number (the book uses 0.01), got {weight_init_std!r}; "
                f"MultiLayerNet takes 'relu'/'he' and 'sigmoid'/'xavier'"
            )
        weight_init_std = _init_scale(weight_init_std, sizes[0])  # a number >= 0
        self._config = {
            "input_size": sizes[0],
            "hidden_size": sizes[1],
            "output_size": sizes[2],
            "activation": activations.name_of(self.activation),
        }
        rng = _rng(seed)
        to = self.backend.asarray
        self.params = {}
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), start=1):
            self.params[f"W{i}"] = to(weight_init_std * rng.standard_normal((n_in, n_out)), self.dtype)
            self.params[f"b{i}"] = to(numpy.zeros(n_out), self.dtype)
        bk = self.backend
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"], backend=bk)
        self.layers[_layer_name(self.activation) + "1"] = _activation_layer(self.activation, bk)
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"], backend=bk)
        self.last_layer = SoftmaxWithLoss(backend=bk)


def _init_scale(weight_init_std: Any, n_in: int) -> float:
    """The book's rule: "relu"/"he" -> sqrt(2/n_in), "sigmoid"/"xavier" -> sqrt(1/n_in)."""
    if isinstance(weight_init_std, str):
        name = weight_init_std.lower()
        if name in ("relu", "he"):
            return float(numpy.sqrt(2.0 / n_in))
        if name in ("sigmoid", "xavier"):
            return float(numpy.sqrt(1.0 / n_in))
    elif isinstance(weight_init_std, (int, float, numpy.floating, numpy.integer)) and not isinstance(
        weight_init_std, bool
    ):
        if numpy.isfinite(weight_init_std) and weight_init_std >= 0:
            return float(weight_init_std)
    raise ValueError(
        "weight_init_std must be 'relu'/'he', 'sigmoid'/'xavier' or a number >= 0, "
        f"got {weight_init_std!r}"
    )


class MultiLayerNet(Net):
    """A fully connected net of any depth, the book's ch.6 MultiLayerNet(Extend).

    Layers, in the book's names: ``Affine1``, [``BatchNorm1``],
    ``Activation_function1``, [``Dropout1``], ..., ``Affine{n}``, then
    ``last_layer`` (softmax with loss). Parameters ``W1, b1, ..., Wn, bn``
    and, with batch norm, ``gamma1, beta1, ...`` (one pair per hidden layer).

    ``weight_init_std`` is "relu"/"he" (std sqrt(2/n_in)), "sigmoid"/"xavier"
    (sqrt(1/n_in)) or a number. Weights are drawn on the host from
    ``numpy.random.default_rng(seed)``, so one seed gives the same net on every
    backend; dropout masks are seeded from the same generator.

    Without dropout and batch norm the backend runs the net whole (``spec()``);
    with either, it runs layer by layer as in the book. Dropout makes every
    training-mode forward pass random, so a gradient check needs fixed masks.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size_list: list[int] | tuple[int, ...],
        output_size: int,
        activation: str = "relu",
        weight_init_std: str | float = "relu",
        weight_decay_lambda: float = 0,
        use_dropout: bool = False,
        dropout_ration: float = 0.5,
        use_batchnorm: bool = False,
        *,
        seed: Seed = None,
        dtype: Any = None,
        backend: NumpyBackend | str | None = None,
    ) -> None:
        super().__init__(dtype=dtype, backend=backend)
        if isinstance(hidden_size_list, (int, str)) or not hasattr(hidden_size_list, "__iter__"):
            raise ValueError(
                f"hidden_size_list must be a list of layer sizes, e.g. [100, 100], got {hidden_size_list!r}"
            )
        hidden = [_positive_int(h, "each hidden size") for h in hidden_size_list]
        sizes = [_positive_int(input_size, "input_size"), *hidden, _positive_int(output_size, "output_size")]
        self.activation = activations.get(activation)
        lam = weight_decay_lambda
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not numpy.isfinite(lam) or lam < 0:
            raise ValueError(f"weight_decay_lambda must be a number >= 0, got {lam!r}")
        if not isinstance(dropout_ration, (int, float)) or not 0 <= dropout_ration < 1:
            raise ValueError(f"dropout_ration must be in [0, 1), got {dropout_ration!r}")
        self.hidden_size_list = hidden
        self.hidden_layer_num = len(hidden)
        self.weight_decay_lambda = float(lam)
        self.use_dropout, self.use_batchnorm = bool(use_dropout), bool(use_batchnorm)
        self.dropout_ration = float(dropout_ration)
        self._config = {
            "input_size": sizes[0],
            "hidden_size_list": hidden,
            "output_size": sizes[-1],
            "activation": activations.name_of(self.activation),
            "weight_decay_lambda": self.weight_decay_lambda,
            "use_dropout": self.use_dropout,
            "dropout_ration": self.dropout_ration,
            "use_batchnorm": self.use_batchnorm,
        }

        rng = _rng(seed)
        to, dt, bk = self.backend.asarray, self.dtype, self.backend
        self.params = {}
        for i in range(1, len(sizes)):
            scale = _init_scale(weight_init_std, sizes[i - 1])
            self.params[f"W{i}"] = to(scale * rng.standard_normal((sizes[i - 1], sizes[i])), dt)
            self.params[f"b{i}"] = to(numpy.zeros(sizes[i]), dt)

        self.layers = OrderedDict()
        for i in range(1, self.hidden_layer_num + 1):
            self.layers[f"Affine{i}"] = Affine(self.params[f"W{i}"], self.params[f"b{i}"], backend=bk)
            if self.use_batchnorm:
                self.params[f"gamma{i}"] = to(numpy.ones(sizes[i]), dt)
                self.params[f"beta{i}"] = to(numpy.zeros(sizes[i]), dt)
                self.layers[f"BatchNorm{i}"] = BatchNormalization(
                    self.params[f"gamma{i}"], self.params[f"beta{i}"], backend=bk
                )
            self.layers[f"Activation_function{i}"] = _activation_layer(self.activation, bk)
            if self.use_dropout:
                # each mask stream gets its own seed from the net's generator
                self.layers[f"Dropout{i}"] = Dropout(
                    self.dropout_ration, seed=int(rng.integers(2**63)), backend=bk
                )
        last = self.hidden_layer_num + 1
        self.layers[f"Affine{last}"] = Affine(self.params[f"W{last}"], self.params[f"b{last}"], backend=bk)
        self.last_layer = SoftmaxWithLoss(backend=bk)

    def spec(self) -> MLPSpec | None:
        if self.use_dropout or self.use_batchnorm:
            return None  # the backend's whole-net kernels have no dropout/batch norm
        return super().spec()


#: Net classes by name, for rebuilding a saved net (fastnet.io) and the CLI.
NETS: dict[str, type[Net]] = {"TwoLayerNet": TwoLayerNet, "MultiLayerNet": MultiLayerNet}

from .convnets import DeepConvNet, SimpleConvNet  # noqa: E402

NETS.update(SimpleConvNet=SimpleConvNet, DeepConvNet=DeepConvNet)
