"""The conv nets' configuration: checked constructor arguments and the weight shapes they give.

``fastnet.io`` uses ``param_shapes`` to check a saved file against its
config before building anything.
"""

from __future__ import annotations

from typing import Any

import numpy

from .patches import conv_output_size
from .netbase import positive_int

CONV_KEYS = ("filter_num", "filter_size", "pad", "stride")


def input_dim_of(value: Any) -> tuple[int, int, int]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
        raise ValueError(f"input_dim must be (channels, height, width), e.g. (1, 28, 28), got {value!r}")
    c, h, w = (positive_int(v, "each entry of input_dim") for v in value)
    return c, h, w


def conv_param_of(value: Any, name: str, default: dict[str, int]) -> dict[str, int]:
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict with keys {', '.join(CONV_KEYS)}, got {value!r}")
    unknown = sorted(set(value) - set(CONV_KEYS))
    if unknown:
        raise ValueError(f"{name} has unknown keys {unknown}; it takes {', '.join(CONV_KEYS)}")
    merged = {**default, **value}
    out = {}
    for key in CONV_KEYS:
        v = merged[key]
        low = 0 if key == "pad" else 1
        if isinstance(v, bool) or not isinstance(v, (int, numpy.integer)) or v < low:
            raise ValueError(f"{name}['{key}'] must be an integer >= {low}, got {v!r}")
        out[key] = int(v)
    return out


#: SimpleConvNet's filters when conv_param does not say (the book's: 30 of 5x5, stride 1, no padding).
SIMPLE_CONV = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}


def _fit(size: int, window: int, stride: int, pad: int, input_dim: tuple[int, int, int], where: str) -> int:
    """conv_output_size, with an error that names input_dim and the layer that does not fit."""
    span = size + 2 * pad - window
    if span < 0:
        raise ValueError(f"input_dim {tuple(input_dim)} is too small for this net: {where} gets "
                         f"a side of {size} pixel(s) (+ 2*{pad} padding), smaller than its {window}x{window} window")
    return conv_output_size(size, window, stride, pad)


def simple_shapes(input_dim: tuple[int, int, int], conv: dict[str, int], hidden: int,
                  out: int) -> list[tuple[int, ...]]:
    """The weight shapes of SimpleConvNet: filters, then the two dense layers."""
    c, h, w = input_dim
    fn, fs = conv["filter_num"], conv["filter_size"]
    sizes = [_fit(n, fs, conv["stride"], conv["pad"], input_dim, "the convolution (conv_param)") for n in (h, w)]
    pooled = [_fit(n, 2, 2, 0, input_dim, "the 2x2 pooling after the convolution") for n in sizes]
    return [(fn, c, fs, fs), (fn * pooled[0] * pooled[1], hidden), (hidden, out)]


def deep_shapes(input_dim: tuple[int, int, int], convs: list[dict[str, int]], hidden: int,
                out: int) -> list[tuple[int, ...]]:
    """The weight shapes of DeepConvNet: six filter banks (a 2x2 pool after every second), two dense."""
    c, h, w = input_dim
    shapes: list[tuple[int, ...]] = []
    for i, cp in enumerate(convs, start=1):
        fn, fs = cp["filter_num"], cp["filter_size"]
        shapes.append((fn, c, fs, fs))
        h, w = (_fit(n, fs, cp["stride"], cp["pad"], input_dim, f"convolution {i} (conv_param_{i})") for n in (h, w))
        c = fn
        if i % 2 == 0:
            h, w = (_fit(n, 2, 2, 0, input_dim, f"pooling {i // 2} (2x2)") for n in (h, w))
    return shapes + [(c * h * w, hidden), (hidden, out)]


def param_shapes(name: str, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The parameter shapes a conv net's saved config gives, computed without building it.

    ``fastnet.io`` compares them with a file's arrays before allocating
    anything; a bad config raises ``ValueError`` or ``TypeError``.
    """
    dim = input_dim_of(config.get("input_dim"))
    hidden = positive_int(config.get("hidden_size"), "hidden_size")
    out = positive_int(config.get("output_size"), "output_size")
    if name == "SimpleConvNet":
        conv = conv_param_of(config.get("conv_param"), "conv_param", SIMPLE_CONV)
        weights = simple_shapes(dim, conv, hidden, out)
    else:
        convs = [conv_param_of(config.get(f"conv_param_{i}"), f"conv_param_{i}", {}) for i in range(1, 7)]
        weights = deep_shapes(dim, convs, hidden, out)
    shapes: dict[str, tuple[int, ...]] = {}
    for i, shape in enumerate(weights, start=1):
        shapes[f"W{i}"] = shape
        shapes[f"b{i}"] = (shape[0],) if len(shape) == 4 else (shape[1],)
    return shapes
