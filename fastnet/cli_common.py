"""Pieces the ``fastnet`` subcommands share: the parser class, argument types,
options, backend and data selection, net construction and output checks.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from typing import Any

EXIT_FAIL = 1  # an error, a failed gradient check or a collapsed run
EXIT_USAGE = 2  # bad arguments (argparse's convention)


class UsageError(ValueError):
    """Options that each parse but do not go together: exits with EXIT_USAGE, as argparse's errors do."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line and a hint instead of the whole usage block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}  # subcommand parsers, on the main one

    def error(self, message: str) -> None:  # type: ignore[override]
        one_line_usage_error(self.prog, message)

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        """Unknown options are reported by the subcommand they were given to."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            owner = self.commands.get(getattr(parsed, "command", None) or "", self)
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def one_line_usage_error(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}\n(see '{prog} --help' for usage)", file=sys.stderr)
    sys.exit(EXIT_USAGE)


# ----------------------------------------------------------------- arg types
def number_type(convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: `convert` the text, then refuse values `ok` rejects."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


INF = float("inf")
positive_int = number_type(int, lambda v: v >= 1, "a positive integer")
positive_float = number_type(float, lambda v: 0 < v < INF, "a positive number")
fraction = number_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
non_negative_float = number_type(float, lambda v: 0 <= v < INF, "a number >= 0")


def sizes(text: str) -> list[int]:
    """'100' or '100,100' (spaces allowed) -> [100] or [100, 100]."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise argparse.ArgumentTypeError("expected layer sizes such as 50 or 100,100")
    return [positive_int(p) for p in parts]


def seed_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer seed >= 0, got {value}")
    return value


def weight_init(text: str) -> str | float:
    if text.lower() in ("relu", "he", "sigmoid", "xavier"):
        return text.lower()
    return non_negative_float(text)


# -------------------------------------------------------------------- parser
def add_common(p: argparse.ArgumentParser) -> None:
    from .backend import BACKEND_NAMES

    p.add_argument("--backend", choices=BACKEND_NAMES,
                   help="backend to run on (default: FASTNET_BACKEND, else auto: cupy with a GPU, else numba, else numpy)")
    p.add_argument("--dtype", choices=("float32", "float64"), help="float type (default: the backend's: float64, float32 on cupy)")
    p.add_argument("--seed", type=seed_arg, help="random seed (default: a fresh one, printed; fastnet train on the spiral data: 0)")
    p.add_argument("--data-dir", metavar="DIR", help="folder with the MNIST files (default: FASTNET_DATA or the user cache)")
    p.add_argument("--debug", action="store_true", help="show the traceback on errors")


def add_net(p: argparse.ArgumentParser, hidden_help: str) -> None:
    from .activations import ACTIVATIONS

    p.add_argument("--net", choices=NET_CHOICES, default="two",
                   help="two: the book's TwoLayerNet; multi: MultiLayerNet; simple-conv / deep-conv: "
                        "the ch.7 / ch.8 convolutional nets, on MNIST (default: two)")
    p.add_argument("--hidden", type=sizes, metavar="SIZES", help=hidden_help)
    p.add_argument("--activation", choices=tuple(ACTIVATIONS), default="relu", help="(default: relu)")
    p.add_argument("--weight-init", type=weight_init, metavar="STD",
                   help="relu/he, sigmoid/xavier or a number (default: he for relu, xavier for sigmoid and tanh; 0.01 for two on MNIST, as the "
                        "book); not for the conv nets, which keep the book's relu, weights and biases")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0, metavar="LAMBDA",
                   help="L2 weight decay, multi only (default: 0)")
    p.add_argument("--batchnorm", action="store_true", help="batch normalisation, multi only")


# ------------------------------------------------------------------- helpers
def say(*parts: Any) -> None:
    print(*parts, flush=True)


def resolve_backend(args: argparse.Namespace) -> Any:
    from .backend import get_backend
    from .backend import lookup as resolve

    if args.backend is None:  # FASTNET_BACKEND when set, else the fastest backend that works here
        return get_backend() if os.environ.get("FASTNET_BACKEND", "").strip() else resolve("auto")
    return resolve(args.backend)


def fresh_seed(args: argparse.Namespace) -> int:
    return args.seed if args.seed is not None else secrets.randbelow(2**31)


def load_mnist_or_explain(args: argparse.Namespace, download: bool) -> Any:
    from .datasets import load_mnist

    if args.data_dir is not None and os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
        raise NotADirectoryError(f"--data-dir {args.data_dir} is a file, not a folder: point it at the folder "
                                 "that holds the MNIST .gz files")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise FileNotFoundError(f"--data-dir {args.data_dir}: no such folder (create it first to download MNIST there)")

    from .errors import DatasetError

    try:
        return load_mnist(normalize=True, flatten=True, one_hot_label=False, data_dir=args.data_dir, download=download)
    except DatasetError as exc:
        if download or "data files missing" not in str(exc):
            raise
        # the loader's message speaks of download=False, a Python argument: say it in CLI words
        why = "FASTNET_OFFLINE is set" if offline() else "downloading is off"
        files = str(exc).split(". Looked in")[0]  # "data files missing: ..."
        raise DatasetError(
            f"{files}: MNIST is not in {mnist_location(args)} and {why}: copy the four IDX .gz files there, "
            f"point FASTNET_DATA or --data-dir at a folder that holds them, or unset FASTNET_OFFLINE"
        ) from None


def mnist_location(args: argparse.Namespace) -> str:
    """Where the loader looks: the data folder, then the user cache."""
    from .datasets import fileio
    from .datasets.mnist import default_data_dir

    places = [str(args.data_dir or default_data_dir()), str(fileio.user_cache_dir() / "mnist")]
    return " or ".join(dict.fromkeys(places))


def offline() -> bool:
    return os.environ.get("FASTNET_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def pick_dataset(args: argparse.Namespace, fallback: str) -> tuple[str, Any, str]:
    """('mnist'|fallback, data or None, one line saying what was chosen and why)."""
    from .datasets import mnist_available
    from .errors import DatasetError, DownloadError

    if args.dataset == "mnist":
        return "mnist", load_mnist_or_explain(args, download=not offline()), "MNIST"
    if args.dataset != "auto":
        return args.dataset, None, args.dataset
    if mnist_available(args.data_dir):
        return "mnist", load_mnist_or_explain(args, download=False), "MNIST (found locally)"
    where = mnist_location(args)
    if offline():
        return fallback, None, (f"{fallback} (MNIST is not in {where} and FASTNET_OFFLINE is set; point "
                                f"FASTNET_DATA or --data-dir at a folder with the IDX .gz files)")
    try:
        data = load_mnist_or_explain(args, download=True)
    except (DownloadError, DatasetError, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__  # whole, with its FASTNET_DATA hint
        return fallback, None, (f"{fallback} (MNIST is not in {where} and downloading it failed: {reason}; "
                                f"point FASTNET_DATA or --data-dir at a folder with the IDX .gz files)")
    return "mnist", data, "MNIST (downloaded)"


NET_CHOICES = ("two", "multi", "simple-conv", "deep-conv")
CONV_NETS = ("simple-conv", "deep-conv")


def check_net_args(args: argparse.Namespace) -> None:
    """Refuse option mixes the chosen net cannot take, before any data is loaded."""
    if args.net in CONV_NETS:
        fixed = [name for name, given in (
            ("--weight-decay", args.weight_decay), ("--batchnorm", args.batchnorm),
            ("--dropout", getattr(args, "dropout", None) is not None), ("--weight-init", args.weight_init is not None),
            ("--activation", args.activation != "relu"),
            ("--dataset spiral", getattr(args, "dataset", None) == "spiral"),
        ) if given]
        if fixed:
            raise UsageError(f"--net {args.net} is the book's fixed architecture (relu, MNIST images): "
                             f"it takes no {', '.join(fixed)}")
        if args.hidden is not None and len(args.hidden) != 1:
            raise UsageError(f"--net {args.net} has one dense hidden layer; give --hidden as one size")
        return
    if args.net != "two":
        return
    multi_only = [name for name, given in (
        ("--weight-decay", args.weight_decay), ("--batchnorm", args.batchnorm),
        ("--dropout", getattr(args, "dropout", None) is not None),
    ) if given]
    if multi_only:
        raise UsageError(f"{' and '.join(multi_only)} {'needs' if len(multi_only) == 1 else 'need'} --net multi")
    if args.hidden is not None and len(args.hidden) != 1:
        raise UsageError(f"--net two has one hidden layer, got --hidden {','.join(map(str, args.hidden))}; use --net multi")


def init_for(activation: str) -> str:
    """The weight initialisation named for an activation: He for ReLU, Xavier for sigmoid and tanh."""
    return "relu" if activation == "relu" else "xavier"


def make_net(args: argparse.Namespace, n_in: int, n_out: int, hidden: list[int], seed: int, backend: Any) -> Any:
    from .nets import MultiLayerNet, TwoLayerNet

    check_net_args(args)
    if args.net in CONV_NETS:
        from .convnets import DeepConvNet, SimpleConvNet

        if n_in != 784:
            raise ValueError(f"--net {args.net} needs 28x28 MNIST images, but the data has {n_in} features per sample")
        cls = SimpleConvNet if args.net == "simple-conv" else DeepConvNet
        size = {"hidden_size": hidden[0]} if args.hidden else {}
        return cls(input_dim=(1, 28, 28), output_size=n_out, **size, seed=seed, dtype=args.dtype, backend=backend)
    if args.net == "two":
        std = 0.01 if args.weight_init is None else args.weight_init
        if isinstance(std, str):
            std = (2.0 if std in ("relu", "he") else 1.0) ** 0.5 / n_in**0.5
        return TwoLayerNet(n_in, hidden[0], n_out, weight_init_std=std, activation=args.activation,
                           seed=seed, dtype=args.dtype, backend=backend)
    dropout = getattr(args, "dropout", None)
    return MultiLayerNet(
        n_in, hidden, n_out, activation=args.activation,
        weight_init_std=init_for(args.activation) if args.weight_init is None else args.weight_init,
        weight_decay_lambda=args.weight_decay, use_dropout=dropout is not None,
        dropout_ration=dropout or 0.5, use_batchnorm=args.batchnorm,
        seed=seed, dtype=args.dtype, backend=backend,
    )


def check_output(path: str | None, what: str) -> None:
    """Fail before training, not after, when an output cannot be written there."""
    if path is None:
        return
    if not path.strip():
        raise UsageError(f"{what} needs a file name, got an empty one")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path}: is a folder; give a file name inside it")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"{what} {path}: {folder} is a file, not a folder")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} {path}: folder {folder} does not exist")
    try:  # a real write: permission bits do not stop root, read-only or virtual file systems do
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise PermissionError(f"{what} {path}: cannot write in folder {folder} ({exc.strerror or exc})") from None


def check_outputs(**outputs: str | None) -> None:
    """check_output for each option, and no two options naming the same file (one would overwrite the other)."""
    seen: dict[str, str] = {}
    for option, path in outputs.items():
        what = "--" + option.replace("_", "-")
        check_output(path, what)
        if path is None:
            continue
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(f"{seen[real]} and {what} name the same file {path}: one would overwrite the other")
        seen[real] = what


def compile_note(backend: Any) -> None:
    if backend.name == "numba":
        say("note: numba compiles its kernels on first use (seconds), then loads them from its disk cache")
