"""The book's hyper-parameter search (ch.6), as dask tasks.

Each trial is a short training run with its own seed and a configuration
drawn up front from one seeded generator, so the trials and their numbers do
not depend on how many workers run them or in which order they finish.
Accuracy is measured on a validation split cut from the training data; the
test set is never looked at. Needs ``pip install 'fastnet[distributed]'``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import numpy

from .distributed import as_client, import_distributed

__all__ = ["SearchSpace", "Trial", "random_search", "plot_trials", "format_table"]


@dataclass(frozen=True)
class SearchSpace:
    """Where trials are drawn from.

    ``lr`` and ``weight_decay`` are log-uniform between their bounds (the
    book: 10**U(-6, -2) and 10**U(-8, -4)); the other fields are choices
    picked uniformly.
    """

    lr: tuple[float, float] = (1e-6, 1e-2)
    weight_decay: tuple[float, float] = (1e-8, 1e-4)
    optimizers: tuple[str, ...] = ("sgd",)
    hidden_sizes: tuple[tuple[int, ...], ...] = ((100, 100, 100, 100, 100, 100),)
    batch_sizes: tuple[int, ...] = (100,)
    activation: str = "relu"

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} bounds must satisfy 0 < low <= high, got {(lo, hi)}")
        for name in ("optimizers", "hidden_sizes", "batch_sizes"):
            if not getattr(self, name):
                raise ValueError(f"{name} must offer at least one choice")

    def draw(self, rng: numpy.random.Generator) -> dict[str, Any]:
        """One configuration; always consumes the generator the same way."""

        def log_uniform(bounds: tuple[float, float]) -> float:
            lo, hi = math.log10(bounds[0]), math.log10(bounds[1])
            return float(10 ** rng.uniform(lo, hi))

        return {
            "lr": log_uniform(self.lr),
            "weight_decay": log_uniform(self.weight_decay),
            "optimizer": self.optimizers[int(rng.integers(len(self.optimizers)))],
            "hidden_sizes": list(self.hidden_sizes[int(rng.integers(len(self.hidden_sizes)))]),
            "batch_size": int(self.batch_sizes[int(rng.integers(len(self.batch_sizes)))]),
            "activation": self.activation,
        }


@dataclass
class Trial:
    """One training run: its configuration, seed and what it reached."""

    index: int
    seed: int
    config: dict[str, Any]
    val_acc: float = float("nan")
    train_acc: float = float("nan")
    history: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run_trial(
    data: dict[str, Any], index: int, seed: int, config: dict[str, Any], epochs: int
) -> Trial:
    """On a worker: build the net, train it, report; errors go into the row."""
    from .backend import use_backend
    from .nets import MultiLayerNet
    from .train import Trainer

    trial = Trial(index=index, seed=seed, config=config)
    start = time.perf_counter()
    try:
        with use_backend(data["backend"]):
            net = MultiLayerNet(
                data["x_train"].shape[1],
                config["hidden_sizes"],
                data["n_classes"],
                activation=config["activation"],
                weight_decay_lambda=config["weight_decay"],
                seed=seed,
                dtype=data["dtype"],
            )
            trainer = Trainer(
                net,
                data["x_train"],
                data["t_train"],
                data["x_val"],
                data["t_val"],
                epochs=epochs,
                mini_batch_size=config["batch_size"],
                optimizer=config["optimizer"],
                optimizer_param={"lr": config["lr"]},
                seed=seed,
                progress=False,
                verbose=False,
            )
            history = trainer.train()
        trial.history = history.as_dict()
        trial.val_acc = float(history.test_acc[-1])
        trial.train_acc = float(history.train_acc[-1])
    except Exception as exc:  # reported in the trial's row, never fatal to the search
        trial.error = f"{type(exc).__name__}: {exc}"
        partial = getattr(exc, "history", None)
        if partial is not None:
            trial.history = partial.as_dict()
    trial.seconds = time.perf_counter() - start
    return trial


def _check_data(x: numpy.ndarray, t: numpy.ndarray) -> int:
    """Refuse a bad data set here, once, rather than in every trial; return the number of classes."""
    from .checks import targets
    from .backend import NumpyBackend

    if x.ndim != 2 or x.dtype.kind not in "biuf" or x.shape[0] == 0:
        raise ValueError(f"x_train must be numbers of shape (N, features), got {x.dtype} of shape {x.shape}")
    if not numpy.isfinite(x).all():
        raise ValueError(f"x_train holds {int(numpy.sum(~numpy.isfinite(x)))} NaN or infinite value(s); clean the data")
    labels = t.ndim == 1 and t.dtype.kind in "iu" and t.size > 0
    n_classes = int(t.max()) + 1 if labels else int(t.shape[1]) if t.ndim == 2 else 1
    targets(NumpyBackend(), t, x.shape[0], n_classes, "t_train", "x_train")
    if n_classes < 2:
        raise ValueError(f"t_train holds a single class ({x.shape[0]} samples); a search needs at least two "
                         "(with train_size, the first samples may all share one class: shuffle the data first)")
    return n_classes


def _split(x: Any, t: Any, validation_rate: float, rng: numpy.random.Generator) -> tuple[Any, ...]:
    if not 0 < validation_rate < 1:
        raise ValueError(f"validation_rate must be between 0 and 1, got {validation_rate!r}")
    x, t = numpy.asarray(x), numpy.asarray(t)
    if len(x) != len(t):
        raise ValueError(f"x has {len(x)} samples but t has {len(t)}")
    order = rng.permutation(len(x))
    n_val = int(len(x) * validation_rate)
    if n_val < 1 or n_val >= len(x):
        raise ValueError(f"{len(x)} samples are too few to split off a validation set")
    val, train = order[:n_val], order[n_val:]
    return x[train], t[train], x[val], t[val]


def random_search(
    x_train: Any,
    t_train: Any,
    *,
    trials: int = 32,
    epochs: int = 50,
    space: SearchSpace | None = None,
    train_size: int | None = 500,
    validation_rate: float = 0.2,
    seed: int = 0,
    backend: str | None = None,
    dtype: Any = None,
    client: Any = None,
    progress: bool = True,
) -> list[Trial]:
    """Random search over `space`; returns the trials sorted best first.

    The defaults are the book's ch.6 search: the first 500 training samples
    (`train_size`; None uses all), 20% of them held out for validation, 50
    epochs of SGD on six hidden layers of 100, learning rates 10^U(-6, -2) and
    weight decays 10^U(-8, -4).

    Validation accuracy after the last epoch ranks the trials; trials that
    failed (NaN loss, ...) come last with their ``error`` set. The data are
    sent to every worker once. `backend` names the backend the workers train
    on (default: the active one here).
    """
    from .backend import get_backend, to_numpy

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if train_size is not None and (isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 2):
        raise ValueError(f"train_size must be an integer of at least 2, or None for all samples, got {train_size!r}")
    space = space or SearchSpace()
    rng = numpy.random.default_rng(seed)
    x, t = to_numpy(x_train), to_numpy(t_train)
    if train_size is not None:  # the book searches on the first 500 samples
        x, t = x[:train_size], t[:train_size]
    n_classes = _check_data(x, t)
    xt, tt, xv, tv = _split(x, t, validation_rate, rng)
    configs = [space.draw(rng) for _ in range(trials)]
    seeds = [int(s.generate_state(1)[0]) for s in numpy.random.SeedSequence(seed).spawn(trials)]
    data = {
        "x_train": xt, "t_train": tt, "x_val": xv, "t_val": tv,
        "n_classes": n_classes,
        "backend": backend or get_backend().name,
        "dtype": dtype,
    }

    dask = as_client(client)
    [data_future] = dask.scatter([data], broadcast=True, hash=False)
    futures = [
        dask.submit(_run_trial, data_future, i, seeds[i], configs[i], epochs, pure=False)
        for i in range(trials)
    ]
    results = [f.result() for f in _as_completed(futures, progress)]
    return sorted(results, key=_rank)


def _rank(trial: Trial) -> tuple[int, float, int]:
    failed = trial.error is not None or not math.isfinite(trial.val_acc)
    return (1 if failed else 0, -trial.val_acc if not failed else 0.0, trial.index)


def _as_completed(futures: list[Any], progress: bool) -> Iterator[Any]:
    done = import_distributed().as_completed(futures)
    if progress:
        try:
            from tqdm.auto import tqdm

            yield from tqdm(done, total=len(futures), desc="trials", unit="trial")
            return
        except ImportError:
            pass
    yield from done


def format_table(trials: Sequence[Trial], top: int | None = 10) -> str:
    """The best trials as a plain-text table."""
    rows = list(trials)[: top or None]
    lines = [f"{'rank':>4}  {'val acc':>7}  {'lr':>9}  {'decay':>9}  {'opt':<8} {'batch':>5}  hidden"]
    for rank, tr in enumerate(rows, 1):
        c = tr.config
        acc = "failed" if tr.error else f"{tr.val_acc:.4f}"
        hidden = "x".join(map(str, c["hidden_sizes"]))
        lines.append(
            f"{rank:>4}  {acc:>7}  {c['lr']:9.2e}  {c['weight_decay']:9.2e}  {c['optimizer']:<8} "
            f"{c['batch_size']:>5}  {hidden}" + (f"  ({tr.error})" if tr.error else "")
        )
    return "\n".join(lines)


def plot_trials(trials: Sequence[Trial], path: str, top: int = 20) -> str:
    """The search as a PNG: every trial's validation accuracy over its learning
    rate (colour: weight decay), then the best trials' validation (solid) and
    training (dashed) accuracy per epoch, as in the book's ch.6 figure."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'fastnet[plot]'") from None
    from .plot import check_image_path

    path = str(check_image_path(path))
    done = [tr for tr in trials if tr.history.get("test_acc")]
    best = done[:top]
    if not best:
        raise ValueError("no trial has an accuracy history to plot")
    cols = 5
    rows = 1 + -(-len(best) // cols)
    fig = plt.figure(figsize=(3 * cols, 2.4 * rows + 0.6))
    grid = fig.add_gridspec(rows, cols)
    spread = fig.add_subplot(grid[0, :])
    ok = [tr for tr in trials if tr.error is None and math.isfinite(tr.val_acc)]
    points = spread.scatter(
        [tr.config["lr"] for tr in ok], [tr.val_acc for tr in ok],
        c=[math.log10(tr.config["weight_decay"]) for tr in ok], cmap="viridis", s=18,
    )
    fig.colorbar(points, ax=spread, label="log10 weight decay")
    spread.set_xscale("log")
    spread.set_xlabel("learning rate")
    spread.set_ylabel("validation acc")
    spread.set_ylim(0.0, 1.0)
    spread.set_title(f"{len(ok)} trials (failed: {len(trials) - len(ok)})", fontsize=9)
    for rank, tr in enumerate(best, 1):
        ax = fig.add_subplot(grid[1 + (rank - 1) // cols, (rank - 1) % cols])
        epochs = tr.history["epoch"]
        style = "-" if len(epochs) > 1 else "o"  # one epoch is a point, not a line
        ax.plot(epochs, tr.history["test_acc"], style)
        ax.plot(epochs, tr.history["train_acc"], "--" if len(epochs) > 1 else "x")
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_title(f"#{rank} lr={tr.config['lr']:.1e} wd={tr.config['weight_decay']:.1e}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("random search: validation accuracy by learning rate; best trials' validation "
                 "(solid) and training (dashed) accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
