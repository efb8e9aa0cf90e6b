"""The ``fastnet`` command: train, gradcheck, tune, bench, info.

Every failure a user can cause (a bad argument, a missing data set, an
unavailable backend, a diverging run) ends with a one-line message, a usage
hint and a non-zero exit status; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main", "build_parser"]

EXIT_FAIL = 1  # an error, or a gradient check that failed
EXIT_USAGE = 2  # bad arguments (argparse's convention)


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line and a hint instead of the whole usage block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}  # subcommand parsers, on the main one

    def error(self, message: str) -> None:  # type: ignore[override]
        _one_line_usage_error(self.prog, message)

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        """Unknown options are reported by the subcommand they were given to."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            owner = self.commands.get(getattr(parsed, "command", None) or "", self)
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def _one_line_usage_error(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}\n(see '{prog} --help' for usage)", file=sys.stderr)
    sys.exit(EXIT_USAGE)


# ----------------------------------------------------------------- arg types
def _number_type(convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
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


_INF = float("inf")
_positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
_positive_float = _number_type(float, lambda v: 0 < v < _INF, "a positive number")
_fraction = _number_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
_non_negative_float = _number_type(float, lambda v: 0 <= v < _INF, "a number >= 0")


def _sizes(text: str) -> list[int]:
    """'100' or '100,100' (spaces allowed) -> [100] or [100, 100]."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise argparse.ArgumentTypeError("expected layer sizes such as 50 or 100,100")
    return [_positive_int(p) for p in parts]


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer seed >= 0, got {value}")
    return value


def _weight_init(text: str) -> str | float:
    if text.lower() in ("relu", "he", "sigmoid", "xavier"):
        return text.lower()
    return _non_negative_float(text)


# -------------------------------------------------------------------- parser
def _add_common(p: argparse.ArgumentParser) -> None:
    from .backend import BACKEND_NAMES

    p.add_argument("--backend", choices=BACKEND_NAMES,
                   help="backend to run on (default: FASTNET_BACKEND, else auto: cupy with a GPU, else numba, else numpy)")
    p.add_argument("--dtype", choices=("float32", "float64"), help="float type (default: the backend's)")
    p.add_argument("--seed", type=_seed, help="random seed (default: 0 on the spiral data, else a fresh one; always printed)")
    p.add_argument("--data-dir", metavar="DIR", help="folder with the MNIST files (default: FASTNET_DATA or the user cache)")
    p.add_argument("--debug", action="store_true", help="show the traceback on errors")


def _add_net(p: argparse.ArgumentParser, hidden_help: str) -> None:
    from .activations import ACTIVATIONS

    p.add_argument("--net", choices=("two", "multi"), default="two",
                   help="two: the book's TwoLayerNet; multi: MultiLayerNet (default: two)")
    p.add_argument("--hidden", type=_sizes, metavar="SIZES", help=hidden_help)
    p.add_argument("--activation", choices=tuple(ACTIVATIONS), default="relu", help="(default: relu)")
    p.add_argument("--weight-init", type=_weight_init, metavar="STD",
                   help="relu/he, sigmoid/xavier or a number (default: the activation's; 0.01 for two on MNIST, as the book)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.0, metavar="LAMBDA",
                   help="L2 weight decay, multi only (default: 0)")
    p.add_argument("--batchnorm", action="store_true", help="batch normalisation, multi only")


def build_parser() -> argparse.ArgumentParser:
    """The ``fastnet`` argument parser (subcommands train, gradcheck, bench, info)."""
    from . import __version__
    from .optimizers import OPTIMIZERS

    parser = _Parser(
        prog="fastnet",
        description="The neural network of 'Deep Learning from Scratch' on NumPy, Numba or CuPy.",
        epilog="Run 'fastnet COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"fastnet {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = sub.add_parser("train", help="train a net on MNIST or the spiral data",
                           description="Train a net and report accuracy after each epoch.")
    _add_common(train)
    train.add_argument("--dataset", choices=("auto", "mnist", "spiral"), default="auto",
                       help="auto: MNIST when present or downloadable, else spiral (default: auto)")
    _add_net(train, "hidden layer sizes, e.g. 50 or 100,100 (default: 50 for MNIST, 64 for spiral)")
    train.add_argument("--dropout", type=_fraction, metavar="RATIO", help="dropout ratio, multi only")
    train.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="sgd", help="(default: sgd)")
    train.add_argument("--lr", type=_positive_float, help="learning rate (default for sgd: 0.1 on MNIST, 1.0 on spiral; others: the optimizer's)")
    train.add_argument("--epochs", type=_positive_int, help="(default: 5 for MNIST, 1000 for spiral)")
    train.add_argument("--batch-size", type=_positive_int, default=100, help="(default: 100)")
    train.add_argument("--sampling", choices=("shuffle", "replacement"), default="shuffle",
                       help="shuffle each epoch, or draw batches with replacement as the book does")
    train.add_argument("--train-size", type=_positive_int, metavar="N", help="use only the first N training samples")
    train.add_argument("--eval-samples", type=_positive_int, metavar="N",
                       help="measure accuracy on the first N samples of each set (default: all)")
    train.add_argument("--samples", type=_positive_int, default=100, help="spiral points per class (default: 100)")
    train.add_argument("--plot", metavar="PATH", help="save the loss and accuracy curves to this PNG")
    train.add_argument("--save", metavar="PATH", help="save the trained parameters to this .npz")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    grad = sub.add_parser("gradcheck", help="compare backprop with the numerical gradient",
                          description="The book's gradient_check.py: numerical vs backprop gradient, "
                                      "mean absolute difference per parameter.")
    _add_common(grad)
    grad.add_argument("--dataset", choices=("auto", "mnist", "random"), default="auto",
                      help="auto: MNIST when present, else random inputs (default: auto)")
    _add_net(grad, "hidden layer sizes (default: 50, as the book)")
    grad.add_argument("--samples", type=_positive_int, default=3, help="batch size (default: 3, as the book)")
    grad.add_argument("--tol", type=_positive_float, default=1e-6,
                      help="largest mean |difference| that passes (default: 1e-6)")
    grad.set_defaults(func=cmd_gradcheck)

    from .cli_tune import add_parser as add_tune

    add_tune(sub, _add_common, {"positive_int": _positive_int, "sizes": _sizes})
    tune = sub.choices["tune"]
    tune.set_defaults(func=lambda args: _tune(args))

    bench = sub.add_parser("bench", help="run the benchmarks (options go to fastnet.benchreport)", add_help=False)
    bench.set_defaults(func=None)

    info = sub.add_parser("info", help="version, backends, device and thread counts")
    info.add_argument("--debug", action="store_true", help="show the traceback on errors")
    info.set_defaults(func=cmd_info)
    parser.commands = dict(sub.choices)
    return parser


# ------------------------------------------------------------------- helpers
def _say(*parts: Any) -> None:
    print(*parts, flush=True)


def _backend(args: argparse.Namespace) -> Any:
    from .backend import get_backend
    from .backend import lookup as resolve

    if args.backend is None:  # FASTNET_BACKEND when set, else the fastest backend that works here
        return get_backend() if os.environ.get("FASTNET_BACKEND", "").strip() else resolve("auto")
    return resolve(args.backend)


def _fresh_seed(args: argparse.Namespace) -> int:
    return args.seed if args.seed is not None else secrets.randbelow(2**31)


def _load_mnist(args: argparse.Namespace, download: bool) -> Any:
    from .datasets import load_mnist

    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise FileNotFoundError(f"--data-dir {args.data_dir}: no such folder (create it first to download MNIST there)")

    from .errors import DatasetError

    try:
        return load_mnist(normalize=True, flatten=True, one_hot_label=False, data_dir=args.data_dir, download=download)
    except DatasetError as exc:
        if download or "data files missing" not in str(exc):
            raise
        # the loader's message speaks of download=False, a Python argument: say it in CLI words
        why = "FASTNET_OFFLINE is set" if _offline() else "downloading is off"
        files = str(exc).split(". Looked in")[0]  # "data files missing: ..."
        raise DatasetError(
            f"{files}: MNIST is not in {_mnist_location(args)} and {why}: copy the four IDX .gz files there, "
            f"point FASTNET_DATA or --data-dir at a folder that holds them, or unset FASTNET_OFFLINE"
        ) from None


def _mnist_location(args: argparse.Namespace) -> str:
    """Where the loader looks: the data folder, then the user cache."""
    from .datasets import _files
    from .datasets.mnist import default_data_dir

    places = [str(args.data_dir or default_data_dir()), str(_files.user_cache_dir() / "mnist")]
    return " or ".join(dict.fromkeys(places))


def _offline() -> bool:
    return os.environ.get("FASTNET_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _pick_dataset(args: argparse.Namespace, fallback: str) -> tuple[str, Any, str]:
    """('mnist'|fallback, data or None, one line saying what was chosen and why)."""
    from .datasets import mnist_available
    from .errors import DatasetError, DownloadError

    if args.dataset == "mnist":
        return "mnist", _load_mnist(args, download=not _offline()), "MNIST"
    if args.dataset != "auto":
        return args.dataset, None, args.dataset
    if mnist_available(args.data_dir):
        return "mnist", _load_mnist(args, download=False), "MNIST (found locally)"
    where = _mnist_location(args)
    if _offline():
        return fallback, None, (f"{fallback} (MNIST is not in {where} and FASTNET_OFFLINE is set; point "
                                f"FASTNET_DATA or --data-dir at a folder with the IDX .gz files)")
    try:
        data = _load_mnist(args, download=True)
    except (DownloadError, DatasetError, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__  # whole, with its FASTNET_DATA hint
        return fallback, None, (f"{fallback} (MNIST is not in {where} and downloading it failed: {reason}; "
                                f"point FASTNET_DATA or --data-dir at a folder with the IDX .gz files)")
    return "mnist", data, "MNIST (downloaded)"


def _check_net_args(args: argparse.Namespace) -> None:
    """Refuse option mixes the chosen net cannot take, before any data is loaded."""
    if args.net != "two":
        return
    multi_only = [name for name, given in (
        ("--weight-decay", args.weight_decay), ("--batchnorm", args.batchnorm),
        ("--dropout", getattr(args, "dropout", None) is not None),
    ) if given]
    if multi_only:
        raise ValueError(f"{', '.join(multi_only)} need(s) --net multi")
    if args.hidden is not None and len(args.hidden) != 1:
        raise ValueError(f"--net two has one hidden layer, got --hidden {','.join(map(str, args.hidden))}; use --net multi")


def _make_net(args: argparse.Namespace, n_in: int, n_out: int, hidden: list[int], seed: int, backend: Any) -> Any:
    from .nets import MultiLayerNet, TwoLayerNet

    _check_net_args(args)
    if args.net == "two":
        std = 0.01 if args.weight_init is None else args.weight_init
        if isinstance(std, str):
            std = (2.0 if std in ("relu", "he") else 1.0) ** 0.5 / n_in**0.5
        return TwoLayerNet(n_in, hidden[0], n_out, weight_init_std=std, activation=args.activation,
                           seed=seed, dtype=args.dtype, backend=backend)
    dropout = getattr(args, "dropout", None)
    return MultiLayerNet(
        n_in, hidden, n_out, activation=args.activation,
        weight_init_std=args.activation if args.weight_init is None else args.weight_init,
        weight_decay_lambda=args.weight_decay, use_dropout=dropout is not None,
        dropout_ration=dropout or 0.5, use_batchnorm=args.batchnorm,
        seed=seed, dtype=args.dtype, backend=backend,
    )


def _arch(net: Any) -> str:
    return repr(net)


def _check_output(path: str | None, what: str) -> None:
    """Fail before training, not after, when an output cannot be written."""
    if path is None:
        return
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path}: is a folder; give a file name inside it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{what} {path}: folder {folder} is not writable")


# ------------------------------------------------------------------ commands
def cmd_train(args: argparse.Namespace) -> int:
    from .datasets import spiral_data
    from .optimizers import make_optimizer
    from .train import Trainer

    if args.plot:
        from .plot import check_image_path

        check_image_path(args.plot)  # no matplotlib, or no image format: say so now, not after training
    _check_output(args.plot, "--plot")
    _check_output(args.save, "--save")
    _check_net_args(args)
    backend = _backend(args)
    seed = _fresh_seed(args)
    name, data, note = _pick_dataset(args, "spiral")
    _say(f"dataset: {note}" + (f", {len(data[0][0])} train / {len(data[1][0])} test images" if data else ""))
    if name == "mnist":
        (x, t), (xt, tt) = data
        hidden, epochs, n_out = args.hidden or [50], args.epochs or 5, 10
    else:
        if args.seed is None:  # the fallback demo gives the same numbers every run
            seed = 0
        x, t = spiral_data(args.samples, 3, seed=seed)
        xt, tt = spiral_data(args.samples, 3, seed=seed + 1)
        hidden, epochs, n_out = args.hidden or [64], args.epochs or 1000, 3
        if args.weight_init is None:  # 0.01 is too small to get going on 2 inputs
            args.weight_init = args.activation
    if args.train_size is not None:
        x, t = x[: args.train_size], t[: args.train_size]
    net = _make_net(args, x.shape[1], n_out, hidden, seed, backend)
    sgd_lr = 0.1 if name == "mnist" else 1.0
    params = {} if args.lr is None and args.optimizer != "sgd" else {"lr": args.lr or sgd_lr}
    optimizer = make_optimizer(args.optimizer, params)
    hyper = ", ".join(f"{k} {v:g}" for k, v in optimizer.hyperparameters().items())
    _say(f"net: {_arch(net)}")
    _say(f"training: {x.shape[0]} samples, {optimizer.kind} ({hyper}), batch {args.batch_size}, "
         f"{epochs} epoch(s), {args.sampling} sampling, seed {seed}")
    progress = not args.no_progress and sys.stderr.isatty()
    _compile_note(backend)
    trainer = Trainer(net, x, t, xt, tt, epochs=epochs, mini_batch_size=args.batch_size, optimizer=optimizer,
                      evaluate_sample_num_per_epoch=args.eval_samples, sampling=args.sampling, seed=seed,
                      progress=progress, verbose="epochs")
    start = time.perf_counter()
    history = trainer.train()
    total = time.perf_counter() - start
    line = f"done in {total:.1f} s: train acc {history.train_acc[-1]:.4f}, test acc {history.test_acc[-1]:.4f}"
    _say(line + f" (training {sum(history.seconds):.1f} s on {backend.name})")
    status = _collapsed(history, n_out, optimizer)
    if args.save:
        from .io import save_params

        _say(f"saved parameters to {save_params(args.save, net)}")
    if args.plot:
        from .plot import plot_history

        title = f"{type(net).__name__} on {name}, {optimizer.kind}, backend {backend.name}"
        _say(f"saved plot to {plot_history(history, args.plot, title=title)}")
    return status


def _compile_note(backend: Any) -> None:
    if backend.name == "numba":
        _say("note: numba compiles its kernels on first use (seconds), then loads them from its disk cache")


def _collapsed(history: Any, n_classes: int, optimizer: Any) -> int:
    """EXIT_FAIL, with a warning on stderr, when training ended no better than guessing."""
    chance = 1.0 / n_classes
    if len(history.epoch) < 2 or history.train_acc[-1] > 1.5 * chance or history.train_loss[-1] < history.train_loss[0]:
        return 0  # one epoch cannot tell a slow start from a collapse
    import math

    # far above a uniform guess's loss, log(K): blown up; near it: barely moved
    blown = history.train_loss[-1] > 1.5 * math.log(n_classes)
    what, fix = ("collapsed", "is probably too high") if blown else ("learned nothing", "may be too low (or train longer)")
    print(f"fastnet train: warning: training {what}: train accuracy {history.train_acc[-1]:.4f} is "
          f"chance level ({chance:.2f}) and the loss did not fall ({history.train_loss[0]:.3f} -> "
          f"{history.train_loss[-1]:.3f}); the learning rate ({optimizer.lr:g}) {fix}", file=sys.stderr)
    return EXIT_FAIL


def cmd_gradcheck(args: argparse.Namespace) -> int:
    import numpy

    _check_net_args(args)
    backend = _backend(args)
    if args.dtype is None:
        args.dtype = "float64"  # central differences in float32 have no correct digits
    seed = _fresh_seed(args)
    rng = numpy.random.default_rng(seed)
    name = "random"
    if args.dataset in ("auto", "mnist"):
        from .datasets import mnist_available

        if args.dataset == "mnist" or mnist_available(args.data_dir):
            (x_all, t_all), _ = _load_mnist(args, download=args.dataset == "mnist" and not _offline())
            if args.samples > x_all.shape[0]:
                raise ValueError(f"--samples {args.samples}: MNIST has only {x_all.shape[0]} training images")
            pick = rng.choice(x_all.shape[0], args.samples, replace=False) if args.seed is not None else slice(0, args.samples)
            x, t, name = x_all[pick], t_all[pick], "MNIST"
    if name == "random":
        x, t = rng.random((args.samples, 784)), rng.integers(0, 10, args.samples)
    net = _make_net(args, 784, 10, args.hidden or [50], seed, backend)
    if args.dtype == "float32":
        _say("note: float32 central differences (h=1e-4) are too coarse to agree closely; use float64")
    n_params = sum(int(p.size) for p in net.params.values())
    _compile_note(backend)
    _say(f"net: {_arch(net)}, {n_params} parameters; {args.samples} {name} sample(s), seed {seed}")
    xs, ts = backend.asarray(x, dtype=net.dtype), backend.asarray(t.astype(numpy.int64))
    start = time.perf_counter()
    numerical = net.numerical_gradient(xs, ts)
    mid = time.perf_counter()
    backprop = net.gradient(xs, ts)
    end = time.perf_counter()
    from ._kinks import away_from_kinks, kink_units

    kinks = kink_units(net, xs) or {}
    failed, at_kinks = [], []
    _say(f"{'param':<8}{'shape':>12}  {'mean |diff|':>12}  {'max |diff|':>12}")
    for key in net.params:
        diff = numpy.abs(backend.to_numpy(backprop[key]) - backend.to_numpy(numerical[key]))
        mean, worst = float(diff.mean()), float(diff.max())
        ok = mean <= args.tol and numpy.isfinite(mean)
        verdict = "ok"
        if not ok:
            rest = away_from_kinks(key, diff, kinks)
            if rest is not None and (rest.size == 0 or float(rest.mean()) <= args.tol):
                verdict = "ok away from kinks"  # only entries that feed a kink disagree
                at_kinks.append(key)
            else:
                verdict = "FAIL"
                failed.append(key)
        shape = "x".join(map(str, net.params[key].shape))
        _say(f"{key:<8}{shape:>12}  {mean:12.3e}  {worst:12.3e}  {verdict}")
    _say(f"numerical gradient {mid - start:.2f} s, backprop {(end - mid) * 1e3:.2f} ms on {backend.name}")
    if at_kinks:
        units = ", ".join(f"layer {i}: {len(u)} unit(s)" for i, u in kinks.items() if len(u))
        _say(f"kinks: some samples put ReLU inputs within h=1e-4 of 0 ({units}). There ReLU has no slope, "
             f"so the central difference averages two slopes and differs from backprop although both are "
             f"right; {', '.join(at_kinks)} agree within --tol once those units are left out")
    if failed:
        _say(f"FAILED: mean |diff| above {args.tol:g} for {', '.join(failed)}")
        return EXIT_FAIL
    _say(f"passed: every mean |diff| <= {args.tol:g}" + (" (away from ReLU kinks)" if at_kinks else ""))
    return 0


def _tune(args: argparse.Namespace) -> int:
    from .cli_tune import cmd_tune

    helpers = {"say": _say, "fresh_seed": _fresh_seed, "backend": _backend,
               "pick_dataset": _pick_dataset, "check_output": _check_output}
    return cmd_tune(args, helpers)


def cmd_bench(argv: list[str]) -> int:
    import importlib

    try:
        benchreport = importlib.import_module("fastnet.benchreport")
    except ModuleNotFoundError as exc:
        if exc.name != "fastnet.benchreport":
            raise
        print("fastnet bench: the benchmark report (fastnet.benchreport) is not part of this install yet; "
              "run the suite directly with: python -m pytest benchmarks", file=sys.stderr)
        return EXIT_FAIL
    make_parser = getattr(benchreport, "_parser", None)
    if make_parser is not None:  # check the options first, so a typo is one line, not the usage block
        bench_parser = make_parser()
        bench_parser.error = lambda message: _one_line_usage_error(bench_parser.prog, message)  # type: ignore[method-assign]
        try:
            bench_parser.parse_args(argv)
        except SystemExit as stop:  # a usage error (already printed) or --help
            return int(stop.code or 0) if not isinstance(stop.code, str) else EXIT_USAGE
    return int(benchreport.main(argv) or 0)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cmd_info(args: argparse.Namespace) -> int:
    import numpy

    from . import __version__
    from .backend import available_backends, get_backend

    _say(f"fastnet {__version__} (Python {platform.python_version()}, NumPy {numpy.__version__})")
    try:
        current = get_backend().name
    except Exception as exc:  # a bad FASTNET_BACKEND should not hide the rest
        current = f"none ({exc})"
    _say(f"default backend: {current} (FASTNET_BACKEND={os.environ.get('FASTNET_BACKEND', '') or 'unset'})")
    _say("backends:")
    statuses = available_backends()
    for status in statuses.values():
        _say(f"  {status.name:<6} {'available' if status.available else 'unavailable: ' + status.reason}")
    _say(f"CPU: {_cpu_model()}, {os.cpu_count()} logical core(s)")
    if statuses["cupy"].available:
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            _say(f"GPU: {gpu}, {props['totalGlobalMem'] / 2**30:.0f} GiB, CuPy {cupy.__version__}, "
                 f"CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}")
        except Exception as exc:
            _say(f"GPU: could not query the device ({exc})")
    else:
        _say("GPU: none usable")
    _say("threads:")
    try:
        import numba

        _say(f"  numba {numba.__version__}: {numba.get_num_threads()} thread(s) "
             f"(NUMBA_NUM_THREADS={getattr(numba.config, 'NUMBA_NUM_THREADS', '?')})")
    except ImportError:
        _say("  numba: not installed")
    try:
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, the one numba's np.dot uses)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        _say("  BLAS: unknown (install threadpoolctl to see it)")
    else:
        for pool in threadpool_info():
            lib = " ".join(str(v) for v in (pool.get("internal_api"), pool.get("version")) if v)
            where = os.path.basename(os.path.dirname(pool.get("filepath", ""))) or "?"
            _say(f"  {pool.get('user_api')}: {lib}, {pool.get('num_threads')} thread(s) (from {where})")
    return 0


# ---------------------------------------------------------------------- main
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 1000 else text[:997] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    rest = [a for a in argv if a != "--debug"]
    if rest and rest[0] == "bench":  # everything after goes to the benchmark report untouched
        return _guard(lambda: cmd_bench(rest[1:]), "bench", debug)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error already printed
        return int(stop.code or 0) if not isinstance(stop.code, str) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    return _guard(lambda: args.func(args), args.command, debug)


def _guard(run: Callable[[], int], command: str, debug: bool) -> int:
    try:
        return run()
    except KeyboardInterrupt:
        print(f"fastnet {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`fastnet info | head -1`): nothing to report
        try:  # as the Python docs advise: stop the final flush of stdout from failing again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_FAIL
    except Exception as exc:  # a user-facing command: a message, not a traceback
        if debug:
            import traceback

            traceback.print_exc()
        print(f"fastnet {command}: error: {_one_line(exc)}", file=sys.stderr)
        print(f"(see 'fastnet {command} --help' for usage" + ("" if debug else "; --debug shows the traceback") + ")",
              file=sys.stderr)
        return EXIT_FAIL
