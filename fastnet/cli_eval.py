"""``fastnet eval``: the accuracy and loss of a saved net on MNIST."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from . import cli_common
from .cli_common import positive_int, resolve_backend, say

__all__ = ["add_parser", "cmd_eval"]

MNIST_FEATURES, MNIST_CLASSES = 784, 10


def add_parser(sub: Any) -> None:
    """Register ``eval`` on the main parser's subcommands."""
    from .backend import BACKEND_NAMES

    ev = sub.add_parser("eval", help="accuracy and loss of a saved net (.npz) on MNIST",
                        description="Load a net saved by 'fastnet train --save' or fastnet.save_params and "
                                    "measure its accuracy and loss on the MNIST test set (and training set).")
    ev.add_argument("path", metavar="PATH", help="the saved net (.npz)")
    ev.add_argument("--backend", choices=BACKEND_NAMES,
                    help="backend to run on (default: FASTNET_BACKEND, else auto: cupy with a GPU, else numba, else numpy)")
    ev.add_argument("--data-dir", metavar="DIR", help="folder with the MNIST files (default: FASTNET_DATA or the user cache)")
    ev.add_argument("--train", action="store_true", help="measure the training set too")
    ev.add_argument("--eval-samples", type=positive_int, metavar="N",
                    help="only the first N samples of each set (default: all)")
    ev.add_argument("--debug", action="store_true", help="show the traceback on errors")
    ev.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from .io import load_net

    if os.path.isdir(args.path):
        raise IsADirectoryError(f"PATH {args.path} is a folder; give the saved .npz file")
    if not os.path.isfile(args.path):
        raise FileNotFoundError(f"PATH {args.path}: no such file (save one with 'fastnet train --save PATH')")
    net = load_net(args.path, backend=resolve_backend(args))
    say(f"net: {net!r} from {args.path}")
    if net.input_size != MNIST_FEATURES:  # e.g. a net trained on the 2-D spiral data
        raise ValueError(f"{args.path} holds a net with {net.input_size} inputs; fastnet eval measures "
                         f"nets on MNIST ({MNIST_FEATURES} inputs, 28x28 images)")
    data = cli_common.load_mnist_or_explain(args, download=not cli_common.offline())
    (x, t), (xt, tt) = data
    outputs = net.predict(net.backend.asarray(xt[:1], dtype=net.dtype)).shape[-1]
    if outputs != MNIST_CLASSES:
        raise ValueError(f"{args.path} holds a net with {outputs} outputs; MNIST has {MNIST_CLASSES} classes")
    sets = [("test", xt, tt)] + ([("train", x, t)] if args.train else [])
    for name, images, labels in sets:
        if args.eval_samples is not None:
            images, labels = images[: args.eval_samples], labels[: args.eval_samples]
        backend = net.backend
        start = time.perf_counter()
        loss, acc = net.evaluate(backend.asarray(images, dtype=net.dtype), backend.asarray(labels))
        seconds = time.perf_counter() - start
        say(f"{name}: accuracy {acc:.4f}, loss {loss:.4f} ({len(labels)} images, {seconds:.1f} s on {backend.name})")
    return 0
