"""``fastnet tune``: the book's hyper-parameter search on a dask cluster."""

from __future__ import annotations

import argparse
import time
from typing import Any

from .cli_common import add_common, check_output, fresh_seed, pick_dataset, positive_int, resolve_backend, say, sizes

__all__ = ["add_parser", "cmd_tune"]

BOOK_HIDDEN = [100] * 6  # the book's search net: six hidden layers of 100


def _range(text: str) -> tuple[float, float]:
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH such as 1e-6,1e-2, got {text!r}") from None
    if not 0 < lo <= hi < float("inf"):
        raise argparse.ArgumentTypeError(f"expected 0 < LOW <= HIGH, got {text!r}")
    return lo, hi


def _optimizers(text: str) -> list[str]:
    from .optimizers import OPTIMIZERS

    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(map(repr, unknown)) or 'empty list'}; choose from {', '.join(OPTIMIZERS)}"
        )
    return names


def add_parser(sub: Any) -> None:
    """Register ``tune`` on the main parser's subcommands."""
    from .optimizers import OPTIMIZERS

    tune = sub.add_parser(
        "tune",
        help="random search of learning rate and weight decay (needs fastnet[distributed])",
        description="The book's ch.6 hyper-parameter search: short training runs with log-uniform "
        "learning rates and weight decays, validated on a split of the training data, run on dask.",
    )
    add_common(tune)
    tune.add_argument("--trials", type=positive_int, default=32, help="(default: 32)")
    tune.add_argument("--epochs", type=positive_int,
                      help="epochs per trial (default: 50 as the book on MNIST, 300 on spiral)")
    tune.add_argument("--dataset", choices=("auto", "mnist", "spiral"), default="auto",
                      help="auto: MNIST when present or downloadable, else spiral (default: auto)")
    tune.add_argument("--train-size", type=positive_int, metavar="N",
                      help="training samples to search on (default: 500 of MNIST, as the book)")
    tune.add_argument("--hidden", type=sizes, metavar="SIZES",
                      help="hidden layer sizes (default: 100 x 6 on MNIST as the book, 64 on spiral)")
    tune.add_argument("--lr-range", type=_range, metavar="LOW,HIGH",
                      help="log-uniform learning rates (default: 1e-6,1e-2 as the book on MNIST; 1e-3,3 on spiral)")
    tune.add_argument("--decay-range", type=_range, default=(1e-8, 1e-4), metavar="LOW,HIGH",
                      help="log-uniform weight decays (default: 1e-8,1e-4 as the book)")
    tune.add_argument("--optimizers", type=_optimizers, default=["sgd"], metavar="NAMES",
                      help=f"comma-separated choices among {', '.join(OPTIMIZERS)} (default: sgd)")
    tune.add_argument("--batch-sizes", type=sizes, default=[100], metavar="SIZES",
                      help="comma-separated choices (default: 100)")
    tune.add_argument("--scheduler", metavar="ADDRESS",
                      help="dask scheduler, e.g. tcp://host:8786 (default: FASTNET_SCHEDULER, else a local cluster)")
    tune.add_argument("--workers", type=positive_int, metavar="N",
                      help="workers of the local cluster (default: one per core)")
    tune.add_argument("--top", type=positive_int, default=10, help="rows to print (default: 10)")
    tune.add_argument("--plot", metavar="PATH", help="save the best trials' accuracy curves to this PNG")
    tune.add_argument("--no-progress", action="store_true", help="no progress bar")
    tune.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    """Run the search and print the best trials."""
    from . import (  # raises ImportError naming the extra when dask is missing
        distributed,
        tune,
    )
    from .datasets import spiral_data

    names = args.optimizers

    if args.plot:
        from .plot import check_image_path

        check_image_path(args.plot)
    check_output(args.plot, "--plot")
    seed = fresh_seed(args)
    backend = resolve_backend(args)
    name, data, note = pick_dataset(args, "spiral")
    if name == "mnist":
        (x, t), _ = data  # the test set is never used by the search
        x, t = x[: args.train_size or 500], t[: args.train_size or 500]
        hidden = args.hidden or BOOK_HIDDEN
        args.epochs = args.epochs or 50  # the book: 50 epochs of 4 steps
        args.lr_range = args.lr_range or (1e-6, 1e-2)
    else:
        x, t = spiral_data(100, 3, seed=seed)
        x, t = x[: args.train_size or len(x)], t[: args.train_size or len(t)]
        hidden = args.hidden or [64]
        args.epochs = args.epochs or 300  # 2 steps an epoch: spiral needs ~600 steps to separate
        args.lr_range = args.lr_range or (1e-3, 3.0)
    if not args.debug:  # dask logs port clashes and shutdowns at WARNING: noise on a terminal
        import logging

        logging.getLogger("distributed").setLevel(logging.ERROR)
    client = distributed.client(args.scheduler, args.workers)
    try:
        return _search(args, client, backend, tune, note, x, t, seed, hidden, names)
    finally:
        client.close()
        distributed.shutdown()


def _search(args: argparse.Namespace, client: Any, backend: Any, tune: Any, note: str,
            x: Any, t: Any, seed: int, hidden: list[int], names: list[str]) -> int:
    import sys

    space = tune.SearchSpace(
        lr=args.lr_range, weight_decay=args.decay_range, optimizers=tuple(names),
        hidden_sizes=(tuple(hidden),), batch_sizes=tuple(args.batch_sizes),
    )
    workers = len(client.scheduler_info().get("workers", {}))
    say(f"dataset: {note}; searching on {len(x)} training samples (20% held out for validation)")
    say(f"{args.trials} trials x {args.epochs} epoch(s) on {workers} worker(s) at "
        f"{client.scheduler.address}, backend {backend.name}, seed {seed}")
    start = time.perf_counter()
    trials = tune.random_search(
        x, t, trials=args.trials, epochs=args.epochs, space=space, seed=seed, backend=backend.name,
        dtype=args.dtype, client=client, train_size=None, progress=not args.no_progress and sys.stderr.isatty(),
    )
    say(f"done in {time.perf_counter() - start:.1f} s; best first:")
    say(tune.format_table(trials, args.top))
    failed = sum(tr.error is not None for tr in trials)
    if failed:
        say(f"{failed} trial(s) failed; their errors are in the table")
    if args.plot:
        say(f"saved plot to {tune.plot_trials(trials, args.plot)}")
    return 0
