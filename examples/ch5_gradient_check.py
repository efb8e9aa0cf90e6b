"""The book's ch05/gradient_check.py on fastnet: backprop against the numerical gradient.

Builds TwoLayerNet 784-50-10, takes the first 3 training images, and prints the
mean absolute difference between the two gradients for each parameter. Small
numbers (1e-7 and below in float64) mean backprop is right.

    python examples/ch5_gradient_check.py
    python examples/ch5_gradient_check.py --backend numba --samples 10
    python examples/ch5_gradient_check.py --hidden 5            # tiny
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import add_common_flags, load_data, use_backend_from

from fastnet import TwoLayerNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    parser.add_argument("--hidden", type=int, default=50, help="hidden layer size (default: 50, as the book)")
    parser.add_argument("--samples", type=int, default=3, help="batch size (default: 3, as the book)")
    args = parser.parse_args()

    backend = use_backend_from(args)
    x_train, t_train, _, _, name = load_data(one_hot=True)
    if name != "MNIST":
        # the spiral set starts at the origin, where every ReLU sits on its kink
        # and a central difference straddles it: take other points
        pick = np.random.default_rng(args.seed).permutation(len(x_train))
        x_train, t_train = x_train[pick], t_train[pick]
    # float64: in float32 a central difference with h=1e-4 has hardly any correct digits.
    network = TwoLayerNet(input_size=x_train.shape[1], hidden_size=args.hidden,
                          output_size=t_train.shape[1], seed=args.seed, dtype=np.float64)
    x_batch = backend.asarray(x_train[: args.samples], np.float64)
    t_batch = backend.asarray(t_train[: args.samples], np.float64)

    if backend.name == "numba":
        print("numba compiles its kernels on first use (then loads them from the disk cache); warming up first")
    # one untimed call of each: compile/load time must not land in the timing
    network.numerical_gradient(x_batch, t_batch)
    network.gradient(x_batch, t_batch)

    start = time.perf_counter()
    grad_numerical = network.numerical_gradient(x_batch, t_batch)
    middle = time.perf_counter()
    grad_backprop = network.gradient(x_batch, t_batch)
    end = time.perf_counter()

    for key in grad_numerical.keys():
        diff = backend.xp.average(backend.xp.abs(grad_backprop[key] - grad_numerical[key]))
        print(key + ":" + str(float(diff)))
    print(f"numerical gradient: {middle - start:.3f} s; backprop: {(end - middle) * 1e3:.3f} ms "
          f"({(middle - start) / (end - middle):,.0f} times slower)")


if __name__ == "__main__":
    main()
