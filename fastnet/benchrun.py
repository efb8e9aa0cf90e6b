"""Running fastnet's benchmark suites: where they are, one run, the best of several.

``fastnet.benchreport`` (``fastnet bench``) calls these; they return or write
pytest-benchmark JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CORE", "best_of", "find_suites", "load", "merge_load", "run_suites"]

CORE = ("bench_numgrad.py", "bench_predict.py", "bench_step.py")  # run together, in one process


def load(path: str | os.PathLike) -> dict[str, Any]:
    """A pytest-benchmark JSON file, checked to hold a ``benchmarks`` list."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list)")  # noqa: TRY004
    return data


def find_suites() -> Path | None:
    """The ``benchmarks`` folder of a fastnet checkout (beside the package, or under cwd)."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        folder = root / "benchmarks"
        if (folder / "bench_step.py").is_file():
            return folder
    return None


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
