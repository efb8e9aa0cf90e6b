"""Data sets for the examples: MNIST (as in the book) and small 2-D toy sets.

Everything here returns plain NumPy arrays; move them to another backend
yourself if needed.

Environment variables:

``FASTNET_DATA``
    Directory holding the MNIST ``.gz`` files (used when ``data_dir`` is not given).
``FASTNET_OFFLINE``
    Set to ``1`` to never download, whatever ``download=`` says.
``XDG_CACHE_HOME``
    Base of the user cache (``$XDG_CACHE_HOME/fastnet/mnist``, default
    ``~/.cache/fastnet/mnist``): default download location, and where the
    parsed ``mnist-cache.npz`` goes when the data directory is read-only.
"""

from __future__ import annotations

from .idx import read_idx, write_idx
from .mnist import (
    MNIST_FILES,
    MNIST_MIRRORS,
    MNIST_SHA256,
    load_idx_dataset,
    load_mnist,
    mnist_available,
)
from .spiral import spiral_data, vertical_data

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_SHA256",
    "load_idx_dataset",
    "load_mnist",
    "mnist_available",
    "read_idx",
    "write_idx",
    "spiral_data",
    "vertical_data",
]
