"""What many tests share: any backend's array as NumPy (a module of its own, so tests import it by a unique name)."""

from __future__ import annotations

import numpy as np

import fastnet


def host(x) -> np.ndarray:
    """Any backend's array as NumPy, for assertions."""
    return fastnet.to_numpy(x)
