"""Train a net epoch by epoch, like the book's ``common/trainer.py``.

The data set is moved to the net's backend once. Each epoch's mini-batch
indices are drawn in one go (``backend.batch_indices``) and the whole epoch
runs as one backend call (``net.train_batches``), so a GPU backend can run it
without syncing the device; the step losses come back once per epoch, which
is also when a NaN/Inf loss is noticed. ``train_step()`` runs one batch of the
same plan, so stepping and whole epochs give the same run. A progress bar on
a terminal splits each epoch into a few calls so that it moves.
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


class _GlobalStream:
    """Batch draws from NumPy's global generator, so ``np.random.seed(n)`` repeats a run.

    ``integers`` is ``numpy.random.randint``, the draw behind the book's
    ``np.random.choice(train_size, batch_size)``: with replacement sampling
    the batches are the book's, in the book's order.
    """

    def integers(self, low: int, high: int, size: int) -> numpy.ndarray:
        return numpy.random.randint(low, high, size)

    def permutation(self, n: int) -> numpy.ndarray:
        return numpy.random.permutation(n)


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
            None draws from NumPy's global generator, as the book does, so
            ``np.random.seed(n)`` before building the net and the trainer
            makes a script repeat itself.
        progress: show a tqdm bar on stderr when tqdm is installed and stderr
            is a terminal (never into pipes or log files).
        verbose: True prints as the book's trainer does: "train loss:" for
            every step, "=== epoch:N, train acc:..., test acc:... ===" after
            every epoch and the final test accuracy. "epochs" prints one
            summary line per epoch instead (about 50 lines at most: long runs
            print every k-th epoch and the last). False prints nothing.
        check_finite: refuse NaN/Inf in the data, and stop with
            ``TrainingDivergedError`` when a loss becomes NaN/Inf.
        eval_batch_size: samples per forward pass while evaluating (default
            ``net.EVAL_BATCH``: 10,000 dense, 100 conv, whose im2col grows).
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
        verbose: bool | str = True,
        *,
        sampling: str = "shuffle",
        seed: int | numpy.random.Generator | None = None,
        progress: bool = True,
        check_finite: bool = True,
        eval_batch_size: int | None = None,
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
            evaluate_sample_num_per_epoch = _positive_int(evaluate_sample_num_per_epoch, "evaluate_sample_num_per_epoch")
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.eval_batch_size = (net.EVAL_BATCH if eval_batch_size is None
                                else _positive_int(eval_batch_size, "eval_batch_size"))
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
        if verbose not in (True, False, "epochs"):
            raise ValueError(f"verbose must be True, False or 'epochs', got {verbose!r}")
        self.verbose = verbose
        self.rng: Any
        if seed is None:
            self.rng = _GlobalStream()
        elif isinstance(seed, numpy.random.Generator):
            self.rng = seed
        else:
            self.rng = numpy.random.default_rng(seed)

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
        self.current_iter = 0  # steps run so far, over all epochs
        self._plan: Array | None = None  # this epoch's batch indices, one row per step
        self._done = 0  # rows of the plan already run
        self._epoch_losses: list[float] = []
        self._epoch_seconds = 0.0

    # The book's names for what the history records.
    @property
    def train_loss_list(self) -> list[float]:
        """Every step's loss (``history.step_loss``), as the book's trainer keeps it."""
        return self.history.step_loss

    @property
    def train_acc_list(self) -> list[float]:
        """Training accuracy after each epoch (``history.train_acc``)."""
        return self.history.train_acc

    @property
    def test_acc_list(self) -> list[float]:
        """Test accuracy after each epoch (``history.test_acc``)."""
        return self.history.test_acc

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
        if t.ndim == 1 and t.dtype.kind not in "iu":
            raise TypeError(f"{t_name} must hold integer class labels, got dtype {t.dtype}")
        # shapes, label range, one-hot rows: checked once here, never per step
        x, t = net.checked_batch(x, t, x_name, t_name, once=True)  # values too, even on a GPU
        if t.ndim == 1:  # labels (also those given as a column): one index type for every backend
            t = t.astype(numpy.int64, copy=False)
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
    def _say(self, line: str, bar: Any = None) -> None:
        (bar.write if bar is not None else print)(line)

    def _run(self, k: int, bar: Any = None) -> None:
        """Run the next `k` steps of this epoch's plan (fewer if the epoch ends first)."""
        net, bk = self.net, self.backend
        if self._plan is None:
            self._plan = bk.batch_indices(
                self.x_train.shape[0], self.batch_size, self.rng, shuffle=self.sampling == "shuffle"
            )
            self._done, self._epoch_losses, self._epoch_seconds = 0, [], 0.0
        rows = self._plan[self._done : self._done + k]
        start = time.perf_counter()
        # With check_finite on, a NaN/Inf gets one clear error below instead of
        # a stream of NumPy overflow warnings from every step after it.
        quiet: Literal["ignore", "warn"] = "ignore" if self.check_finite else "warn"
        with numpy.errstate(over=quiet, invalid=quiet, divide=quiet):
            out = net.train_batches(self.x_train, self.t_train, rows, self.optimizer)
            losses = _host_losses(bk, out)
        self._epoch_seconds += time.perf_counter() - start  # the losses came back: the work is done
        epoch, h = self.current_epoch + 1, self.history
        if self.check_finite and not numpy.isfinite(losses).all():
            bad = int(numpy.argmin(numpy.isfinite(losses)))
            step = self._done + bad
            h.step_loss.extend(losses[:bad].tolist())
            message = (
                f"training stopped: the loss became {losses[bad]} at epoch {epoch}, step "
                f"{step + 1} of {self.steps_per_epoch}; the parameters are no longer usable. "
                f"Lower the learning rate (now {self.optimizer.lr:g}), use a smaller weight "
                f"init, or check the data"
            )
            raise TrainingDivergedError(message, h, epoch, step + 1)
        values = losses.tolist()
        h.step_loss.extend(values)
        self._epoch_losses.extend(values)
        self._done += len(values)
        self.current_iter += len(values)
        if self.verbose is True:
            for loss in values:
                self._say(f"train loss:{loss}", bar)
        if bar is not None:
            bar.update(len(values))
        if self._done >= self.steps_per_epoch:
            self._end_epoch(bar)

    def _end_epoch(self, bar: Any = None) -> None:
        net, h = self.net, self.history
        epoch = self.current_epoch + 1
        losses = numpy.asarray(self._epoch_losses)
        self._plan = None
        self.current_epoch = epoch
        h.epoch.append(epoch)
        h.seconds.append(self._epoch_seconds)
        h.train_loss.append(float(losses.mean()) if losses.size else math.nan)
        if self.check_finite and h.train_loss[-1] > 0.9 * LOSS_CEILING:
            # The book's +1e-7 in the log caps the loss, so a blown-up net never
            # reaches NaN; a loss near the cap means the same thing.
            warnings.warn(
                f"epoch {epoch}: mean loss {h.train_loss[-1]:.2f} is near the cross-entropy's "
                f"ceiling -log(1e-7) = {LOSS_CEILING:.2f}: the net gives the true classes ~0 "
                f"probability; the learning rate (now {self.optimizer.lr:g}) is probably too high",
                TrainingWarning,
                stacklevel=4,
            )
        _, train_acc = net.evaluate(*self._subset(self.x_train, self.t_train), self.eval_batch_size)
        h.train_acc.append(train_acc)
        if self.x_test is not None:
            test_loss, test_acc = net.evaluate(*self._subset(self.x_test, self.t_test), self.eval_batch_size)
            h.test_loss.append(test_loss)
            h.test_acc.append(test_acc)
        if self.verbose is True:
            line = f"=== epoch:{epoch}, train acc:{train_acc}"
            if self.x_test is not None:
                line += f", test acc:{h.test_acc[-1]}"
            self._say(line + " ===", bar)
        elif self.verbose == "epochs":
            every = max(1, -(-self.epochs // 50))  # a 1000-epoch run prints 50 lines, not 1000
            if epoch % every == 0 or epoch == self.epochs:
                self._say(self.summary(), bar)
        if bar is not None:
            bar.set_postfix_str(self.summary().split(": ", 1)[1], refresh=False)

    def train_step(self) -> None:
        """One mini-batch step (the book's ``train_step``); an epoch's evaluation runs after its last step."""
        self._run(1)

    def train_epoch(self) -> None:
        """The rest of the current epoch in one backend call, then the evaluation; updates ``history``."""
        epoch = self.current_epoch
        while self.current_epoch == epoch:
            self._run(self.steps_per_epoch)

    def train(self) -> History:
        """Run the remaining epochs and return the history (also ``self.history``).

        Raises ``TrainingDivergedError`` (with ``.history``) on a NaN/Inf loss.
        """
        tqdm = _tqdm() if self.progress and _isatty(sys.stderr) else None
        bar = None
        steps = self.steps_per_epoch
        # A shown bar moves ~20 times an epoch; without one an epoch is one call.
        chunk = steps if tqdm is None else max(1, -(-steps // 20))
        if tqdm is not None:
            bar = tqdm(
                total=self.epochs * steps, initial=self.current_epoch * steps + (self._done if self._plan is not None else 0),
                unit="step", desc=f"{type(self.net).__name__} on {self.backend.name}", file=sys.stderr,
            )
        try:
            while self.current_epoch < self.epochs:
                self._run(chunk, bar)
        finally:
            if bar is not None:
                bar.close()
        if self.verbose is True and self.x_test is not None:
            _, test_acc = self.net.evaluate(self.x_test, self.t_test, self.eval_batch_size)
            print("=============== Final Test Accuracy ===============")
            print(f"test acc:{test_acc}")
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


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def _host_losses(backend: Any, losses: Any) -> numpy.ndarray:
    """The epoch's step losses as one float64 NumPy array (a single device sync)."""
    if isinstance(losses, (list, tuple)):
        if not losses:
            return numpy.zeros(0)
        xp = backend.xp
        losses = xp.stack([xp.asarray(loss) for loss in losses])
    return numpy.asarray(to_numpy(losses), dtype=numpy.float64).reshape(-1)
