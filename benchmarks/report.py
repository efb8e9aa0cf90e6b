"""The benchmark report: every case of a pytest-benchmark run as Markdown tables.

The report holds the median of every case; the numerical / backprop ratio per
backend and size; each backend's speed-up over numpy; and the ratios with
targets. ``benchmarks/run.py`` (``fastnet bench``) runs the suites and prints it;
``benchmarks/chart.py`` draws the chart.

Cases of the numerical gradient that ran the book's loop were timed on a
subset of parameters: their ``extra_info["scale"]`` multiplies them up to the
whole net here, and the tables mark them with ``*``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["Case", "cases", "fmt_ratio", "fmt_time", "groups", "load", "machine_lines", "report"]

BACKENDS = ("numpy", "numba", "cupy")
SUITE_ORDER = ("step", "predict", "numgrad")


class Case(NamedTuple):
    """One benchmark, its time already scaled to the whole work."""

    group: str
    name: str
    suite: str
    impl: str
    kind: str  # "numerical"/"backprop" for numgrad, else ""
    seconds: float  # the chosen statistic (median by default), scaled
    fastest: float  # the fastest round, scaled: a busy machine moves it least
    rounds: int
    scale: float
    info: dict[str, Any]


class Target(NamedTuple):
    label: str
    top: tuple[str, str]  # (group, name) of the numerator
    bottom: tuple[str, str]  # ... of the denominator
    op: str  # "<=" or ">="
    bound: float


# The numba backend's targets, each a ratio of two cases of one run.
TARGETS = (
    Target("numba step / matmul floor (B100 fp64)", ("step-B100-float64", "numba"),
           ("step-B100-float64", "matmul-floor"), "<=", 1.35),
    Target("numpy / numba, the book's ch.5 net layer by layer (B100 fp64)", ("step-B100-float64", "numpy-layers"),
           ("step-B100-float64", "numba-layers"), ">=", 1.3),
    Target("numgrad: book loop / numba, 784-50-10 B100 dense", ("numgrad-784-50-10-B100", "numpy-numerical"),
           ("numgrad-784-50-10-B100", "numba-numerical"), ">=", 400),
    Target("numgrad: book loop / numba, 784-50-10 B100 MNIST", ("numgrad-784-50-10-B100-mnist", "numpy-numerical"),
           ("numgrad-784-50-10-B100-mnist", "numba-numerical"), ">=", 900),
    Target("numgrad: book loop / numba, sigmoid, dense",
           ("numgrad-784-50-10-B100-sigmoid", "numpy-numerical"),
           ("numgrad-784-50-10-B100-sigmoid", "numba-numerical"), ">=", 200),
    Target("numgrad: book loop / numba, sigmoid, MNIST",
           ("numgrad-784-50-10-B100-mnist-sigmoid", "numpy-numerical"),
           ("numgrad-784-50-10-B100-mnist-sigmoid", "numba-numerical"), ">=", 600),
    Target("numba predict / matmul (10k fp64)", ("predict-10k-float64", "numba"),
           ("predict-10k-float64", "matmul"), "<=", 1.2),
    Target("torch-manual / numba step (B100 fp32)", ("step-B100-float32", "torch-manual"),
           ("step-B100-float32", "numba"), ">=", 1.0),
    Target("torch-autograd / numba step (B100 fp32)", ("step-B100-float32", "torch-autograd"),
           ("step-B100-float32", "numba"), ">=", 1.0),
    Target("jax-jit / numba step (B100 fp32)", ("step-B100-float32", "jax-jit"),
           ("step-B100-float32", "numba"), ">=", 1.0),
    *(Target(f"{top} / numba, {net} step (B100 {dt})", (f"conv-{key}-B100-float{bits}", top),
             (f"conv-{key}-B100-float{bits}", "numba"), ">=", bound)
      for key, net in (("simple", "SimpleConvNet"), ("deep", "DeepConvNet"))
      for top, bits, dt, bound in (("numpy", 64, "fp64", 2.5), ("torch", 64, "fp64", 1.0),
                                   ("torch", 32, "fp32", 1.0))),
    Target("conv numgrad: book loop / numba, SimpleConvNet B10", ("conv-numgrad-simple-B10", "numpy-book-loop"),
           ("conv-numgrad-simple-B10", "numba-incremental"), ">=", 1000),
)

# The same step targets from ``bench_step.test_step_rounds`` and ``test_layers_rounds``:
# ratios taken round by round with the kinds of step timed in turn (extra_info).
ROUND_TARGETS = (
    ("numba step / matmul floor (B100 fp64), in turn per round", "step-B100-float64-rounds",
     "numba/matmul-floor", "<=", 1.35),
    ("numpy / numba, ch.5 layer net (B100 fp64), in turn per round", "step-B100-float64-layers-rounds",
     "numpy-layers/numba-layers", ">=", 1.3),
    *((f"{top} / numba, {net} step (B100 {dt}), in turn per round", f"conv-{key}-B100-float{bits}-rounds",
       f"{top}/numba", ">=", bound)
      for key, net in (("simple", "SimpleConvNet"), ("deep", "DeepConvNet"))
      for top, bits, dt, bound in (("numpy", 64, "fp64", 2.5), ("torch", 64, "fp64", 1.0),
                                   ("torch", 32, "fp32", 1.0))),
)


# ------------------------------------------------------------------ reading
def load(path: str | os.PathLike) -> dict[str, Any]:
    """A pytest-benchmark JSON file, checked to hold a ``benchmarks`` list."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list)")  # noqa: TRY004
    return data


def cases(data: dict[str, Any], stat: str = "median") -> list[Case]:
    """Every benchmark of a run; cases timed on a subset are scaled up."""
    out = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info") or {}
        group = bench.get("group") or info.get("group") or "ungrouped"
        name = bench.get("name", "?")
        scale = float(info.get("scale", 1.0))
        suite = info.get("suite") or group.split("-")[0]
        impl = info.get("impl") or name.split("-")[0]
        out.append(Case(group, name, suite, impl, info.get("kind", ""),
                        float(bench["stats"][stat]) * scale,
                        float(bench["stats"].get("min", bench["stats"][stat])) * scale,
                        int(bench["stats"].get("rounds", 0)),
                        scale, info))
    return out


def _index(rows: list[Case]) -> dict[tuple[str, str], Case]:
    return {(r.group, r.name): r for r in rows}


def groups(rows: list[Case]) -> list[str]:
    def order(group: str) -> tuple[int, str]:
        suite = group.split("-")[0]
        rank = SUITE_ORDER.index(suite) if suite in SUITE_ORDER else len(SUITE_ORDER)
        return rank, group

    return sorted({r.group for r in rows}, key=order)


def _counterpart(row: Case, index: dict[tuple[str, str], Case]) -> Case | None:
    """The numpy backend's case to compare `row` with (same group, same role)."""
    if row.impl in BACKENDS:
        return index.get((row.group, "numpy" + row.name[len(row.impl):]))
    return index.get((row.group, "numpy"))


# ------------------------------------------------------------------ formatting
def fmt_time(seconds: float) -> str:
    for unit, factor in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= factor:
            return f"{seconds / factor:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}×" if value >= 100 else f"{value:.3g}×"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table (pipes aligned for reading in a terminal too)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)]


def machine_lines(data: dict[str, Any]) -> list[str]:
    mi = data.get("machine_info") or {}
    extra = mi.get("fastnet") or {}
    cpu = mi.get("cpu") or {}
    flags = set(cpu.get("flags") or [])
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    model = extra.get("cpu_model") or cpu.get("brand_raw") or mi.get("processor") or "unknown CPU"
    cores = extra.get("cpu_count") or cpu.get("count")
    when = str(data.get("datetime", ""))[:16].replace("T", " ")
    versions = ", ".join(f"{k} {v}" for k, v in (extra.get("versions") or {}).items())
    lines = [
        f"Run of {when} UTC on {model}" + (f" ({simd})" if simd else "") + (f", {cores} cores" if cores else "")
        + f", Python {mi.get('python_version', '?')}",
    ]
    if versions:
        lines.append(f"Versions: {versions}")
    if extra.get("blas"):
        lines.append("BLAS: " + "; ".join(extra["blas"]))
    if extra.get("env"):
        lines.append("Environment: " + " ".join(f"{k}={v}" for k, v in extra["env"].items()))
    if "mnist" in extra:
        lines.append("MNIST: " + ("real files" if extra["mnist"] else "absent (generated data for predict; MNIST cases skipped)"))
    missing = {k: v for k, v in (extra.get("backends") or {}).items() if v != "available"}
    for name, reason in missing.items():
        lines.append(f"Backend {name} skipped: {reason}")
    load = extra.get("other_load")
    if load:
        busy = load["other_cores"]
        note = " — figures are unreliable, compare within the run or use --stat min" if busy >= 0.25 else ""
        lines.append(f"Other work on this machine during the run: {busy:.2f} cores on average "
                     f"over {load['seconds']:.0f} s{note}")
    repeats = extra.get("repeats")
    if repeats and repeats.get("runs", 1) > 1:
        lines.append(f"Best of {repeats['runs']} runs: each case comes from the run where its "
                     f"{repeats.get('stat', 'median')} was lowest.")
    if extra.get("quick"):
        lines.append("Quick run (--quick): fewer rounds, noisier figures.")
    return lines


# ------------------------------------------------------------------ sections
def times_section(rows: list[Case], stat: str) -> list[str]:
    index = _index(rows)
    out = [f"## {stat.capitalize()} time of every case", ""]
    body = []
    for group in groups(rows):
        for r in sorted((r for r in rows if r.group == group), key=lambda r: r.seconds):
            ref = _counterpart(r, index)
            speed = ref.seconds / r.seconds if ref is not None and ref is not r else None
            mark = "*" if r.scale != 1.0 else ""
            body.append([group, r.name, fmt_time(r.seconds) + mark, fmt_time(r.fastest) + mark,
                         str(r.rounds), fmt_ratio(speed) if speed else ""])
    out += _table(["group", "case", stat, "min", "rounds", "vs numpy"], body)
    return out + _footnote(rows)


SUMMARY_COLUMNS = ("numpy", "numba", "cupy", "book", "matmul-floor", "torch-manual",
                   "torch-autograd", "torch-cuda-manual", "torch-cuda-autograd", "jax-jit")


def summary_section(rows: list[Case], stat: str) -> list[str]:
    """One row per step/predict group, one column per implementation."""
    index = _index(rows)
    for r in rows:  # a prediction's floor is named "matmul"
        if r.suite == "predict" and r.name == "matmul":
            index.setdefault((r.group, "matmul-floor"), r)
    timed = [g for g in groups(rows) if g.split("-")[0] in ("step", "predict")]
    columns = [c for c in SUMMARY_COLUMNS if any((g, c) in index for g in timed)]
    timed = [g for g in timed if any((g, c) in index for c in columns)]  # not the "-rounds" groups
    if not timed or not columns:
        return []
    body = [[g] + [fmt_time(index[g, c].seconds) if (g, c) in index else "–" for c in columns] for g in timed]
    return [f"## Summary ({stat})", ""] + _table(["group"] + columns, body)


def _footnote(rows: list[Case]) -> list[str]:
    scaled = [r for r in rows if r.scale != 1.0]
    loops = [r for r in scaled if "params_timed" in r.info]
    chunks = [r for r in scaled if "steps_per_call" in r.info]
    notes = []
    conv = [r for r in loops if r.info.get("suite") == "conv-numgrad"]
    loops = [r for r in loops if r not in conv]
    if loops:
        timed = loops[0].info["params_timed"]
        notes.append(f"* the book's loop timed on {timed} parameters and scaled to the whole net "
                     f"({len(loops)} cases): every parameter costs the same two forward passes in that loop.")
    if conv:
        notes.append(f"* conv nets' numerical gradients timed on a sample of every parameter array and scaled "
                     f"({len(conv)} cases; see benchmarks/bench_conv.py).")
    if chunks:
        per = chunks[0].info["steps_per_call"]
        notes.append(f"* one timed call ran {per} steps with one device sync ({len(chunks)} cases): "
                     "the time shown is per step (throughput).")
    return [""] + notes if notes else []


def numgrad_section(rows: list[Case]) -> list[str]:
    index = _index(rows)
    body = []
    for group in groups(rows):
        for impl in BACKENDS:
            num, back = index.get((group, f"{impl}-numerical")), index.get((group, f"{impl}-backprop"))
            if num is None or back is None:
                continue
            book = index.get((group, "numpy-numerical"))
            speed = book.seconds / num.seconds if book is not None else None
            body.append([group.removeprefix("numgrad-"), impl, fmt_time(num.seconds) + ("*" if num.scale != 1 else ""),
                         fmt_time(back.seconds), fmt_ratio(num.seconds / back.seconds), fmt_ratio(speed)])
    if not body:
        return []
    header = ["net, batch", "backend", "numerical", "backprop", "numerical / backprop", "numerical vs book loop"]
    return ["## Numerical gradient vs backprop", "", *_table(header, body), *_footnote(rows)]


def speedup_section(rows: list[Case]) -> list[str]:
    index = _index(rows)
    present = [b for b in BACKENDS[1:] if any(r.impl == b for r in rows)]
    if not present:
        return []
    body = []
    for group in groups(rows):
        for name in ("numpy", "numpy-bookstyle", "numpy-numerical", "numpy-backprop"):
            ref = index.get((group, name))
            if ref is None:
                continue
            cells = [group, name[len("numpy"):].lstrip("-") or "public API"]
            for b in present:
                other = index.get((group, b + name[len("numpy"):]))
                cells.append(fmt_ratio(ref.seconds / other.seconds) if other else "–")
            body.append(cells)
    if not body:
        return []
    return ["## Speed-up over the numpy backend", ""] + _table(["group", "case"] + present, body)


# (group, case, limit in seconds) for the CuPy backend; times per step where a call ran several
GPU_LIMITS = (
    ("gpu-step-B100-float32", "cupy", 30e-6),
    ("gpu-step-B1000-float32", "cupy", 60e-6),
    ("gpu-step-B100-float64", "cupy", 40e-6),
    ("gpu-numgrad-B100-float64", "cupy", 3e-3),
    ("gpu-epoch-600x100-float32", "cupy", 10e-3),
    ("gpu-conv-numgrad-simple-B10", "cupy", 0.5),
    # ch08/train_deepnet.py's 20 epochs in 30 s: 1.5 s an epoch (its evaluations not counted here)
    ("gpu-conv-epoch-deep-600x100-float32", "cupy", 1.5),
)
# (label, slower case, faster case, at least this ratio)
GPU_RATIOS = (
    ("book-style loop vs the book's algorithm, B100 fp32", ("gpu-step-B100-float32", "cupy-book"),
     ("gpu-step-B100-float32", "cupy-bookstyle"), 5.0),
    ("numerical gradient: book's loop vs fused", ("gpu-numgrad-B100-float64", "cupy-book-loop"),
     ("gpu-numgrad-B100-float64", "cupy"), 10_000.0),
    ("SimpleConvNet step, B100 fp32: PyTorch's graph vs cupy", ("gpu-conv-simple-B100-float32", "torch-cuda-graph"),
     ("gpu-conv-simple-B100-float32", "cupy"), 1.0),
    ("DeepConvNet step, B100 fp32: PyTorch's graph vs cupy", ("gpu-conv-deep-B100-float32", "torch-cuda-graph"),
     ("gpu-conv-deep-B100-float32", "cupy"), 1.0),
)


NOISY = 3.0  # a median this many times its case's fastest round: other work had the cores


def verdict(met: bool, *cases: Case) -> str:
    """"yes" or "no"; "unsure" when a case's median is over NOISY times its fastest round, so
    the ratio says more about other work on the machine than about the code."""
    spread = max((c.seconds / c.fastest for c in cases if c.fastest > 0), default=1.0)
    if spread > NOISY:
        return f"unsure (a median {spread:.0f}x its fastest round)"
    return "yes" if met else "no"


def gpu_section(rows: list[Case]) -> list[str]:
    """The CuPy backend's targets: absolute times, and the best PyTorch mode beside each."""
    index = _index(rows)
    body = []
    for group, case, limit in GPU_LIMITS:
        row = index.get((group, case))
        if row is None:
            continue
        peer = index.get((group, "torch-cuda-graph"))
        vs = fmt_ratio(peer.seconds / row.seconds) if peer else "–"
        body.append([f"{group} · {case}", fmt_time(row.seconds), f"<= {fmt_time(limit)}", vs,
                     verdict(row.seconds <= limit, row)])
    for label, slow, fast, bound in GPU_RATIOS:
        a, b = index.get(slow), index.get(fast)
        if a is None or b is None:
            continue
        ratio = a.seconds / b.seconds
        body.append([label, f"{ratio:,.3g}x", f">= {bound:,g}x", "–", verdict(ratio >= bound, a, b)])
    if not body:
        return []
    header = ["case", "time or ratio", "target", "torch-cuda-graph / this", "met"]
    return ["## GPU targets", ""] + _table(header, body)


def targets_section(rows: list[Case]) -> list[str]:
    index = _index(rows)
    body = []
    for t in TARGETS:
        top, bottom = index.get(t.top), index.get(t.bottom)
        if top is None or bottom is None:
            continue
        ratio = top.seconds / bottom.seconds
        met = ratio <= t.bound if t.op == "<=" else ratio >= t.bound
        body.append([t.label, f"{ratio:,.3g}", f"{t.op} {t.bound:g}", verdict(met, top, bottom)])
    rounds = {r.group: r for r in rows if r.name in ("rounds", "layers-rounds")}
    for label, group, key, op, bound in ROUND_TARGETS:
        ratio = (rounds[group].info.get("ratios") or {}).get(key) if group in rounds else None
        if ratio is None:
            continue
        met = ratio <= bound if op == "<=" else ratio >= bound
        body.append([label, f"{ratio:,.3g}", f"{op} {bound:g}", "yes" if met else "no"])
    if not body:
        return []
    return ["## Ratios with targets (numba)", ""] + _table(["ratio", "value", "target", "met"], body)


def report(data: dict[str, Any], stat: str = "median") -> str:
    """The whole report as Markdown text."""
    rows = cases(data, stat)
    parts = [["# fastnet benchmarks", "", *machine_lines(data)]]
    sections = (summary_section(rows, stat), numgrad_section(rows), speedup_section(rows),
                targets_section(rows), gpu_section(rows), times_section(rows, stat))
    for section in sections:
        if section:
            parts.append(section)
    return "\n\n".join("\n".join(p) for p in parts) + "\n"


