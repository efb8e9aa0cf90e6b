"""Random search versus gradient descent (nnfs, chapter 6), on fastnet.

"Neural Networks from Scratch" first tries to train a net without gradients:
nudge every weight by 0.05 * N(0, 1), keep the nudge when the loss went down,
undo it otherwise. That works on the easy "vertical" blobs and stalls on the
spiral. Next to it, the same net with the same number of full-batch SGD steps
using backprop, to show what gradients buy. The default net has 64 hidden
neurons; nnfs's own has 3 (``--hidden 3``), too few for the spiral whatever
the method.

    python examples/nnfs_random_search.py
    python examples/nnfs_random_search.py --hidden 3 --plot search.png
    python examples/nnfs_random_search.py --iterations 200         # tiny
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import add_common_flags, use_backend_from

from fastnet import SGD, TwoLayerNet
from fastnet.datasets import spiral_data, vertical_data
from fastnet.plot import require_matplotlib


def random_search(net, x, t, iterations, rng, step=0.05):
    """nnfs's loop: perturb all weights, keep the change only if the loss drops."""
    bk = net.backend
    best = {k: p.copy() for k, p in net.params.items()}
    lowest_loss = float(net.loss(x, t))
    curve = []
    for _ in range(iterations):
        for key, p in net.params.items():
            p += bk.asarray(step * rng.standard_normal(p.shape), net.dtype)
        loss = float(net.loss(x, t))
        if loss < lowest_loss:
            lowest_loss = loss
            for key, p in net.params.items():
                best[key][...] = p
        else:
            for key, p in net.params.items():
                p[...] = best[key]
        curve.append(lowest_loss)
    return curve


def gradient_descent(net, x, t, iterations, lr):
    optimizer = SGD(lr=lr)
    return [float(net.train_step(x, t, optimizer)) for _ in range(iterations)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    parser.add_argument("--iterations", type=int, default=10000, help="steps of each method (default: 10000)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden neurons (default: 64; nnfs uses 3)")
    parser.add_argument("--samples", type=int, default=100, help="points per class (default: 100)")
    parser.add_argument("--lr", type=float, default=1.0, help="SGD learning rate (default: 1.0)")
    parser.add_argument("--plot", default=None, help="save the loss curves to this PNG")
    args = parser.parse_args()

    backend = use_backend_from(args)
    if args.plot:
        require_matplotlib()
    curves = {}
    print(f"{'data':<9}{'method':<15}{'loss':>8}{'accuracy':>10}{'time':>9}")
    for name, make in (("vertical", vertical_data), ("spiral", spiral_data)):
        x0, t0 = make(args.samples, 3, seed=args.seed)
        for method in ("random search", "SGD (backprop)"):
            # nnfs's Layer_Dense starts from 0.01 * randn, the book's TwoLayerNet default
            net = TwoLayerNet(2, args.hidden, 3, weight_init_std=0.01, seed=args.seed)
            x, t = backend.asarray(x0, net.dtype), backend.asarray(t0.astype(np.int64))
            start = time.perf_counter()
            if method == "random search":
                curve = random_search(net, x, t, args.iterations, np.random.default_rng(args.seed))
            else:
                curve = gradient_descent(net, x, t, args.iterations, args.lr)
            seconds = time.perf_counter() - start
            curves[(name, method)] = curve
            loss, acc = net.evaluate(x, t)
            print(f"{name:<9}{method:<15}{loss:8.4f}{acc:10.3f}{seconds:8.2f}s")

    if args.plot:
        fig = require_matplotlib()(figsize=(10, 4))
        axes = fig.subplots(1, 2)
        for ax, name in zip(axes, ("vertical", "spiral")):
            for method in ("random search", "SGD (backprop)"):
                ax.plot(curves[(name, method)], label=method)
            ax.set_title(f"{name} data, {args.hidden} hidden neurons")
            ax.set_xlabel("iteration")
            ax.set_ylabel("loss")
            ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
