"""The benchmark chart: the headline figures of a run in up to three panels.

(a) numerical gradient against backprop, per backend (log scale);
(b) the training step (and prediction) of each backend relative to its
    matrix products alone, beside the book's algorithm;
(c) each backend's speed against the book's algorithm and against PyTorch / JAX.

A panel is drawn only when the run holds its cases. Every implementation keeps
one colour across the panels; the legend sits below them.
"""

from __future__ import annotations

import os
from typing import Any

from .report import Case, cases, fmt_ratio, fmt_time, groups, machine_lines

__all__ = ["COLOURS", "write_chart"]

# One colour per implementation, the same in every panel.
COLOURS = {
    "numpy": "#1f77b4", "numba": "#ff7f0e", "cupy": "#2ca02c", "book": "#7f7f7f",
    "matmul-floor": "#000000", "torch-manual": "#d62728", "torch-autograd": "#8c564b",
    "jax-jit": "#9467bd", "torch-cuda-manual": "#e377c2", "torch-cuda-autograd": "#bcbd22",
    "torch-cuda-graph": "#17becf",
}
BACKENDS = ("numpy", "numba", "cupy")
PEERS = ("torch-manual", "torch-autograd", "jax-jit", "torch-cuda-manual", "torch-cuda-autograd", "torch-cuda-graph")
BAR = 0.8  # height of one group's block of bars


def _by_group(rows: list[Case]) -> dict[str, dict[str, Case]]:
    out: dict[str, dict[str, Case]] = {}
    for r in rows:
        name = "matmul-floor" if r.name == "matmul" else "book" if r.name == "cupy-book" else r.name
        out.setdefault(r.group, {})[name] = r
    return out


def _label(group: str) -> str:
    return group.replace("numgrad-", "").replace("-B", " B").replace("-float", " fp").replace("-mnist", " MNIST")


def _bars(ax: Any, blocks: list[tuple[str, list[tuple[str, float, str, dict]]]], log: bool) -> None:
    """Horizontal bars, one block per group: (label, [(implementation, value, text, style)])."""
    ticks, labels = [], []
    y = 0.0
    for label, bars in reversed(blocks):
        h = BAR / max(len(bars), 1)
        for i, (impl, value, text, style) in enumerate(reversed(bars)):
            pos = y + (i + 0.5) * h
            ax.barh(pos, value, height=h * 0.9, color=COLOURS.get(impl, "#aec7e8"), **style)
            ax.annotate(text, (value, pos), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=7)
        ticks.append(y + BAR / 2)
        labels.append(label)
        y += 1.0
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_ylim(-0.15, y - 0.05)
    values = [value for _, bars in blocks for _, value, _, _ in bars]
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 3, max(values) * 3e3)  # room for the numbers at the ends of the bars
    else:
        ax.set_xlim(0, max(values) * 1.45)
    ax.grid(axis="x", which="major", alpha=0.3)
    ax.set_axisbelow(True)


def numgrad_blocks(rows: list[Case]) -> list[tuple[str, list]]:
    """(a): per net and batch, each backend's numerical gradient and backprop."""
    found = _by_group(rows)
    blocks = []
    for group in groups(rows):
        if not group.startswith("numgrad-"):
            continue
        bars = []
        for b in BACKENDS:
            num, back = found[group].get(f"{b}-numerical"), found[group].get(f"{b}-backprop")
            if num is None or back is None:
                continue
            star = "*" if num.scale != 1 else ""
            bars.append((b, num.seconds, f"{fmt_time(num.seconds)}{star} = {fmt_ratio(num.seconds / back.seconds)} backprop", {}))
            bars.append((b, back.seconds, fmt_time(back.seconds), {"hatch": "////", "alpha": 0.45}))
        if bars:
            blocks.append((_label(group), bars))
    return blocks


def _timed_groups(rows: list[Case]) -> list[str]:
    return [g for g in groups(rows) if g.split("-")[0] in ("step", "predict", "gpu") and not g.endswith("-rounds")
            and "numgrad" not in g and "epoch" not in g]


def floor_blocks(rows: list[Case]) -> list[tuple[str, list]]:
    """(b): each backend and the book, as a multiple of the matrix products alone."""
    found = _by_group(rows)
    blocks = []
    for group in _timed_groups(rows):
        floor = found[group].get("matmul-floor")
        if floor is None:
            continue
        names = [n for n in ("book", *BACKENDS) if n in found[group]]
        bars = [(n, found[group][n].seconds / floor.seconds,
                 f"{found[group][n].seconds / floor.seconds:.2f}× ({fmt_time(found[group][n].seconds)})", {})
                for n in names]
        if bars:
            blocks.append((_label(group) + f"\nfloor {fmt_time(floor.seconds)}", bars))
    return blocks


def peer_blocks(rows: list[Case]) -> list[tuple[str, list]]:
    """(c): the book's time over each implementation's: above 1 is faster than the book."""
    found = _by_group(rows)
    blocks = []
    for group in _timed_groups(rows):
        book = found[group].get("book")
        if book is None:
            continue
        names = [n for n in (*BACKENDS, *PEERS) if n in found[group]]
        bars = [(n, book.seconds / found[group][n].seconds,
                 f"{book.seconds / found[group][n].seconds:.2f}× ({fmt_time(found[group][n].seconds)})", {})
                for n in names]
        if bars:
            blocks.append((_label(group) + f"\nbook {fmt_time(book.seconds)}", bars))
    return blocks


def write_chart(data: dict[str, Any], path: str | os.PathLike, stat: str = "median") -> str:
    """Write the chart as a PNG; returns a line saying what happened."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return "no chart: matplotlib is not installed (pip install 'fastnet[plot]')"
    rows = [r for r in cases(data, stat) if r.name != "rounds"]  # a round is three kinds of step
    panels = [
        ("(a) numerical gradient vs backprop", f"{stat} seconds per gradient (log scale)",
         numgrad_blocks(rows), True, None),
        ("(b) time over the matrix products alone", "multiple of the matrix-product floor (1 = floor)",
         floor_blocks(rows), False, 1.0),
        ("(c) speed against the book's algorithm", "book's time / this time (above 1: faster than the book)",
         peer_blocks(rows), False, 1.0),
    ]
    panels = [p for p in panels if p[2]]
    if not panels:
        return "no chart: the run holds none of the charted cases (numgrad, step, predict)"
    heights = [sum(len(bars) for _, bars in p[2]) for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 0.32 * max(heights) + 2.6), squeeze=False)
    used: dict[str, None] = {}
    for ax, (title, xlabel, blocks, log, line) in zip(axes[0], panels):
        _bars(ax, blocks, log)
        if line is not None:
            ax.axvline(line, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        for _, bars in blocks:
            used.update(dict.fromkeys(impl for impl, *_ in bars))
    handles = [Patch(color=COLOURS.get(k, "#aec7e8"), label=k) for k in used]
    if any(p[0].startswith("(a)") for p in panels):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="////", label="backprop (hatched)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False)
    scaled = any(r.scale != 1 and r.suite == "numgrad" for r in rows)
    note = "   * the book's loop timed on a subset of parameters and scaled" if scaled else ""
    fig.suptitle(machine_lines(data)[0] + note, fontsize=8)
    height = fig.get_size_inches()[1]
    rows_of_legend = -(-len(handles) // 7)
    fig.tight_layout(rect=(0, 0.3 * rows_of_legend / height, 1, 1 - 0.3 / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart written to {path}"
