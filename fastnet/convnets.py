"""The book's convolutional nets: SimpleConvNet (ch.7) and DeepConvNet (ch.8).

Both keep the book's ``params``, ``layers`` and ``last_layer`` and run layer
by layer on their backend's convolution and pooling kernels. Inputs are
batches of images (N, C, H, W); flat rows (N, C*H*W) are reshaped to the
net's ``input_dim``. Weights are drawn on the host from
``numpy.random.default_rng(seed)`` and then moved to the backend, so one seed
gives the same starting net on every backend.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy

from .backend import NumpyBackend
from .backend.conv_ops import loop_numerical_gradient
from .backend.spec import overlapping
from .checks import all_finite, real, writable_params
from .conv_layers import Convolution, Pooling
from .conv_config import SIMPLE_CONV, conv_param_of, deep_shapes, input_dim_of, simple_shapes
from .layers import Activation, Affine, Dropout, Relu, SoftmaxWithLoss, plain_layer
from .netbase import Net, Seed, positive_int, seed_rng
from .patches import output_shape

__all__ = ["ConvNet", "DeepConvNet", "SimpleConvNet"]

Array = Any
PathLike = str | os.PathLike


class ConvNet(Net):
    """What the conv nets share: image inputs, layer-by-layer work, the book's accuracy."""

    input_dim: tuple[int, int, int]
    _owners: dict[str, str]  # layer name -> the number of its W/b in params
    EVAL_BATCH = 100  # evaluate's default: im2col needs memory in proportion to the batch

    def spec(self) -> None:
        return None  # convolution layers: the backend runs the net layer by layer

    def whole_steps(self, x: Array, t: Array, batches: Any, optimizer: Any) -> Any:
        self._sync_layers()  # the backend may check that the layers hold these params
        return self.backend.convnet_train_steps(self, x, t, batches, optimizer)

    @property
    def input_size(self) -> int:
        c, h, w = self.input_dim
        return c * h * w

    def _x(self, x: Array, name: str = "x", *, train: bool = False) -> Array:
        if train:
            writable_params(self.params)
        if (type(x) is self.backend.xp.ndarray and x.dtype == self.dtype and x.ndim == 4
                and x.shape[0] and tuple(x.shape[1:]) == self.input_dim):
            return x
        x = self.backend.check(x, name)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        shape = tuple(x.shape)
        c, h, w = self.input_dim
        if x.ndim == 2 and shape[1] == c * h * w:
            x = x.reshape(shape[0], c, h, w)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_dim:
            raise ValueError(
                f"{name} must be a batch of images of shape (N, {c}, {h}, {w}) (or flat rows (N, {c * h * w})), "
                f"got shape {shape}: the net was built with input_dim={self.input_dim}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch (0 samples, shape {shape})")
        return x.astype(self.dtype, copy=False)

    def accuracy(self, x: Array, t: Array, batch_size: int = 100) -> float:
        """Fraction of samples whose highest score is the true class, `batch_size` at a time (test mode)."""
        x, t = self.checked_batch(x, t)
        batch_size = positive_int(batch_size, "batch_size")
        xp = self.backend.xp
        if t.ndim != 1:
            t = xp.argmax(t, axis=1)
        correct: Any = 0
        for start in range(0, x.shape[0], batch_size):
            y = self._predict_layers(x[start:start + batch_size], False)
            correct = correct + xp.sum(xp.argmax(y, axis=1) == t[start:start + batch_size])
        return int(correct) / x.shape[0]

    def numerical_gradient(self, x: Array, t: Array, h: float = 1e-4) -> dict[str, Array]:
        """Central differences of the test-mode loss, one parameter at a time (the book's loop).

        Test mode keeps the loss a fixed function (dropout off), so the
        differences mean something.
        """
        h = real(h, "h", positive=True)
        x, t = self.checked_batch(x, t)
        writable_params(self.params, "numerical_gradient moves each parameter in place")
        with self._numgrad_lock:
            self._sync_layers()
            if not (self.params_fit_layers() and all_finite(self.backend, [x, *self.params.values()])):
                return loop_numerical_gradient(self, x, t, h)  # what the fast kernels cannot assume
            return self.backend.convnet_numerical_gradient(self, x, t, h)

    def save_params(self, file_name: PathLike = "params.pkl") -> Path:
        """The book's method: write the parameters to `file_name` (that exact name).

        The file is fastnet's verified ``.npz`` archive, never a pickle,
        whatever its name says; ``load_params`` reads it back.
        """
        from .io import save_params

        return save_params(file_name, self)

    def load_params(self, file_name: PathLike = "params.pkl") -> "ConvNet":
        """The book's method: read parameters written by ``save_params`` into this net.

        A real pickle (such as the book's pretrained ``deep_convnet_params.pkl``)
        is refused with an error that says so: loading one could run any code.
        """
        from .io import load_params

        return load_params(file_name, self)

    def _sync_layers(self) -> None:
        for name, i in self._owners.items():
            layer = self.layers[name]
            layer.W, layer.b = self.params["W" + i], self.params["b" + i]

    def steps(self) -> list[tuple[Any, ...]]:
        """The layers in order, a convolution and the activation after it as one step.

        The backend runs such a pair as one call (``conv_activation_forward``),
        which a backend may fuse; both layers keep the state the book's do.
        """
        layers, steps, i = list(self.layers.values()), [], 0
        while i < len(layers):
            if (isinstance(layers[i], Convolution) and i + 1 < len(layers) and isinstance(layers[i + 1], Activation)
                    and plain_layer(layers[i]) and plain_layer(layers[i + 1])):  # else each its own forward
                steps.append((layers[i], layers[i + 1]))
                i += 2
            else:
                steps.append((layers[i],))
                i += 1
        return steps

    def _predict_layers(self, x: Array, train_flg: bool) -> Array:
        return self.predict_from(0, x, train_flg)

    def predict_from(self, start: int, x: Array, train_flg: bool, keep: list[Array] | None = None) -> Array:
        """The scores, `x` being the input of step `start` (steps as ``step_holding`` counts them).

        `keep`, a list, receives a copy of the input of every step run: the
        layers may reuse their output buffers on the next call.
        """
        self._sync_layers()
        steps = self.steps()
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= len(steps):
            raise ValueError(f"start must be a step number from 0 to {len(steps)}, got {start!r}")
        for step in steps[start:]:
            if keep is not None:
                keep.append(x.copy())
            layer = step[0]
            if len(step) == 2:
                act = step[1]
                out, layer.col, layer.col_W, act.cache = self.backend.conv_activation_forward(
                    x, layer.W, layer.b, layer.stride, layer.pad, act.activation, layer.col)
                layer.x, layer.out_shape, act.out = x, tuple(out.shape), out
                x = out
            elif isinstance(layer, Dropout):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def step_holding(self) -> dict[str, int]:
        """For each parameter name, the step (a layer, or a convolution with its activation)
        that holds it: a change of that parameter changes nothing before that step."""
        index: dict[int, int] = {}
        for k, step in enumerate(self.steps()):
            index.setdefault(id(step[0]), k)  # a layer used twice: from its first use
        return {p + i: index[id(self.layers[name])] for name, i in self._owners.items() for p in ("W", "b")}

    def loss_from(self, start: int, x: Array, t: Array) -> Array:
        """The test-mode loss, `x` being the input of step `start`: from step 0 it is
        ``layers_loss(x, t, False)``, the same arithmetic in the same order."""
        return self.scores_loss(self.predict_from(start, x, False), t)

    def _gradient_layers(self, x: Array, t: Array) -> tuple[dict[str, Array], Array]:
        loss = self.layers_loss(x, t, True)
        dout = self.last_layer.backward(1)
        steps = self.steps()
        for k in reversed(range(len(steps))):
            layer = steps[k][0]
            if len(steps[k]) == 2:  # k == 0: nobody reads the gradient of the images
                dout, layer.dW, layer.db = self.backend.conv_activation_backward(
                    dout, steps[k][1].cache, steps[k][1].activation, tuple(layer.x.shape), tuple(layer.W.shape),
                    layer.col, layer.col_W, layer.stride, layer.pad, k > 0)
            elif k == 0 and isinstance(layer, Convolution):
                layer.backward_checked(dout, need_dx=False)
            else:
                dout = layer.backward(dout)
        grads: dict[str, Array] = {}
        for name, i in self._owners.items():
            layer = self.layers[name]
            grads["W" + i], grads["b" + i] = layer.dW, layer.db
        return {k: grads[k] for k in self.params}, loss

    def _add(self, name: str, layer: Any, owner: str | None = None) -> None:
        self.layers[name] = layer
        if owner is not None:
            self._owners[name] = owner

    def params_fit_layers(self) -> bool:
        """Whether ``params`` holds just the arrays of its layers (W1, b1, ... and nothing else), of the
        net's dtype, C-contiguous, none sharing memory with another, and shaped as the layers chain
        them from ``input_dim``. What fast paths assume; the layers themselves take anything."""
        params, bk = self.params, self.backend
        if params.keys() != {p + i for i in self._owners.values() for p in "Wb"}:
            return False
        if not all(bk.owns(p) and p.dtype == self.dtype and p.flags.c_contiguous for p in params.values()):
            return False
        if overlapping(list(params.values()), bk.address):
            return False
        shape = (1, *self.input_dim)
        for name, layer in self.layers.items():
            owner = self._owners.get(name)
            W, b = (params["W" + owner], params["b" + owner]) if owner is not None else (None, None)
            try:
                if isinstance(layer, Convolution):
                    if W.ndim != 4 or W.shape[1] != shape[1] or b.shape != (W.shape[0],):
                        return False
                    shape = (1, W.shape[0], *output_shape(shape, W.shape[2], W.shape[3], layer.stride, layer.pad))
                elif isinstance(layer, Pooling):
                    shape = (1, shape[1], *output_shape(shape, layer.pool_h, layer.pool_w, layer.stride, layer.pad))
                elif isinstance(layer, Affine):
                    if W.ndim != 2 or W.shape[0] != math.prod(shape[1:]) or b.shape != (W.shape[1],):
                        return False
                    shape = (1, W.shape[1])
            except ValueError:  # a window larger than its input
                return False
        return True

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.params.items() if k.startswith("W"))
        return (f"{type(self).__name__}(input_dim={self.input_dim}, {shapes}, "
                f"dtype={self.dtype.name}, backend={self.backend.name!r})")


class SimpleConvNet(ConvNet):
    """conv - relu - pool - affine - relu - affine - softmax (the book's ch.7 net).

    Layers ``Conv1, Relu1, Pool1, Affine1, Relu2, Affine2``; parameters
    ``W1, b1`` (filters), ``W2, b2``, ``W3, b3``; weights drawn with std
    ``weight_init_std``, biases zero. The pool is 2x2 with stride 2.
    """

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (1, 28, 28),
        conv_param: dict[str, int] | None = None,
        hidden_size: int = 100,
        output_size: int = 10,
        weight_init_std: float = 0.01,
        *,
        seed: Seed = None,
        dtype: Any = None,
        backend: NumpyBackend | str | None = None,
    ) -> None:
        super().__init__(dtype=dtype, backend=backend)
        self.input_dim = input_dim_of(input_dim)
        conv = conv_param_of(SIMPLE_CONV if conv_param is None else conv_param, "conv_param", SIMPLE_CONV)
        hidden = positive_int(hidden_size, "hidden_size")
        out = positive_int(output_size, "output_size")
        std = weight_init_std
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not numpy.isfinite(std) or std < 0:
            raise ValueError(f"weight_init_std must be a number >= 0 (the book uses 0.01), got {std!r}")
        self._config = {"input_dim": list(self.input_dim), "conv_param": conv, "hidden_size": hidden,
                        "output_size": out, "weight_init_std": float(std)}

        rng = seed_rng(seed)
        to, dt, bk = self.backend.asarray, self.dtype, self.backend
        shapes = simple_shapes(self.input_dim, conv, hidden, out)
        self.params = {}
        for i, shape in enumerate(shapes, start=1):
            self.params[f"W{i}"] = to(std * rng.standard_normal(shape), dt)
            self.params[f"b{i}"] = to(numpy.zeros(shape[0] if i == 1 else shape[1]), dt)
        p = self.params
        self.layers, self._owners = OrderedDict(), {}
        self._add("Conv1", Convolution(p["W1"], p["b1"], conv["stride"], conv["pad"], backend=bk), "1")
        self._add("Relu1", Relu(backend=bk))
        self._add("Pool1", Pooling(2, 2, stride=2, backend=bk))
        self._add("Affine1", Affine(p["W2"], p["b2"], backend=bk), "2")
        self._add("Relu2", Relu(backend=bk))
        self._add("Affine2", Affine(p["W3"], p["b3"], backend=bk), "3")
        self.last_layer = SoftmaxWithLoss(backend=bk)


class DeepConvNet(ConvNet):
    """The book's ch.8 net: three blocks of conv-relu-conv-relu-pool, then
    affine - relu - dropout - affine - dropout - softmax.

    Parameters ``W1..W6`` (filters), ``W7, W8`` (dense) with their biases;
    weights He-initialised (std sqrt(2 / inputs of each unit)), biases zero.
    Dropout (ratio 0.5) is active in ``loss``, ``gradient`` and training,
    off in ``predict``, ``accuracy`` and ``evaluate``; its masks are seeded
    from the net's generator.
    """

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (1, 28, 28),
        conv_param_1: dict[str, int] | None = None,
        conv_param_2: dict[str, int] | None = None,
        conv_param_3: dict[str, int] | None = None,
        conv_param_4: dict[str, int] | None = None,
        conv_param_5: dict[str, int] | None = None,
        conv_param_6: dict[str, int] | None = None,
        hidden_size: int = 50,
        output_size: int = 10,
        *,
        seed: Seed = None,
        dtype: Any = None,
        backend: NumpyBackend | str | None = None,
    ) -> None:
        super().__init__(dtype=dtype, backend=backend)
        self.input_dim = input_dim_of(input_dim)
        defaults = [(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)]  # (filter_num, pad)
        given = [conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6]
        convs = []
        for i, (value, (fn, pad)) in enumerate(zip(given, defaults), start=1):
            default = {"filter_num": fn, "filter_size": 3, "pad": pad, "stride": 1}
            convs.append(conv_param_of(default if value is None else value, f"conv_param_{i}", default))
        hidden = positive_int(hidden_size, "hidden_size")
        out = positive_int(output_size, "output_size")
        self._config = {"input_dim": list(self.input_dim),
                        **{f"conv_param_{i}": cp for i, cp in enumerate(convs, start=1)},
                        "hidden_size": hidden, "output_size": out}

        rng = seed_rng(seed)
        to, dt, bk = self.backend.asarray, self.dtype, self.backend
        self.params = {}
        self.layers, self._owners = OrderedDict(), {}
        shapes = deep_shapes(self.input_dim, convs, hidden, out)
        for i, cp in enumerate(convs, start=1):
            fn, c, fs, _ = shapes[i - 1]
            scale = numpy.sqrt(2.0 / (c * fs * fs))
            self.params[f"W{i}"] = to(scale * rng.standard_normal((fn, c, fs, fs)), dt)
            self.params[f"b{i}"] = to(numpy.zeros(fn), dt)
            self._add(f"Conv{i}", Convolution(self.params[f"W{i}"], self.params[f"b{i}"], cp["stride"],
                                              cp["pad"], backend=bk), str(i))
            self._add(f"Relu{i}", Relu(backend=bk))
            if i % 2 == 0:
                self._add(f"Pool{i // 2}", Pooling(2, 2, stride=2, backend=bk))
        for i in (7, 8):
            n_in, n_out = shapes[i - 1]
            scale = numpy.sqrt(2.0 / n_in)
            self.params[f"W{i}"] = to(scale * rng.standard_normal((n_in, n_out)), dt)
            self.params[f"b{i}"] = to(numpy.zeros(n_out), dt)
        p = self.params
        self._add("Affine1", Affine(p["W7"], p["b7"], backend=bk), "7")
        self._add("Relu7", Relu(backend=bk))
        self._add("Dropout1", Dropout(0.5, seed=int(rng.integers(2**63)), backend=bk))
        self._add("Affine2", Affine(p["W8"], p["b8"], backend=bk), "8")
        self._add("Dropout2", Dropout(0.5, seed=int(rng.integers(2**63)), backend=bk))
        self.last_layer = SoftmaxWithLoss(backend=bk)

    def loss(self, x: Array, t: Array, train_flg: bool = True) -> Array:
        """Cross-entropy loss on a batch, with dropout on as in the book (``train_flg=False``: off)."""
        return super().loss(x, t, train_flg)
