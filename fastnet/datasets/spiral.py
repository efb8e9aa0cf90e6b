"""Small 2-D toy classification sets (the "spiral" and "vertical" sets of nnfs).

Both return ``(X, y)``: ``X`` float32 of shape ``(samples * classes, 2)`` and
``y`` uint8 class numbers, rows grouped by class.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["spiral_data", "vertical_data"]

SeedLike = int | np.random.Generator | None


def _count(value: object, arg: str, upper: int | None = None) -> int:
    # bool is an Integral, but spiral_data(True, 3) is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{arg}: expected a positive int, got {value!r}")
    n = int(value)
    if n < 1:
        raise ValueError(f"{arg}: expected a positive int, got {n}")
    if upper is not None and n > upper:
        raise ValueError(f"{arg}: at most {upper} (labels are uint8), got {n}")
    return n


def spiral_data(
    samples: int,
    classes: int,
    *,
    seed: SeedLike = None,
    noise: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved spiral arms, one per class.

    Point ``i`` of class ``c`` sits at radius ``r_i`` (evenly spaced in
    [0, 1]) and angle ``2.5 * t_i``, where ``t_i`` runs evenly over
    ``[4c, 4c + 4]`` plus Gaussian noise of standard deviation ``noise``;
    its coordinates are ``(r sin(2.5 t), r cos(2.5 t))``.

    Args:
        samples: points per class (positive int).
        classes: number of arms (1..256).
        seed: seed or ``numpy.random.Generator``; None draws fresh randomness.
        noise: standard deviation added to the angle parameter ``t``.

    Returns:
        ``(X, y)``: float32 ``(samples * classes, 2)`` and uint8 labels.

    Raises:
        ValueError: an argument is not a positive int, or ``noise`` is negative.
    """
    n = _count(samples, "samples")
    k = _count(classes, "classes", upper=256)
    if not isinstance(noise, numbers.Real) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise: expected a finite number >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)

    radius = np.linspace(0.0, 1.0, n)
    start = 4.0 * np.arange(k)[:, None]                       # (k, 1)
    t = start + np.linspace(0.0, 4.0, n) + rng.standard_normal((k, n)) * noise
    angle = 2.5 * t
    X = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=-1)
    y = np.repeat(np.arange(k, dtype=np.uint8), n)
    return X.reshape(k * n, 2).astype(np.float32), y


def vertical_data(
    samples: int,
    classes: int,
    *,
    seed: SeedLike = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs side by side: class ``c`` is centred at ``(c / 3, 0.5)``.

    Both coordinates get Gaussian noise of standard deviation 0.1.

    Args:
        samples: points per class (positive int).
        classes: number of blobs (1..256).
        seed: seed or ``numpy.random.Generator``; None draws fresh randomness.

    Returns:
        ``(X, y)``: float32 ``(samples * classes, 2)`` and uint8 labels.

    Raises:
        ValueError: ``samples`` or ``classes`` is not a positive int.
    """
    n = _count(samples, "samples")
    k = _count(classes, "classes", upper=256)
    rng = np.random.default_rng(seed)

    centre_x = np.repeat(np.arange(k) / 3.0, n)
    X = np.empty((k * n, 2))
    X[:, 0] = centre_x + 0.1 * rng.standard_normal(k * n)
    X[:, 1] = 0.5 + 0.1 * rng.standard_normal(k * n)
    y = np.repeat(np.arange(k, dtype=np.uint8), n)
    return X.astype(np.float32), y
