"""The book's ch04/train_neuralnet.py on fastnet: mini-batch SGD with the ch.4 net.

TwoLayerNet 784-50-10 with a sigmoid hidden layer, learning rate 0.1, batches
of 100 drawn with replacement (the book's ``np.random.choice``), 10,000
iterations; train and test accuracy once per epoch, then the accuracy plot
(the book's figure 4-12).

    python examples/ch4_train_neuralnet.py                      # the book's run
    python examples/ch4_train_neuralnet.py --iters 600 --backend numba
    python examples/ch4_train_neuralnet.py --iters 50 --train-size 1000 --plot out.png  # tiny
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import add_common_flags, load_data, use_backend_from

from fastnet import TwoLayerNet
from fastnet.plot import plot_accuracy, plot_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    parser.add_argument("--iters", type=int, default=10000, help="iterations (default: 10000, as the book)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--plot", default="ch4_accuracy.png", help="accuracy plot (default: ch4_accuracy.png)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()

    backend = use_backend_from(args)
    x_train, t_train, x_test, t_test, _ = load_data(one_hot=True, train_size=args.train_size)
    network = TwoLayerNet(input_size=x_train.shape[1], hidden_size=50, output_size=t_train.shape[1],
                          activation="sigmoid", seed=args.seed)
    # Move the data to the backend once, in the net's dtype (on a GPU a copy per
    # step would dominate; on any backend a cast per step is wasted work).
    x_train, t_train = backend.asarray(x_train, network.dtype), backend.asarray(t_train, network.dtype)
    x_test, t_test = backend.asarray(x_test, network.dtype), backend.asarray(t_test, network.dtype)
    rng = np.random.default_rng(args.seed)
    train_size = x_train.shape[0]
    iter_per_epoch = max(train_size // args.batch_size, 1)
    train_loss_list, train_acc_list, test_acc_list = [], [], []

    start = time.perf_counter()
    for i in range(args.iters):
        batch_mask = backend.asarray(rng.choice(train_size, args.batch_size))
        x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]

        # The book calls gradient() and then loss(); gradient_and_loss() returns the
        # loss of the same forward pass (measured before the update, not after).
        grad, loss = network.gradient_and_loss(x_batch, t_batch)
        for key in ("W1", "b1", "W2", "b2"):
            network.params[key] -= args.lr * grad[key]
        train_loss_list.append(loss)  # left on the device; converted once at the end

        if i % iter_per_epoch == 0:
            train_acc = network.accuracy(x_train, t_train)
            test_acc = network.accuracy(x_test, t_test)
            train_acc_list.append(train_acc)
            test_acc_list.append(test_acc)
            print(f"iteration {i:5d}: train acc {train_acc:.4f}, test acc {test_acc:.4f}")
    train_acc, test_acc = network.accuracy(x_train, t_train), network.accuracy(x_test, t_test)
    print(f"after {args.iters} iterations ({time.perf_counter() - start:.1f} s): "
          f"train acc {train_acc:.4f}, test acc {test_acc:.4f}")

    if not args.no_plot:
        history = {"epoch": list(range(len(train_acc_list))), "train_acc": train_acc_list,
                   "test_acc": test_acc_list, "step_loss": [float(v) for v in train_loss_list]}
        print(f"saved {plot_accuracy(history, args.plot)}")
        loss_path = args.plot[:-4] + "_loss.png" if args.plot.endswith(".png") else args.plot + "_loss.png"
        print(f"saved {plot_loss(history, loss_path)}")


if __name__ == "__main__":
    main()
