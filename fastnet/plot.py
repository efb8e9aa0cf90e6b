"""Training curves as in the book's figures, saved to PNG.

Needs matplotlib (``pip install 'fastnet[plot]'``), imported only when a plot
is made. Figures are built as bare ``matplotlib.figure.Figure`` objects drawn
by the Agg renderer, never through pyplot: plotting works on a server without
a display, opens no window, and leaves the user's pyplot backend alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy

from .errors import FastnetError

__all__ = [
    "PlotUnavailableError",
    "require_matplotlib",
    "plot_history",
    "plot_loss",
    "plot_accuracy",
    "plot_path",
    "check_image_path",
]

PathLike = str | os.PathLike


class PlotUnavailableError(FastnetError, ImportError):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    """Return ``matplotlib.figure.Figure``, or say how to install matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailableError(
            "plotting needs matplotlib: install the extra with pip install 'fastnet[plot]'"
        ) from None
    return Figure


def check_image_path(path: PathLike) -> Path:
    """The file a plot of `path` will be written to; refuses formats matplotlib cannot write.

    A name without an extension gets ``.png`` (as matplotlib does).
    """
    require_matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    if not path.suffix:
        return path.with_name(path.name + ".png")
    supported = FigureCanvasBase.get_supported_filetypes()
    if path.suffix[1:].lower() not in supported:
        raise ValueError(
            f"cannot save a plot as {path.name}: {path.suffix} is not an image format; "
            f"use one of .{', .'.join(sorted(supported))}"
        )
    return path


def _figure(figsize: tuple[float, float], ncols: int = 1) -> tuple[Any, Any]:
    fig = require_matplotlib()(figsize=figsize)
    return fig, fig.subplots(1, ncols)


def _get(history: Any, key: str) -> list[float]:
    return list(history[key] if isinstance(history, dict) else getattr(history, key))


def _save(fig: Any, path: PathLike) -> Path:
    path = check_image_path(path)
    fig.savefig(path, dpi=100)  # a bare Figure renders with Agg; nothing to close
    return path


def _draw_loss(ax: Any, history: Any) -> None:
    step_loss = _get(history, "step_loss")
    ax.plot(numpy.arange(1, len(step_loss) + 1), step_loss, linewidth=0.8, label="mini-batch loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    if step_loss and min(step_loss) > 0:
        ax.set_yscale("log")  # early losses dwarf later ones on a linear scale


def _draw_accuracy(ax: Any, history: Any) -> None:
    epochs = _get(history, "epoch")
    few = len(epochs) <= 30  # markers help on a few epochs and blot out a long run
    ax.plot(epochs, _get(history, "train_acc"), marker="o" if few else None, label="train acc")
    test = _get(history, "test_acc")
    if test:
        ax.plot(epochs, test, marker="s" if few else None, linestyle="--", label="test acc")
    ax.set_xlabel("epochs")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.0)
    ax.set_title("accuracy")
    ax.legend(loc="lower right")


def plot_loss(history: Any, path: PathLike) -> Path:
    """The loss of every mini-batch (the book's figure 4-11), to a PNG."""
    fig, ax = _figure((6, 4))
    _draw_loss(ax, history)
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy(history: Any, path: PathLike) -> Path:
    """Train and test accuracy per epoch (the book's figure 4-12), to a PNG."""
    fig, ax = _figure((6, 4))
    _draw_accuracy(ax, history)
    fig.tight_layout()
    return _save(fig, path)


def plot_history(history: Any, path: PathLike, title: str | None = None) -> Path:
    """Loss curve and accuracy per epoch side by side, to a PNG.

    `history` is a ``fastnet.train.History`` or its ``as_dict()``.
    """
    fig, (left, right) = _figure((11, 4), 2)
    _draw_loss(left, history)
    _draw_accuracy(right, history)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_path(
    points: Sequence[Sequence[float]] | Any,
    path: PathLike,
    f: Any = None,
    title: str = "gradient descent",
) -> Path:
    """The points visited by a 2-D descent (the book's figure 4-10), to a PNG.

    With `f` (a function of a length-2 NumPy array), its contour lines are
    drawn behind the path.
    """
    fig, ax = _figure((5, 5))
    pts = numpy.asarray(points, dtype=float).reshape(-1, 2)
    lim = max(3.5, float(numpy.abs(pts).max()) * 1.1) if pts.size else 3.5
    if f is not None:
        grid = numpy.linspace(-lim, lim, 121)
        gx, gy = numpy.meshgrid(grid, grid)
        z = numpy.array([f(numpy.array([a, b])) for a, b in zip(gx.ravel(), gy.ravel())]).reshape(gx.shape)
        ax.contour(gx, gy, z, levels=12, colors="lightgray", linewidths=0.8)
    ax.plot([-lim, lim], [0, 0], "--b", linewidth=0.6)
    ax.plot([0, 0], [-lim, lim], "--b", linewidth=0.6)
    ax.plot(pts[:, 0], pts[:, 1], "o", markersize=4)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("X0")
    ax.set_ylabel("X1")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)
