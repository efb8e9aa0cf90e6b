"""Numerical gradient of a conv net's filters, recomputing one output channel per perturbation.

A filter weight (or bias) of a convolution moves one channel of that
convolution's output, and the layers after it that work channel by channel
(built-in activations, pooling, test-mode dropout) keep the change in that
channel. So each f(p +- h) is computed as:

1. that channel's pre-activation: the base one plus the weight's change
   times its input column (the convolution is linear in each weight);
2. the channel-by-channel layers on that channel alone;
3. the next convolution (or affine layer) as its base output plus its
   response to the changed channel alone;
4. the rest of the net as it runs, many perturbations as one batch.

Each loss is the loss of the whole perturbed net within rounding, not the
book's loop bit for bit, so only float64 nets take this path; any other
parameter, or a net whose layers this does not know, runs
``suffix_numerical_gradient`` (the loop's bits).
"""

from __future__ import annotations

from typing import Any

from ..patches import output_shape
from .conv_ops import plain_conv_net, suffix_numerical_gradient

Array = Any
LANE_ELEMENTS = 1 << 20  # values per batch of perturbations in the widest later array (8 MB in float64)


def channel_numerical_gradient(net: Any, x: Array, t: Array, h: float = 1e-4) -> dict[str, Array]:
    """The numerical gradient of `net` (a SimpleConvNet or DeepConvNet) at (x, t), test mode."""
    steps = net.steps()
    holding = net.step_holding()
    fast = {name: k for name, k in holding.items() if _channel_param(net, steps, k, name, x)}
    grads = suffix_numerical_gradient(net, x, t, h, names=[k for k in net.params if k not in fast])
    if fast:
        inputs: list[Array] = []
        net.predict_from(0, x, False, keep=inputs)
        for name, k in fast.items():
            plus, minus = _filter_losses(net, steps, inputs, k, name[0] == "W", t, h)
            grads[name] = ((plus - minus) / (2 * h)).astype(net.params[name].dtype)
    return {k: grads[k] for k in net.params}


def filter_losses(net: Any, x: Array, t: Array, h: float, name: str, filters: Any = None
                  ) -> tuple[Array, Array] | None:
    """(f(p + h), f(p - h)) for every entry of parameter `name` (checked x and t) in the output
    channels `filters` (default all), as ``channel_numerical_gradient`` computes them; None where
    it would run the loop instead."""
    inputs: list[Array] = []
    net.predict_from(0, x, False, keep=inputs)  # also points the layers at the current params
    steps = net.steps()
    k = net.step_holding()[name]
    if not _channel_param(net, steps, k, name, x):
        return None
    return _filter_losses(net, steps, inputs, k, name[0] == "W", t, h, filters)


def _known_layers(net: Any) -> bool:
    from ..activations import builtin
    from ..conv_layers import Convolution, Pooling
    from ..layers import Activation, Affine, Dropout, Relu, Sigmoid, Tanh

    if not plain_conv_net(net):
        return False  # a layer of the user's own may mix channels; weight decay depends on the moved weight
    for layer in net.layers.values():  # (params_fit_layers: no weight array in two places)
        if type(layer) not in (Activation, Relu, Sigmoid, Tanh, Convolution, Pooling, Affine, Dropout):
            return False  # batch norm mixes the batch
        if isinstance(layer, Activation) and builtin(layer.activation) is None:
            return False  # an activation of the user's own may mix channels
    return True


def _channel_param(net: Any, steps: list[tuple[Any, ...]], k: int, name: str, x: Array) -> bool:
    from ..conv_layers import Convolution

    step = steps[k]
    if not (len(step) >= 2 and isinstance(step[0], Convolution) and net.dtype.name == "float64"
            and x.dtype.name == "float64" and _known_layers(net)):
        return False
    if _next_mixing(steps, k) >= len(steps):
        return False  # nothing after the channel-by-channel layers: not a net this was written for
    return net.params[name] is (step[0].W if name[0] == "W" else step[0].b)


def _next_mixing(steps: list[tuple[Any, ...]], k: int) -> int:
    """The first step after k that mixes channels."""
    j = k + 1
    while j < len(steps) and _channel_wise(steps[j]):
        j += 1
    return j


def _channel_wise(step: tuple[Any, ...]) -> bool:
    from ..conv_layers import Pooling
    from ..layers import Activation, Dropout

    return len(step) == 1 and isinstance(step[0], (Activation, Pooling, Dropout))


def _lanes_per_batch(steps: list[tuple[Any, ...]], inputs: list[Array], start: int) -> int:
    """Perturbations per batch: about LANE_ELEMENTS values in the widest array the later steps
    make (an input, or a convolution's im2col rows). Small enough to stay in cache; the nets
    whose later layers are light get wide batches, which saves Python calls. DeepConvNet's
    filters at B=10 on one core: 96 s at 2^20 against 136 s at 2^24 (estimated from two
    filters per array; ``benchmarks/bench_conv.py -k numgrad_deep`` times the whole call)."""
    from ..conv_layers import Convolution

    widest = 1
    for j in range(start, len(steps)):
        widest = max(widest, inputs[j][0].size)
        layer = steps[j][0]
        if isinstance(layer, Convolution):
            _, c, fh, fw = layer.W.shape
            oh, ow = output_shape(inputs[j].shape, fh, fw, layer.stride, layer.pad)
            widest = max(widest, oh * ow * c * fh * fw)
    return max(1, LANE_ELEMENTS // (inputs[0].shape[0] * widest))


def _filter_losses(net: Any, steps: list[tuple[Any, ...]], inputs: list[Array], k: int, is_w: bool,
                   t: Array, h: float, filters: Any = None) -> tuple[Array, Array]:
    """(f(p + h), f(p - h)) for step k's filters (`is_w`) or biases, one output channel at a time."""
    xp = net.backend.xp
    bk = net.backend
    conv = steps[k][0]
    fn = conv.W.shape[0]
    pre, col, _ = bk.conv_forward(inputs[k], conv.W, conv.b, conv.stride, conv.pad)
    n, _, oh, ow = pre.shape
    nxt = _next_mixing(steps, k)
    base_next = _base_pre(net, steps, inputs, nxt)
    target = conv.W if is_w else conv.b
    m = target[0].size  # entries per filter; lanes 0..m-1 move them by +h, lanes m..2m-1 by -h
    per = min(_lanes_per_batch(steps, inputs, k + 1), 2 * m)
    filters = range(fn) if filters is None else list(filters)
    plus = xp.empty((len(filters),) + target.shape[1:], dtype=xp.float64)
    minus = xp.empty_like(plus)
    for row, f in enumerate(filters):
        values = target[f].reshape(-1)
        delta = xp.concatenate([(values + h) - values, (values - h) - values])  # as the loop stores them
        plus_minus = xp.empty(2 * m, dtype=xp.float64)
        for s in range(0, 2 * m, per):
            # every batch `per` lanes wide (the last one repeats its lane): the layers then
            # reuse their buffers instead of faulting in new ones
            lanes = xp.minimum(xp.arange(s, s + per), 2 * m - 1)
            if is_w:
                column = col.T[lanes % m].reshape(per, n, oh, ow)
            else:
                column = xp.ones((per, n, oh, ow), dtype=pre.dtype)
            z = pre[None, :, f] + delta[lanes].reshape(-1, 1, 1, 1) * column
            y = _channel_layers(steps[k][1:], z.reshape(-1, 1, oh, ow))
            for step in steps[k + 1:nxt]:
                y = _channel_layers(step, y)
            scores = _rest(net, steps, inputs, nxt, f, y, per, base_next)
            for i in range(min(per, 2 * m - s)):
                plus_minus[s + i] = net.scores_loss(scores[i * n:(i + 1) * n], t)
        plus[row] = plus_minus[:m].reshape(target[f].shape)
        minus[row] = plus_minus[m:].reshape(target[f].shape)
    return plus, minus


def _channel_layers(layers: tuple[Any, ...], y: Array) -> Array:
    """One channel (shape (lanes * N, 1, H, W)) through channel-by-channel layers, test mode."""
    from ..layers import Dropout

    for layer in layers:
        y = layer.forward(y, False) if isinstance(layer, Dropout) else layer.forward(y)
    return y


def _base_pre(net: Any, steps: list[tuple[Any, ...]], inputs: list[Array], j: int) -> Array:
    """What step j computes before its activation, unperturbed: a convolution's output (N, FN, OH, OW)
    or an affine layer's; None for any other step."""
    from ..conv_layers import Convolution
    from ..layers import Affine

    layer = steps[j][0]
    if isinstance(layer, Convolution):
        return net.backend.conv_forward(inputs[j], layer.W, layer.b, layer.stride, layer.pad)[0]
    if len(steps[j]) == 1 and isinstance(layer, Affine) and inputs[j].ndim == 4 and j + 1 < len(inputs):
        return inputs[j + 1]
    return None


def _rest(net: Any, steps: list[tuple[Any, ...]], inputs: list[Array], j: int, f: int, y: Array,
          lanes: int, base: Array) -> Array:
    """The scores of every lane: channel f of step j's input is `y`, the other channels as they were."""
    xp = net.backend.xp
    bk = net.backend
    x_in = inputs[j]
    if base is None:  # any other step: the whole input, the changed channel put in
        full = xp.broadcast_to(x_in, (lanes,) + x_in.shape).copy()
        full[:, :, f] = y.reshape((lanes,) + x_in.shape[:1] + x_in.shape[2:])
        return net.predict_from(j, full.reshape((-1,) + x_in.shape[1:]), False)
    n, _, hh, ww = x_in.shape
    dy = y.reshape(lanes, n, hh, ww) - x_in[None, :, f]
    layer = steps[j][0]
    if base.ndim == 2:  # an affine layer: the changed channel's block of inputs
        rows = layer.W[f * hh * ww:(f + 1) * hh * ww]
        out = base[None] + xp.dot(dy.reshape(lanes * n, hh * ww), rows).reshape(lanes, n, -1)
        return net.predict_from(j + 1, out.reshape(lanes * n, -1), False)
    fn2, _, fh2, fw2 = layer.W.shape
    _, _, oh2, ow2 = base.shape
    dcol = bk.im2col(dy.reshape(-1, 1, hh, ww), fh2, fw2, layer.stride, layer.pad)
    dpre = xp.dot(dcol, layer.W[:, f].reshape(fn2, -1).T).reshape(lanes, n, oh2, ow2, fn2)
    pre = (base[None] + dpre.transpose(0, 1, 4, 2, 3)).reshape(lanes * n, fn2, oh2, ow2)
    out = _channel_layers(steps[j][1:], pre)
    return net.predict_from(j + 1, out, False)
