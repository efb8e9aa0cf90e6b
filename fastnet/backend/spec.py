"""A plain description of a fully connected net that backends can run whole.

Nets hand an ``MLPSpec`` to the backend's coarse kernels (predict, loss,
gradient, numerical gradient, train step) so a backend may fuse the entire
computation. The spec holds the net's *live* ``params`` dict: perturbing or
updating those arrays in place is seen by the next call, as in the book.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import activations


@dataclass(frozen=True)
class MLPSpec:
    """Affine -> activation -> ... -> Affine -> softmax-with-loss.

    ``params`` maps "W1", "b1", ..., "Wn", "bn" to arrays; ``activation`` is
    an activation object (``fastnet.activations``) between affine layers (not
    after the last): backends compare it by identity with the built-ins;
    ``weight_decay`` is the L2 coefficient lambda (loss += lambda/2 * sum W**2).
    """

    params: dict[str, Any]
    depth: int
    activation: Any = None
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        # a name ("relu") stands for the built-in object; anything else must be an activation
        act = activations.RELU if self.activation is None else activations.get(self.activation)
        object.__setattr__(self, "activation", act)

    def weight(self, i: int) -> Any:
        return self.params[f"W{i + 1}"]

    def bias(self, i: int) -> Any:
        return self.params[f"b{i + 1}"]

    def names(self) -> list[str]:
        """Parameter names in the book's order: W1, b1, W2, b2, ..."""
        names = self.__dict__.get("_names")
        if names is None:
            names = tuple(f"{p}{i}" for i in range(1, self.depth + 1) for p in ("W", "b"))
            object.__setattr__(self, "_names", names)  # frozen: set once, on first use
        return list(names)


@dataclass(frozen=True)
class ConvSpec:
    """One of the book's conv nets as it builds them: blocks of Convolution -> ReLU (-> 2x2 max
    pooling, stride 2), then Affine -> ReLU (-> Dropout) -> Affine (-> Dropout) -> softmax-with-loss,
    without weight decay.

    ``params`` is the net's live dict (W1, b1, ... the convolutions' (FN, C, FH, FW) filters and
    biases in order, then the two affine layers'); ``convs`` holds each convolution's
    (stride, pad, pooled after); ``dropouts`` the two Dropout layers, or none.
    """

    params: dict[str, Any]
    convs: tuple[tuple[int, int, bool], ...]
    dropouts: tuple[Any, ...] = ()

    def names(self) -> list[str]:
        return [f"{p}{i}" for i in range(1, len(self.convs) + 3) for p in ("W", "b")]


def overlapping(arrays: Sequence[Any], address: Callable[[Any], int]) -> bool:
    """Whether two of the contiguous `arrays` share memory (`address`: an array's first byte,
    ``a.ctypes.data`` or ``a.data.ptr``).

    A fused step updates the parameters after all gradients are known, in its
    own order; the reference updates them one by one, so tied weights or
    overlapping views must take the reference path.
    """
    spans = sorted((address(a), address(a) + a.nbytes) for a in arrays if a.nbytes)
    return any(start < end for (_, end), (start, _) in zip(spans, spans[1:]))
