"""Nets from the book: TwoLayerNet (ch.4/ch.5) and MultiLayerNet (ch.6), on ``netbase.Net``."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy

from . import activations
from .backend import MLPSpec, NumpyBackend
from .convnets import DeepConvNet, SimpleConvNet
from .layers import Activation, Affine, BatchNormalization, Dropout, SoftmaxWithLoss
from .netbase import Net, Seed, positive_int, seed_rng

__all__ = ["Net", "TwoLayerNet", "MultiLayerNet", "ACTIVATIONS", "NETS"]

Array = Any
ACTIVATIONS = tuple(activations.ACTIVATIONS)  # the built-in names


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
            positive_int(input_size, "input_size"),
            positive_int(hidden_size, "hidden_size"),
            positive_int(output_size, "output_size"),
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
        rng = seed_rng(seed)
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
        self._remember_layers()


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
        hidden = [positive_int(h, "each hidden size") for h in hidden_size_list]
        sizes = [positive_int(input_size, "input_size"), *hidden, positive_int(output_size, "output_size")]
        self.activation = activations.get(activation)
        self.weight_decay_lambda = weight_decay_lambda  # checked (a number >= 0), kept as a float
        if not isinstance(dropout_ration, (int, float)) or not 0 <= dropout_ration < 1:
            raise ValueError(f"dropout_ration must be in [0, 1), got {dropout_ration!r}")
        self.hidden_size_list = hidden
        self.hidden_layer_num = len(hidden)
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

        rng = seed_rng(seed)
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
        self._remember_layers()

    def spec(self) -> MLPSpec | None:
        if self.use_dropout or self.use_batchnorm:
            return None  # the backend's whole-net kernels have no dropout/batch norm
        return super().spec()


#: Net classes by name, for rebuilding a saved net (fastnet.io) and the CLI.
NETS: dict[str, type[Net]] = {
    "TwoLayerNet": TwoLayerNet,
    "MultiLayerNet": MultiLayerNet,
    "SimpleConvNet": SimpleConvNet,
    "DeepConvNet": DeepConvNet,
}
