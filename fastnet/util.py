"""Helpers of the book's ``common/util.py``: curve smoothing, data shuffling, im2col and col2im.

``smooth_curve`` smooths a loss curve for plotting; ``shuffle_dataset``
shuffles samples and labels together with NumPy's global generator, so
``np.random.seed(n)`` repeats it, as in the book. ``im2col``, ``col2im`` and
``conv_output_size`` (ch.7) live in ``fastnet.patches``.
"""

from __future__ import annotations

from typing import Any

import numpy

from .patches import col2im, conv_output_size, im2col

__all__ = ["smooth_curve", "shuffle_dataset", "im2col", "col2im", "conv_output_size"]

_WINDOW = 11  # the book's window length
_BETA = 2  # the Kaiser window's shape parameter, as in the book


def smooth_curve(x: Any) -> numpy.ndarray:
    """A 1-D curve averaged over a sliding Kaiser window (11 points, beta 2).

    The ends are padded with mirrored values, so the result has ``len(x)``
    points. A curve shorter than the window is returned unchanged (as a float
    array): there is nothing to average it with.
    """
    x = numpy.asarray(x, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"x must be a 1-D sequence of numbers, got shape {x.shape}")
    if x.size < _WINDOW:
        return x.copy()
    half = _WINDOW - 1
    # mirror without the first point at the start, with the last point at the end
    padded = numpy.concatenate([x[half:0:-1], x, x[: -_WINDOW : -1]])
    weights = numpy.kaiser(_WINDOW, _BETA)
    smoothed = numpy.convolve(weights / weights.sum(), padded, mode="valid")
    cut = _WINDOW // 2
    return smoothed[cut : smoothed.size - cut]


def shuffle_dataset(x: Any, t: Any) -> tuple[numpy.ndarray, numpy.ndarray]:
    """``(x, t)`` with their samples (first axis) in the same random order.

    ``x`` may be 2-D (samples, features) or 4-D (samples, channels, height,
    width); ``t`` holds labels or one-hot rows. The order comes from
    ``numpy.random.permutation``, NumPy's global generator.
    """
    x, t = numpy.asarray(x), numpy.asarray(t)
    if x.ndim not in (2, 4):
        raise ValueError(f"x must be 2-D (N, features) or 4-D (N, C, H, W), got shape {x.shape}")
    if t.ndim == 0 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have one label or one-hot row per sample of x ({x.shape[0]}), got shape {t.shape}")
    order = numpy.random.permutation(x.shape[0])
    return x[order], t[order]
