"""Train a net epoch by epoch, like the book's ``common/trainer.py``.

The data set is moved to the net's backend once. Each epoch's mini-batch
indices are drawn in one go (``backend.batch_indices``) and the whole epoch
runs as one backend call (``net.train_batches``), so a GPU backend can run it
without syncing the device; the step losses come back once per epoch, which
is also when a NaN/Inf loss is noticed.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy

from .backend import to_numpy
from .errors import BackendMismatchError, FastnetError
from .nets import Net
from .optimizers import Optimizer, make_optimizer

__all__ = ["Trainer", "History", "TrainingDivergedError", "TrainingWarning", "SAMPLINGS"]

Array = Any
SAMPLINGS = ("shuffle", "replacement")


LOSS_CEILING = -math.log(1e-7)  # the book's cross-entropy of a sample given probability 0


class TrainingWarning(UserWarning):
    """Training runs but has stopped learning (e.g. a loss stuck at its ceiling)."""


class TrainingDivergedError(FastnetError, FloatingPointError):
    """The training loss became NaN or infinite; ``history`` holds the epochs before."""

    def __init__(self, message: str, history: History, epoch: int, step: int) -> None:
        super().__init__(message)
        self.history = history
        self.epoch = epoch
        self.step = step


@dataclass
class History:
    """What a training run recorded: one entry per epoch, plus every step's loss.

    ``step_loss`` is the book's ``train_loss_list`` (one loss per mini-batch,
    in training mode); ``train_loss`` its mean over each epoch. Accuracies and
    ``test_loss`` are measured after each epoch in test mode (dropout off).
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # training time of each epoch
    step_loss: list[float] = field(default_factory=list)
    steps_per_epoch: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the `progress` extra is optional: no bar then
        return None
    return tqdm


class Trainer:
    """Mini-batch training with evaluation after every epoch.

    Args:
        net: a fastnet net (``TwoLayerNet``, ``MultiLayerNet``, ...).
        x_train, t_train, x_test, t_test: the data (NumPy or the net's backend
            arrays; labels or one-hot rows). ``x_test`` may be None.
        epochs: passes over the training data.
        mini_batch_size: samples per step (capped at the training set size).
        optimizer: a name from ``fastnet.optimizers.OPTIMIZERS`` or an ``Optimizer``.
        optimizer_param: hyper-parameters for a named optimizer (default lr 0.01).
        evaluate_sample_num_per_epoch: measure accuracy on only the first N
            samples of each set (None: all of them), as in the book.
        sampling: "shuffle" (each epoch a permutation) or "replacement" (the
            book's ``np.random.choice``: each batch drawn independently).
        seed: seeds the batch sampling; with a seeded net a run is reproducible.
        progress: show a tqdm bar (when tqdm is installed) on stderr.
        verbose: print one line per epoch, like the book's trainer (about 50
            lines at most: long runs print every k-th epoch and the last).
        check_finite: refuse NaN/Inf in the data, and stop with
            ``TrainingDivergedError`` when a loss becomes NaN/Inf.
        eval_batch_size: samples per forward pass while evaluating.
    """

    def __init__(
        self,
        net: Net,
        x_train: Array,
        t_train: Array,
        x_test: Array | None = None,
        t_test: Array | None = None,
        epochs: int = 20,
        mini_batch_size: int = 100,
        optimizer: str | Optimizer = "sgd",
        optimizer_param: dict[str, Any] | None = None,
        evaluate_sample_num_per_epoch: int | None = None,
        *,
        sampling: str = "shuffle",
        seed: int | numpy.random.Generator | None = None,
        progress: bool = True,
        verbose: bool = False,
        check_finite: bool = True,
        eval_batch_size: int = 10000,
    ) -> None:
        if not isinstance(net, Net):
            raise TypeError(f"net must be a fastnet net (e.g. TwoLayerNet), got {type(net).__name__}")
        self.net = net
        self.backend = net.backend
        self.epochs = _positive_int(epochs, "epochs")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        self.sampling = sampling
        if evaluate_sample_num_per_epoch is not None:
            evaluate_sample_num_per_epoch = _positive_int(
                evaluate_sample_num_per_epoch, "evaluate_sample_num_per_epoch"
            )
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.eval_batch_size = _positive_int(eval_batch_size, "eval_batch_size")
        if optimizer_param is None and not isinstance(optimizer, Optimizer):
            optimizer_param = {"lr": 0.01}
        self.optimizer = make_optimizer(optimizer, optimizer_param)
        if self.optimizer.backend is None:
            self.optimizer.backend = self.backend  # its state lives beside the params
        elif self.optimizer.backend is not self.backend:
            raise BackendMismatchError(
                f"the optimizer works on backend {self.optimizer.backend.name!r} but the net "
                f"is on {self.backend.name!r}; create a new optimizer for this net"
            )
        self.check_finite = bool(check_finite)
        self.progress = bool(progress)
        self.verbose = bool(verbose)
        self.rng = seed if isinstance(seed, numpy.random.Generator) else numpy.random.default_rng(seed)

        # Move the data once; everything after this stays on the backend.
        self.x_train, self.t_train = self._data(x_train, t_train, "train")
        if (x_test is None) != (t_test is None):
            raise ValueError("give both x_test and t_test, or neither")
        self.x_test: Array | None = None
        self.t_test: Array | None = None
        if x_test is not None:
            self.x_test, self.t_test = self._data(x_test, t_test, "test")
        n = self.x_train.shape[0]
        self.batch_size = min(_positive_int(mini_batch_size, "mini_batch_size"), n)
        self.steps_per_epoch = n // self.batch_size
        self.history = History(steps_per_epoch=self.steps_per_epoch)
        self.current_epoch = 0

    # ------------------------------------------------------------- data
    def _data(self, x: Array, t: Array, which: str) -> tuple[Array, Array]:
        bk, net = self.backend, self.net
        x_name, t_name = f"x_{which}", f"t_{which}"
        if x is None or t is None:
            raise TypeError(f"{x_name if x is None else t_name} is missing (got None)")
        try:
            x = bk.asarray(x, dtype=net.dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{x_name} must be an array of numbers ({exc})") from None
        t = bk.asarray(t)
        if t.ndim == 1:
            if t.dtype.kind not in "iu":
                raise TypeError(f"{t_name} must hold integer class labels, got dtype {t.dtype}")
            t = t.astype(numpy.int64, copy=False)  # one index type for every backend
        # shapes, label range, one-hot rows: checked once here, never per step
        x, t = net._xt(x, t, x_name, t_name, once=True)  # values too, even on a GPU
        if self.check_finite and not bool(bk.xp.isfinite(x).all()):
            bad = int(bk.xp.sum(~bk.xp.isfinite(x)))
            raise ValueError(
                f"{x_name} holds {bad} NaN or infinite value(s); clean the data "
                f"(or pass check_finite=False to skip this check)"
            )
        return x, t

    def _subset(self, x: Array, t: Array) -> tuple[Array, Array]:
        n = self.evaluate_sample_num_per_epoch
        return (x, t) if n is None else (x[:n], t[:n])

    # --------------------------------------------------------- training
    def train_epoch(self) -> None:
        """One pass over the training data, then the evaluation; updates ``history``."""
        net, bk, h = self.net, self.backend, self.history
        epoch = self.current_epoch + 1
        start = time.perf_counter()
        batches = bk.batch_indices(
            self.x_train.shape[0], self.batch_size, self.rng, shuffle=self.sampling == "shuffle"
        )
        # With check_finite on, a NaN/Inf gets one clear error below instead of
        # a stream of NumPy overflow warnings from every step after it.
        quiet: Literal["ignore", "warn"] = "ignore" if self.check_finite else "warn"
        with numpy.errstate(over=quiet, invalid=quiet, divide=quiet):
            out = net.train_batches(self.x_train, self.t_train, batches, self.optimizer)
            losses = _host_losses(bk, out)
        seconds = time.perf_counter() - start  # the losses came back: the epoch's work is done
        if self.check_finite and not numpy.isfinite(losses).all():
            step = int(numpy.argmin(numpy.isfinite(losses)))
            h.step_loss.extend(losses[:step].tolist())
            message = (
                f"training stopped: the loss became {losses[step]} at epoch {epoch}, step "
                f"{step + 1} of {len(losses)}; the parameters are no longer usable. "
                f"Lower the learning rate (now {self.optimizer.lr:g}), use a smaller weight "
                f"init, or check the data"
            )
            raise TrainingDivergedError(message, h, epoch, step + 1)
        self.current_epoch = epoch
        h.epoch.append(epoch)
        h.seconds.append(seconds)
        h.step_loss.extend(losses.tolist())
        h.train_loss.append(float(losses.mean()) if losses.size else math.nan)
        if self.check_finite and h.train_loss[-1] > 0.9 * LOSS_CEILING:
            # The book's +1e-7 in the log caps the loss, so a blown-up net never
            # reaches NaN; a loss near the cap means the same thing.
            warnings.warn(
                f"epoch {epoch}: mean loss {h.train_loss[-1]:.2f} is near the cross-entropy's "
                f"ceiling -log(1e-7) = {LOSS_CEILING:.2f}: the net gives the true classes ~0 "
                f"probability; the learning rate (now {self.optimizer.lr:g}) is probably too high",
                TrainingWarning,
                stacklevel=3,
            )
        _, train_acc = net.evaluate(*self._subset(self.x_train, self.t_train), self.eval_batch_size)
        h.train_acc.append(train_acc)
        if self.x_test is not None:
            test_loss, test_acc = net.evaluate(*self._subset(self.x_test, self.t_test), self.eval_batch_size)
            h.test_loss.append(test_loss)
            h.test_acc.append(test_acc)

    def train(self) -> History:
        """Run the remaining epochs and return the history (also ``self.history``).

        Raises ``TrainingDivergedError`` (with ``.history``) on a NaN/Inf loss.
        """
        tqdm = _tqdm() if self.progress else None
        bar = None
        if tqdm is not None:
            bar = tqdm(
                total=self.epochs, initial=self.current_epoch, unit="epoch",
                desc=f"{type(self.net).__name__} on {self.backend.name}", file=sys.stderr,
            )
        every = max(1, -(-self.epochs // 50))  # a 1000-epoch run prints 50 lines, not 1000
        try:
            while self.current_epoch < self.epochs:
                self.train_epoch()
                line = self.summary()
                if bar is not None:
                    bar.set_postfix_str(line.split(": ", 1)[1], refresh=False)
                    bar.update(1)
                if self.verbose and (self.current_epoch % every == 0 or self.current_epoch == self.epochs):
                    (bar.write if bar is not None else print)(line)
        finally:
            if bar is not None:
                bar.close()
        return self.history

    def summary(self) -> str:
        """One line on the last epoch: losses and accuracies."""
        h = self.history
        if not h.epoch:
            return "epoch 0: not trained yet"
        line = f"epoch {h.epoch[-1]}/{self.epochs}: loss {h.train_loss[-1]:.4f}, train acc {h.train_acc[-1]:.4f}"
        if h.test_acc:
            line += f", test acc {h.test_acc[-1]:.4f}"
        return line + f" ({h.seconds[-1]:.2f} s)"


def _host_losses(backend: Any, losses: Any) -> numpy.ndarray:
    """The epoch's step losses as one float64 NumPy array (a single device sync)."""
    if isinstance(losses, (list, tuple)):
        if not losses:
            return numpy.zeros(0)
        xp = backend.xp
        losses = xp.stack([xp.asarray(loss) for loss in losses])
    return numpy.asarray(to_numpy(losses), dtype=numpy.float64).reshape(-1)
