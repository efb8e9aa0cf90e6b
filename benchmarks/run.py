"""Run fastnet's benchmark suites, or read a saved run, and print the report.

Usage, from a clone of the repository (``fastnet bench`` takes the same arguments)::

    python -m benchmarks.run                  # run the suites (a few minutes), report
    python -m benchmarks.run --quick          # fewer rounds, noisier
    python -m benchmarks.run --json run.json  # report a saved pytest-benchmark JSON

Alongside the report (``benchmarks/report.py``) it writes a PNG chart
(``benchmarks/chart.py``, needs matplotlib).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .chart import write_chart
from .report import load, report

__all__ = ["CORE", "best_of", "find_suites", "main", "make_parser", "merge_load", "missing_tools", "run_suites"]

CORE = ("bench_numgrad.py", "bench_predict.py", "bench_step.py")  # run together, in one process


def find_suites() -> Path:
    """The folder of the suites: this module's own."""
    return Path(__file__).resolve().parent


def merge_load(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Average the other-work figure of two runs, weighted by their durations."""
    loads = [(d.get("machine_info") or {}).get("fastnet", {}).get("other_load") for d in (into, other)]
    if all(loads):
        seconds = loads[0]["seconds"] + loads[1]["seconds"]
        cores = sum(x["other_cores"] * x["seconds"] for x in loads) / max(seconds, 1e-9)
        into["machine_info"]["fastnet"]["other_load"] = {"other_cores": round(cores, 2), "seconds": round(seconds, 1)}


def best_of(runs: Sequence[dict[str, Any]], stat: str = "median") -> dict[str, Any]:
    """One run made of each case's least disturbed repetition (its lowest `stat`).

    On a shared machine other work slows whole stretches of a run; a case hit
    by such a stretch in one repetition is usually clean in another.
    """
    merged = dict(runs[0])
    merged["machine_info"] = json.loads(json.dumps(runs[0].get("machine_info") or {}))
    for other in runs[1:]:
        merge_load(merged, other)
    entries: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for i, run in enumerate(runs):
        for bench in run["benchmarks"]:
            entries.setdefault(bench.get("fullname") or bench["name"], []).append((i, bench))
    chosen = []
    for found in entries.values():
        i, bench = min(found, key=lambda e: e[1]["stats"][stat])
        info = dict(bench.get("extra_info") or {})
        info["repeats"] = {"chosen_run": i, stat: [b["stats"][stat] for _, b in found]}
        chosen.append({**bench, "extra_info": info})
    merged["benchmarks"] = chosen
    merged["machine_info"].setdefault("fastnet", {})["repeats"] = {"runs": len(runs), "stat": stat}
    return merged


def run_suites(folder: Path, out: Path, *, quick: bool = False, select: str | None = None,
               extra: Sequence[str] = ()) -> int:
    """Run the suites with pytest-benchmark and merge their JSON into `out`.

    fastnet's own CPU suites run in one process; every other suite (PyTorch and
    JAX peers, GPU, distributed) in a process of its own, so that thread pools,
    devices and worker processes left behind by one never slow another.
    """
    files = sorted(p.name for p in folder.glob("bench_*.py"))
    core = [f for f in files if f in CORE]
    passes = ([core] if core else []) + [[f] for f in files if f not in CORE]
    env = dict(os.environ, FASTNET_BENCH_QUICK="1" if quick else "0")
    merged: dict[str, Any] | None = None
    status = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, chunk in enumerate(passes):
            part = Path(tmp) / f"part{i}.json"
            cmd = [sys.executable, "-m", "pytest", *[str(folder / f) for f in chunk], "-q",
                   "-p", "no:cacheprovider", f"--benchmark-json={part}", "--benchmark-group-by=group"]
            if quick:
                cmd += ["--benchmark-max-time=0.25", "--benchmark-min-rounds=3"]
            if select:
                cmd += ["-k", select]
            cmd += list(extra)
            print("running:", " ".join(cmd[2:]), flush=True)
            done = subprocess.run(cmd, cwd=folder.parent, env=env, capture_output=True, text=True, check=False)
            log = out.with_suffix(f".part{i}.log")
            log.write_text(done.stdout + done.stderr, encoding="utf-8")
            tail = [line for line in done.stdout.splitlines() if line.strip()][-1:]
            print("  " + (tail[0] if tail else "(no output)") + f"  [log: {log}]", flush=True)
            if done.returncode not in (0, 5):  # 5: every case deselected or skipped
                status = done.returncode
            if part.is_file():
                data = load(part)
                if merged is None:
                    merged = data
                else:
                    merged["benchmarks"] += data["benchmarks"]
                    merge_load(merged, data)
    if merged is None:
        return status or 1
    out.write_text(json.dumps(merged, indent=1), encoding="utf-8")
    return status


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastnet bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="PATH", help="report this saved pytest-benchmark JSON instead of running")
    p.add_argument("--quick", action="store_true", help="fewer rounds: faster, noisier")
    p.add_argument("-k", dest="select", metavar="EXPR", help="only cases matching this pytest -k expression")
    p.add_argument("--save", metavar="PATH", help="where a new run's JSON goes (default .benchmarks/fastnet-<time>.json)")
    p.add_argument("--chart", metavar="PATH", help="PNG chart path (default: the JSON's path with .png)")
    p.add_argument("--no-chart", action="store_true", help="do not write a chart")
    p.add_argument("--report", metavar="PATH", help="also write the report (Markdown) to this file")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run the suites N times and keep each case's least disturbed run (default 1)")
    p.add_argument("--stat", choices=("median", "min", "mean"), default="median",
                   help="statistic of each case's rounds (default median)")
    p.add_argument("--suites", metavar="DIR", help="the folder of the suites (default: this one)")
    return p


def missing_tools() -> list[str]:
    """The packages the suites need that this Python lacks (the ``bench`` extra)."""
    import importlib.util

    return [name for name, module in (("pytest", "pytest"), ("pytest-benchmark", "pytest_benchmark"))
            if importlib.util.find_spec(module) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    status = 0
    if args.json:
        path = Path(args.json)
        if not path.is_file():
            print(f"fastnet bench: no such file: {path}", file=sys.stderr)
            return 2
    else:
        missing = missing_tools()
        if missing:
            print(f"fastnet bench: running the suites needs {' and '.join(missing)}: "
                  f"pip install 'fastnet[bench]' (in a clone: pip install -e '.[bench]')", file=sys.stderr)
            return 2
        folder = Path(args.suites) if args.suites else find_suites()
        if not folder.is_dir():
            print(f"fastnet bench: --suites {folder}: no such folder", file=sys.stderr)
            return 2
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(args.save) if args.save else Path(".benchmarks") / f"fastnet-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        if args.repeat < 1:
            print("fastnet bench: --repeat must be at least 1", file=sys.stderr)
            return 2
        if args.repeat == 1:
            status = run_suites(folder, path, quick=args.quick, select=args.select)
        else:
            runs = []
            for i in range(args.repeat):
                part = path.with_suffix(f".run{i + 1}.json")
                status = run_suites(folder, part, quick=args.quick, select=args.select) or status
                if part.is_file():
                    runs.append(load(part))
            if runs:
                path.write_text(json.dumps(best_of(runs, args.stat), indent=1), encoding="utf-8")
        if not path.is_file():
            print("fastnet bench: the suites produced no results (see the log above)", file=sys.stderr)
            return status or 1
        if status:
            print(f"fastnet bench: some cases failed (pytest exit {status}); reporting the others",
                  file=sys.stderr)
        print(f"results saved to {path}")
    try:
        data = load(path)
    except (OSError, ValueError) as exc:
        print(f"fastnet bench: {exc}", file=sys.stderr)
        return 2
    text = report(data, args.stat)
    print(text)
    if args.report:
        Path(args.report).write_text(text, encoding="utf-8")
    if not args.no_chart:
        print(write_chart(data, Path(args.chart) if args.chart else path.with_suffix(".png"), args.stat))
    return 1 if status else 0


if __name__ == "__main__":
    raise SystemExit(main())
