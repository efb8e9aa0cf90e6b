"""Train on the GPU when there is one: the same code on CuPy, or on the best CPU backend.

Picks the "cupy" backend when CuPy and a CUDA device work; otherwise says why
not and uses "auto" (numba when it is installed, else numpy). The data set is
moved to the device once and each epoch runs as one call, so the GPU is not
synchronised between steps. Prints the time of every epoch.

    python examples/gpu_training.py
    python examples/gpu_training.py --epochs 20 --hidden 100,100 --plot gpu.png
    python examples/gpu_training.py --epochs 1 --train-size 2000      # tiny
"""

from __future__ import annotations

import argparse

from _common import load_data

import fastnet
from fastnet import MultiLayerNet, Trainer
from fastnet.plot import plot_history, require_matplotlib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--hidden", default="50", help="hidden layer sizes, e.g. 50 or 100,100 (default: 50)")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default: 0.1)")
    parser.add_argument("--dtype", default=None, choices=("float32", "float64"),
                        help="default: the backend's (float32 on the GPU, float64 on the CPU)")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="save the training curves to this PNG")
    args = parser.parse_args()
    if args.plot:
        require_matplotlib()

    cupy = fastnet.available_backends()["cupy"]
    if cupy.available:
        backend = fastnet.set_backend("cupy")
        print("backend: cupy (GPU)")
    else:
        backend = fastnet.set_backend("auto")
        print(f"no GPU backend here ({cupy.reason}); training on {backend.name!r} instead")

    x, t, xt, tt, name = load_data(train_size=args.train_size)
    hidden = [int(h) for h in args.hidden.split(",")]
    net = MultiLayerNet(x.shape[1], hidden, int(t.max()) + 1, seed=args.seed, dtype=args.dtype)
    print(f"net: {net}")
    trainer = Trainer(net, x, t, xt, tt, epochs=args.epochs, mini_batch_size=args.batch_size,
                      optimizer="sgd", optimizer_param={"lr": args.lr}, seed=args.seed, verbose="epochs")
    history = trainer.train()
    seconds = history.seconds
    steady = seconds[1:] or seconds  # the first epoch includes compilation / warm-up
    print(f"{name}: test acc {history.test_acc[-1]:.4f} after {args.epochs} epoch(s); "
          f"{min(steady) * 1e3:.1f} ms per epoch at best ({trainer.steps_per_epoch} steps), "
          f"first epoch {seconds[0] * 1e3:.1f} ms")
    if args.plot:
        print(f"saved {plot_history(history, args.plot, title=f'{name} on {backend.name}')}")


if __name__ == "__main__":
    main()
