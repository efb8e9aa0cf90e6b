"""Convolution and max-pooling kernels: the book's im2col algorithm against ``self.xp``.

``NumpyBackend`` inherits this mixin, so every backend has a working version;
a faster backend overrides the methods it accelerates and must give the same
values. Like every kernel, these trust their inputs: the layers check shapes
and dtypes once at the boundary.
"""

from __future__ import annotations

from typing import Any

from ..patches import output_shape, reference_col2im, reference_im2col
from .loops import numerical_gradient_loop

Array = Any


class ConvOps:
    """im2col, col2im, convolution and max pooling, forward and backward."""

    xp: Any

    def im2col(self, x: Array, filter_h: int, filter_w: int, stride: int, pad: int,
               reuse: Array = None) -> Array:
        """Rows of patches; `reuse` (an old col a backend may overwrite) is ignored here."""
        return reference_im2col(self.xp, x, filter_h, filter_w, stride, pad)

    def col2im(self, col: Array, input_shape: tuple[int, ...], filter_h: int, filter_w: int,
               stride: int, pad: int) -> Array:
        return reference_col2im(self.xp, col, input_shape, filter_h, filter_w, stride, pad)

    def conv_forward(self, x: Array, W: Array, b: Array, stride: int, pad: int, col: Array = None
                     ) -> tuple[Array, Array, Array]:
        """(out, col, col_W): out (N, FN, out_h, out_w) = col @ col_W + b, reshaped.

        `col`: the layer's col of its previous forward, which a backend may
        overwrite when it fits (the book's algorithm always makes a new one).
        """
        fn, _, fh, fw = W.shape
        out_h, out_w = output_shape(x.shape, fh, fw, stride, pad)
        col = self.im2col(x, fh, fw, stride, pad)
        col_W = W.reshape(fn, -1).T
        out = self.xp.dot(col, col_W) + b
        return out.reshape(x.shape[0], out_h, out_w, -1).transpose(0, 3, 1, 2), col, col_W

    def conv_backward(self, dout: Array, x_shape: tuple[int, ...], W_shape: tuple[int, ...],
                      col: Array, col_W: Array, stride: int, pad: int, need_dx: bool = True
                      ) -> tuple[Array | None, Array, Array]:
        """(dx, dW, db); dx is skipped (None) for a net's first layer, whose dx nobody reads."""
        fn, c, fh, fw = W_shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, fn)
        db = self.xp.sum(dout, axis=0)
        dW = self.xp.dot(col.T, dout).transpose(1, 0).reshape(fn, c, fh, fw)
        if not need_dx:
            return None, dW, db
        dcol = self.xp.dot(dout, col_W.T)
        return self.col2im(dcol, x_shape, fh, fw, stride, pad), dW, db

    def conv_activation_forward(self, x: Array, W: Array, b: Array, stride: int, pad: int,
                                activation: Any, col: Array = None) -> tuple[Array, Array, Array, Array]:
        """(out, col, col_W, cache): a convolution then an activation object, as the two layers do it."""
        conv, col, col_W = self.conv_forward(x, W, b, stride, pad, col)
        out, cache = self.activation_forward(activation, conv)  # type: ignore[attr-defined]
        return out, col, col_W, cache

    def conv_activation_backward(self, dout: Array, cache: Array, activation: Any, x_shape: tuple[int, ...],
                                 W_shape: tuple[int, ...], col: Array, col_W: Array, stride: int, pad: int,
                                 need_dx: bool = True) -> tuple[Array | None, Array, Array]:
        """(dx, dW, db) through the activation, then the convolution; `dout` is left unchanged."""
        d = self.activation_backward(activation, dout.copy(), cache)  # type: ignore[attr-defined]
        return self.conv_backward(d, x_shape, W_shape, col, col_W, stride, pad, need_dx)

    def pool_forward(self, x: Array, pool_h: int, pool_w: int, stride: int, pad: int
                     ) -> tuple[Array, Array]:
        """(out, arg_max): the max of each window and where in the window it was."""
        xp = self.xp
        n, c = x.shape[0], x.shape[1]
        out_h, out_w = output_shape(x.shape, pool_h, pool_w, stride, pad)
        col = self.im2col(x, pool_h, pool_w, stride, pad).reshape(-1, pool_h * pool_w)
        arg_max = xp.argmax(col, axis=1)
        out = xp.max(col, axis=1)
        return out.reshape(n, out_h, out_w, c).transpose(0, 3, 1, 2), arg_max

    def pool_backward(self, dout: Array, arg_max: Array, x_shape: tuple[int, ...],
                      pool_h: int, pool_w: int, stride: int, pad: int) -> Array:
        """dx: each output's gradient sent back to its window's max."""
        xp = self.xp
        dout = dout.transpose(0, 2, 3, 1)
        size = pool_h * pool_w
        dmax = xp.zeros((dout.size, size), dtype=dout.dtype)
        dmax[xp.arange(arg_max.size), arg_max.flatten()] = dout.flatten()
        dcol = dmax.reshape(dout.shape[0] * dout.shape[1] * dout.shape[2], -1)
        return self.col2im(dcol, x_shape, pool_h, pool_w, stride, pad)

    def convnet_train_steps(self, net: Any, x: Array, t: Array, batches: Any, optimizer: Any) -> Any:
        """Whole training steps of `net` as one backend call: on (x, t) when `batches` is None,
        else on x[idx], t[idx] for each index array. None here: the net runs its layers."""
        return None

    def convnet_numerical_gradient(self, net: Any, x: Array, t: Array, h: float = 1e-4) -> dict[str, Array]:
        return loop_numerical_gradient(net, x, t, h)


def loop_numerical_gradient(net: Any, x: Array, t: Array, h: float = 1e-4) -> dict[str, Array]:
    """The book's loop: central differences of the net's test-mode loss, one parameter at a time."""
    def f(_: Array) -> Any:
        return net.layers_loss(x, t, False)

    return {k: numerical_gradient_loop(f, p, h) for k, p in net.params.items()}


def suffix_numerical_gradient(net: Any, x: Array, t: Array, h: float = 1e-4,
                              names: Any = None) -> dict[str, Array]:
    """The book's loop, each loss recomputed only from the step that holds the moved parameter
    (for the parameters `names`, by default all).

    A parameter cannot change what the steps before its own compute, so
    their outputs come from one forward pass; every loss is then the one the
    loop computes, with the same arithmetic, and the result is the loop's
    bit for bit. The layers must compute the same output from the same input
    and parameters every time (the test-mode loss does: no dropout).
    """
    inputs: list[Array] = []
    net.predict_from(0, x, False, keep=inputs)
    grads = {}
    for name, start in net.step_holding().items():
        if names is not None and name not in names:
            continue

        def f(_: Array, start: int = start) -> Any:
            return net.loss_from(start, inputs[start], t)

        grads[name] = numerical_gradient_loop(f, net.params[name], h)
    return {k: grads[k] for k in net.params if k in grads}


def plain_conv_net(net: Any) -> bool:
    """Whether `net` is exactly SimpleConvNet or DeepConvNet, without weight decay, ending in the
    softmax loss, with params that fit its layers (``params_fit_layers``) and every layer one of
    fastnet's own (``plain_layer``) and in one place: where each fast path's own check of a conv
    net starts. A layer of the user's own may compute anything, and a layer in two places keeps
    one state for both."""
    from ..convnets import DeepConvNet, SimpleConvNet
    from ..layers import SoftmaxWithLoss, plain_layer

    layers = list(net.layers.values())
    return (type(net) in (SimpleConvNet, DeepConvNet) and not net.weight_decay_lambda and net.params_fit_layers()
            and type(net.last_layer) is SoftmaxWithLoss and plain_layer(net.last_layer)
            and all(plain_layer(a) for a in layers) and len({id(a) for a in layers}) == len(layers))


def book_simple_convnet(net: Any, x: Array) -> bool:
    """Whether `net` has exactly the book's SimpleConvNet structure (conv - ReLU - 2x2 pool - affine
    - ReLU - affine, no weight decay) with float parameters and images `x`: what an incremental
    numerical gradient may assume. Each backend adds the array types it takes."""
    from ..activations import builtin
    from ..conv_layers import Convolution, Pooling
    from ..convnets import SimpleConvNet
    from ..layers import Activation, Affine

    if type(net) is not SimpleConvNet or not plain_conv_net(net):
        return False
    kinds = [Convolution, Activation, Pooling, Affine, Activation, Affine]
    layers = list(net.layers.values())
    if len(layers) != len(kinds) or not all(isinstance(a, k) for a, k in zip(layers, kinds)):
        return False
    if any(builtin(layers[i].activation) != "relu" for i in (1, 4)):
        return False
    pool = layers[2]
    return (pool.pool_h, pool.pool_w, pool.stride, pool.pad) == (2, 2, 2, 0) and x.dtype.kind == "f"


def conv_spec(net: Any, x: Array) -> Any:
    """`net` as a ``ConvSpec`` when it is the book's SimpleConvNet or DeepConvNet with the layers
    its constructor made (or the same kinds: blocks of convolution, built-in ReLU and optional
    2x2 pooling, then affine - ReLU - [dropout] - affine - [dropout]) on float images `x`;
    else None. What a backend that runs whole conv-net steps may assume."""
    from ..activations import builtin
    from ..conv_layers import Convolution, Pooling
    from ..layers import Activation, Affine, Dropout
    from .spec import ConvSpec

    if not plain_conv_net(net) or x.dtype.kind != "f":  # its params: the net's float dtype
        return None
    layers = list(net.layers.values())
    convs, weighted, i = [], [], 0
    while i + 1 < len(layers) and type(layers[i]) is Convolution:
        if not isinstance(layers[i + 1], Activation) or builtin(layers[i + 1].activation) != "relu":
            return None
        pool = i + 2 < len(layers) and type(layers[i + 2]) is Pooling
        if pool and (layers[i + 2].pool_h, layers[i + 2].pool_w, layers[i + 2].stride, layers[i + 2].pad) != (2, 2, 2, 0):
            return None
        convs.append((layers[i].stride, layers[i].pad, pool))
        weighted.append(layers[i])
        i += 3 if pool else 2
    rest = layers[i:]
    kinds = [Activation if isinstance(a, Activation) else type(a) for a in rest]
    if (not convs or kinds not in ([Affine, Activation, Affine], [Affine, Activation, Dropout, Affine, Dropout])
            or builtin(rest[1].activation) != "relu"):
        return None
    weighted += [a for a in rest if type(a) is Affine]
    for k, layer in enumerate(weighted, start=1):  # the layers hold the params the spec names
        if layer.W is not net.params.get(f"W{k}") or layer.b is not net.params.get(f"b{k}"):
            return None
    return ConvSpec(net.params, tuple(convs), tuple(a for a in rest if type(a) is Dropout))
