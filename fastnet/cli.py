"""The ``fastnet`` command: train, eval, gradcheck, tune, bench, info.

Every failure a user can cause (a bad argument, a missing data set, an
unavailable backend, a diverging run) ends with a one-line message, a usage
hint and a non-zero exit status; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .cli_common import EXIT_FAIL, EXIT_USAGE, Parser, UsageError, one_line_usage_error, say

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``fastnet`` argument parser (subcommands train, eval, gradcheck, tune, bench, info)."""
    from . import __version__

    parser = Parser(
        prog="fastnet",
        description="The neural networks of 'Deep Learning from Scratch' on NumPy, Numba or CuPy.",
        epilog="Run 'fastnet COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"fastnet {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    from .cli_eval import add_parser as add_eval
    from .cli_gradcheck import add_parser as add_gradcheck
    from .cli_train import add_parser as add_train
    from .cli_tune import add_parser as add_tune

    add_train(sub)
    add_eval(sub)
    add_gradcheck(sub)
    add_tune(sub)
    bench = sub.add_parser("bench", add_help=False,
                           help="run the benchmarks of a clone of the repository (options: fastnet bench --help)")
    bench.set_defaults(func=None)

    info = sub.add_parser("info", help="version, backends, device and thread counts")
    info.add_argument("--debug", action="store_true", help="show the traceback on errors")
    info.set_defaults(func=cmd_info)
    parser.commands = dict(sub.choices)
    return parser


def find_benchmarks() -> Path | None:
    """The ``benchmarks`` folder beside the package: present in a clone, absent from an install."""
    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    return folder if (folder / "run.py").is_file() and (folder / "__init__.py").is_file() else None


def load_benchmarks(folder: Path) -> Any:
    """``benchmarks.run`` of that folder, imported as the package ``benchmarks``."""
    import importlib
    import importlib.util

    loaded = sys.modules.get("benchmarks")
    if loaded is None:
        spec = importlib.util.spec_from_file_location("benchmarks", folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        loaded = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["benchmarks"] = loaded
        spec.loader.exec_module(loaded)  # type: ignore[union-attr]
    elif Path(getattr(loaded, "__file__", "") or "").resolve().parent != folder:
        raise ImportError(f"another module named 'benchmarks' is already imported ({loaded.__file__}); "
                          f"run 'python -m benchmarks.run' from {folder.parent} instead")
    return importlib.import_module("benchmarks.run")


def cmd_bench(argv: list[str]) -> int:
    folder = find_benchmarks()
    if folder is None:
        print("fastnet bench: the benchmark suites ship with the repository, not with an installed package: "
              "clone fastnet, then run 'pip install -e .[bench]' and 'fastnet bench' inside the clone",
              file=sys.stderr)
        return EXIT_FAIL
    run = load_benchmarks(folder)
    bench_parser = run.make_parser()  # check the options first, so a typo is one line, not the usage block
    bench_parser.error = lambda message: one_line_usage_error(bench_parser.prog, message)  # type: ignore[method-assign]
    try:
        bench_parser.parse_args(argv)
    except SystemExit as stop:  # a usage error (already printed) or --help
        return int(stop.code or 0) if not isinstance(stop.code, str) else EXIT_USAGE
    return int(run.main(argv) or 0)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _command_default() -> str:
    """What ``fastnet train`` and ``gradcheck`` pick without --backend: FASTNET_BACKEND, else "auto"."""
    from .backend import resolve

    try:
        return resolve(os.environ.get("FASTNET_BACKEND", "").strip() or "auto")
    except Exception as exc:  # noqa: BLE001 -- reported, not raised: info must still print the rest
        return f"none ({exc})"


def cmd_info(args: argparse.Namespace) -> int:
    import numpy

    from . import __version__
    from .backend import available_backends, get_backend

    say(f"fastnet {__version__} (Python {platform.python_version()}, NumPy {numpy.__version__})")
    try:
        current = get_backend().name
    except Exception as exc:  # a bad FASTNET_BACKEND should not hide the rest
        current = f"none ({exc})"
    say(f"default backend: {current} in Python (FASTNET_BACKEND={os.environ.get('FASTNET_BACKEND', '') or 'unset'});"
        f" the commands' --backend default: {_command_default()}")
    say("backends:")
    statuses = available_backends()
    for status in statuses.values():
        say(f"  {status.name:<6} {'available' if status.available else 'unavailable: ' + status.reason}")
    say(f"CPU: {_cpu_model()}, {os.cpu_count()} logical core(s)")
    if statuses["cupy"].available:
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            say(f"GPU: {gpu}, {props['totalGlobalMem'] / 2**30:.0f} GiB, CuPy {cupy.__version__}, "
                 f"CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}")
        except Exception as exc:
            say(f"GPU: could not query the device ({exc})")
    else:
        say("GPU: none usable")
    say("threads:")
    try:
        import numba

        say(f"  numba {numba.__version__}: {numba.get_num_threads()} thread(s) "
             f"(NUMBA_NUM_THREADS={getattr(numba.config, 'NUMBA_NUM_THREADS', '?')})")
    except ImportError:
        say("  numba: not installed")
    try:
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, the one numba's np.dot uses)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        say("  BLAS: unknown (install threadpoolctl to see it)")
    else:
        for pool in threadpool_info():
            lib = " ".join(str(v) for v in (pool.get("internal_api"), pool.get("version")) if v)
            where = os.path.basename(os.path.dirname(pool.get("filepath", ""))) or "?"
            say(f"  {pool.get('user_api')}: {lib}, {pool.get('num_threads')} thread(s) (from {where})")
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
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAIL
