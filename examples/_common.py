"""Bits the example scripts share: picking the data and the backend from flags."""

from __future__ import annotations

import argparse
import sys

import numpy as np

import fastnet
from fastnet.datasets import load_mnist, mnist_available, spiral_data


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default=None, choices=fastnet.BACKEND_NAMES,
                        help="numpy, numba, cupy or auto (default: FASTNET_BACKEND or numpy)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def use_backend_from(args: argparse.Namespace) -> fastnet.Backend:
    """Make the backend named on the command line the default; say which one runs."""
    backend = fastnet.set_backend(args.backend) if args.backend else fastnet.get_backend()
    print(f"backend: {backend.name}")
    return backend


def load_data(one_hot: bool = False, train_size: int | None = None, download: bool = True):
    """MNIST as the book loads it, or the spiral data when MNIST cannot be had.

    Returns ``(x_train, t_train, x_test, t_test, name)``; prints one line
    saying which data set is used and why.
    """
    try:
        if not mnist_available() and not download:
            raise FileNotFoundError("MNIST files not found")
        (x, t), (xt, tt) = load_mnist(normalize=True, one_hot_label=one_hot, download=download)
        name = "MNIST"
    except (OSError, fastnet.FastnetError) as exc:
        reason = str(exc).split(". ")[0]
        print(f"MNIST unavailable ({reason}); using the spiral data instead", file=sys.stderr)
        x, t = spiral_data(100, 3, seed=0)
        xt, tt = spiral_data(100, 3, seed=1)
        if one_hot:
            t, tt = np.eye(3)[t], np.eye(3)[tt]
        name = "spiral"
    if train_size is not None:
        x, t = x[:train_size], t[:train_size]
    print(f"data: {name}, {len(x)} training and {len(xt)} test samples")
    return x, t, xt, tt, name
