"""``fastnet train``: train a net on MNIST or the spiral data and report each epoch."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from .cli_common import (
    EXIT_FAIL,
    add_common,
    add_net,
    check_net_args,
    check_outputs,
    compile_note,
    fraction,
    fresh_seed,
    CONV_NETS,
    init_for,
    make_net,
    pick_dataset,
    positive_float,
    positive_int,
    resolve_backend,
    say,
)

__all__ = ["add_parser", "cmd_train", "collapsed"]


def add_parser(sub: Any) -> None:
    """Register ``train`` on the main parser's subcommands."""
    from .optimizers import OPTIMIZERS

    train = sub.add_parser("train", help="train a net on MNIST or the spiral data",
                           description="Train a net and report accuracy after each epoch.")
    add_common(train)
    train.add_argument("--dataset", choices=("auto", "mnist", "spiral"), default="auto",
                       help="auto: MNIST when present or downloadable, else spiral (default: auto)")
    add_net(train, "hidden layer sizes, e.g. 50 or 100,100 (default: 50 for two/multi on MNIST, 64 on spiral; "
                   "the conv nets' own: 100 simple-conv, 50 deep-conv)")
    train.add_argument("--dropout", type=fraction, metavar="RATIO", help="dropout ratio, multi only")
    train.add_argument("--optimizer", choices=tuple(OPTIMIZERS),
                       help="(default: sgd; adam for the conv nets, as the book's ch.7-8 scripts)")
    train.add_argument("--lr", type=positive_float, help="learning rate (default for sgd: 0.1 on MNIST, 1.0 on spiral; others: the optimizer's)")
    train.add_argument("--epochs", type=positive_int, help="(default: 5 for MNIST, 1000 for spiral)")
    train.add_argument("--batch-size", type=positive_int, default=100, help="(default: 100)")
    train.add_argument("--sampling", choices=("shuffle", "replacement"), default="shuffle",
                       help="shuffle each epoch, or draw batches with replacement as the book does (default: shuffle)")
    train.add_argument("--train-size", type=positive_int, metavar="N", help="use only the first N training samples")
    train.add_argument("--eval-samples", type=positive_int, metavar="N",
                       help="measure accuracy on the first N samples of each set "
                            "(default: all; 1000 for the conv nets, as the book's ch.7-8 scripts)")
    train.add_argument("--samples", type=positive_int, default=100, help="spiral points per class (default: 100)")
    train.add_argument("--plot", metavar="PATH", help="save the loss and accuracy curves to this PNG")
    train.add_argument("--save", metavar="PATH", help="save the trained parameters to this .npz")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)



def cmd_train(args: argparse.Namespace) -> int:
    from .datasets import spiral_data
    from .optimizers import make_optimizer
    from .train import Trainer

    if args.plot:
        from .plot import check_image_path

        check_image_path(args.plot)  # no matplotlib, or no image format: say so now, not after training
    check_outputs(save=args.save, plot=args.plot)
    check_net_args(args)
    backend = resolve_backend(args)
    seed = fresh_seed(args)
    name, data, note = pick_dataset(args, "spiral")
    say(f"dataset: {note}" + (f", {len(data[0][0])} train / {len(data[1][0])} test images" if data else ""))
    if name == "mnist":
        (x, t), (xt, tt) = data
        hidden, epochs, n_out = args.hidden or [50], args.epochs or 5, 10
    else:
        if args.net in CONV_NETS:
            raise ValueError(f"--net {args.net} needs MNIST images, and none were loaded ({note})")
        if args.seed is None:  # the fallback demo gives the same numbers every run
            seed = 0
        x, t = spiral_data(args.samples, 3, seed=seed)
        xt, tt = spiral_data(args.samples, 3, seed=seed + 1)
        hidden, epochs, n_out = args.hidden or [64], args.epochs or 1000, 3
        if args.weight_init is None:  # 0.01 is too small to get going on 2 inputs
            args.weight_init = init_for(args.activation)
    if args.train_size is not None:
        x, t = x[: args.train_size], t[: args.train_size]
    if args.net in CONV_NETS:  # the book's train_convnet.py / train_deepnet.py settings
        args.optimizer = args.optimizer or "adam"
        args.eval_samples = args.eval_samples or 1000
    args.optimizer = args.optimizer or "sgd"
    net = make_net(args, x.shape[1], n_out, hidden, seed, backend)
    sgd_lr = 0.1 if name == "mnist" else 1.0
    params = {} if args.lr is None and args.optimizer != "sgd" else {"lr": args.lr or sgd_lr}
    optimizer = make_optimizer(args.optimizer, params)
    hyper = ", ".join(f"{k} {v:g}" for k, v in optimizer.hyperparameters().items())
    say(f"net: {net!r}")
    say(f"training: {x.shape[0]} samples, {optimizer.kind} ({hyper}), batch {min(args.batch_size, x.shape[0])}, "
         f"{epochs} epoch(s), {args.sampling} sampling, seed {seed}")
    progress = not args.no_progress and sys.stderr.isatty()
    compile_note(backend)
    thread_tip(args.net, backend)
    trainer = Trainer(net, x, t, xt, tt, epochs=epochs, mini_batch_size=args.batch_size, optimizer=optimizer,
                      evaluate_sample_num_per_epoch=args.eval_samples, sampling=args.sampling, seed=seed,
                      progress=progress, verbose="epochs")
    start = time.perf_counter()
    try:
        history = trainer.train()
    except KeyboardInterrupt:
        if args.save:
            say(f"not saved: {args.save} (training was interrupted)")
        raise
    total = time.perf_counter() - start
    line = f"done in {total:.1f} s: train acc {history.train_acc[-1]:.4f}, test acc {history.test_acc[-1]:.4f}"
    say(line + f" (training {sum(history.seconds):.1f} s on {backend.name})")
    sample = slice(0, min(len(x), 10_000))  # enough to tell a saturated net from a learning one
    final_loss = float(net.loss(backend.asarray(x[sample], dtype=net.dtype), backend.asarray(t[sample])))
    status = collapsed(history, n_out, optimizer, final_loss)
    if args.save:
        from .io import save_params

        say(f"saved parameters to {save_params(args.save, net)}")
    if args.plot:
        from .plot import plot_history

        title = f"{type(net).__name__} on {name}, {optimizer.kind}, backend {backend.name}"
        say(f"saved plot to {plot_history(history, args.plot, title=title)}")
    return status


def thread_tip(net_name: str, backend: Any) -> None:
    """How to let a conv net's numba kernels use every core, when this process does not."""
    if net_name not in CONV_NETS or backend.name != "numba":
        return
    from .backend import loops

    if loops.cores_free_between_products():
        return
    say("tip: conv nets train about 1.25-1.4x faster on numba when started as "
        "OPENBLAS_THREAD_TIMEOUT=4 OMP_WAIT_POLICY=passive fastnet train ... (see docs/numba.md)")


# The book's cross-entropy adds 1e-7 inside the log, so no loss exceeds -log(1e-7) ~ 16.1.
CEILING = -math.log(1e-7)


def collapsed(history: Any, n_classes: int, optimizer: Any, final_loss: float) -> int:
    """EXIT_FAIL, with an error on stderr, when training ended no better than guessing (the net and
    plot are still saved, for a look at what went wrong).

    `final_loss` is the trained net's loss on (part of) the training data. At
    chance accuracy, a loss above half the ceiling means the net puts under
    e^-8 on the right class on average: its scores have blown up, which one
    epoch is enough to see. A loss that did not fall over several epochs means
    it learned nothing; after one epoch that may still be a slow start.
    """
    chance = 1.0 / n_classes
    acc, first, last = history.train_acc[-1], history.train_loss[0], history.train_loss[-1]
    if acc > 1.5 * chance:
        return 0
    saturated = final_loss > CEILING / 2
    stuck = len(history.epoch) >= 2 and last >= first
    if not (saturated or stuck):
        return 0
    if saturated or last > 1.5 * math.log(n_classes):
        what = (f"training collapsed: the trained net's loss {final_loss:.3f} is far above a uniform "
                f"guess's {math.log(n_classes):.3f}")
        fix = "is probably too high"
    else:
        what = f"training learned nothing: the loss did not fall ({first:.3f} -> {last:.3f})"
        fix = "may be too low (or train longer)"
    print(f"fastnet train: error: {what} and train accuracy {acc:.4f} is chance level ({chance:.2f}); "
          f"the learning rate ({optimizer.lr:g}) {fix}", file=sys.stderr)
    return EXIT_FAIL
