"""Gradient descent on f(x0, x1) = x0**2 + x1**2 with the path plotted (the book's ch04/gradient_method.py).

Starts at (-3, 4) and takes 20 steps of ``x -= lr * grad`` with the gradient
computed numerically, then shows what a too-large (10) and a too-small
(1e-10) learning rate do, as the book's text does.

    python examples/gradient_descent_path.py
    python examples/gradient_descent_path.py --lr 0.05 --steps 50 --plot path.png
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import use_backend_from

import fastnet
from fastnet import gradient_descent, to_numpy
from fastnet.plot import plot_path


def function_2(x):
    return x[0] ** 2 + x[1] ** 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None, choices=fastnet.BACKEND_NAMES)
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate (default: 0.1)")
    parser.add_argument("--steps", type=int, default=20, help="number of steps (default: 20)")
    parser.add_argument("--plot", default="gradient_descent_path.png",
                        help="where to save the path (default: gradient_descent_path.png)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()

    backend = use_backend_from(args)
    init_x = backend.asarray(np.array([-3.0, 4.0]))
    x, x_history = gradient_descent(function_2, init_x, lr=args.lr, step_num=args.steps, return_history=True)
    print(f"lr={args.lr}: after {args.steps} steps x = {to_numpy(x)}, f(x) = {float(function_2(x)):.3e}")
    for lr in (10.0, 1e-10):  # the book's examples of a bad learning rate
        bad = gradient_descent(function_2, init_x, lr=lr, step_num=100)
        print(f"lr={lr:g} (the book's bad learning rate, its 100 steps): x = {to_numpy(bad)}")

    if not args.no_plot:
        points = np.vstack([to_numpy(x_history), to_numpy(x)[None]])
        path = plot_path(points, args.plot, f=lambda p: p[0] ** 2 + p[1] ** 2,
                         title=f"gradient descent on x0² + x1², lr={args.lr}")
        print(f"saved {path}")


if __name__ == "__main__":
    main()
