"""A relu MLP's forward and backward pass, each one compiled call.

The same products, kernels and order as ``StepPlan``'s call-by-call path,
with NumPy's ``gemm`` called from inside the kernel (``blas.py``) instead of
``numpy.dot`` from Python, which saves a 784-50-10 step at B=100 a few µs of
calls (~1-2% of it). exp and log stay NumPy's ufuncs (their bits differ from
any compiled exp on some CPUs), so a step is forward, ``numpy.exp``, the
softmax kernel, ``numpy.log`` and backward.

Layers travel as tuples of arrays: ``Ws``, ``bs``, the hidden activations and
their gradients. ``addr`` is the gemm of the arrays' dtype.
"""

from __future__ import annotations

import numba

from .blas import NO_TRANS, TRANS, dot_into
from .step import add_decay, bias_relu, bias_shift_rows, relu_backward_sums, sgd_layer

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")

# what backward does with a layer's gradient (``update`` entries)
KEEP, SGD, LATER = 0, 1, 2


@_jit
def forward_relu(addr, x, Ws, bs, hidden, z):  # type: ignore[no-untyped-def]
    """z = shifted scores of x (bias added, row maximum subtracted); hidden = relu activations."""
    depth = len(Ws)
    h = x
    for i in range(depth - 1):
        a, W = hidden[i], Ws[i]
        dot_into(addr, NO_TRANS, NO_TRANS, h, W, a)
        bias_relu(a, bs[i])
        h = a
    W = Ws[depth - 1]
    dot_into(addr, NO_TRANS, NO_TRANS, h, W, z)
    bias_shift_rows(z, bs[depth - 1])


@_jit
def backward_relu(addr, x, Ws, bs, hidden, dhidden, d, gWs, gbs, update, lr, lam, decay):  # type: ignore[no-untyped-def]
    """Backprop from d = dL/dscores (the last gb already summed by the softmax kernel).

    Per layer, ``update[i]``: KEEP leaves the gradient in gWs/gbs, weight
    decay lam added when `decay` (the caller's ``bool(lam)`` before lam took
    the arrays' dtype, as NumPy decides); SGD applies SGD(lr) in place once the layer's
    old weights are no longer needed; LATER leaves the raw gradient for the
    caller's own update.
    """
    depth = len(Ws)
    for i in range(depth - 1, -1, -1):
        W, gW = Ws[i], gWs[i]
        inputs = x if i == 0 else hidden[i - 1]
        dot_into(addr, TRANS, NO_TRANS, inputs, d, gW)
        if i > 0:
            dh = dhidden[i - 1]
            dot_into(addr, NO_TRANS, TRANS, d, W, dh)
            relu_backward_sums(dh, hidden[i - 1], gbs[i - 1])
            d = dh
        if update[i] == SGD:
            sgd_layer(W, gW, bs[i], gbs[i], lr, lam)
        elif update[i] == KEEP and decay:
            add_decay(gW.reshape(-1), W.reshape(-1), lam)
