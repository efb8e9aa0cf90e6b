"""Compile the generated CUDA sources without a GPU: nvcc, or NVRTC through CuPy.

A plan's module text depends on its layout, so the text for many layouts is
assembled here on a "dry" device (NumPy buffers, nothing compiled) and handed
to a compiler. Run ``python -m cuda_checks (tests/backend/cupy)`` to
compile every variant of ``variants(full=True)`` with each compiler found.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy

from fastnet.backend.cupy import conv, cuda
from fastnet.backend.cupy.launch import rows_shape
from fastnet.backend.cupy.plan import Layout
from fastnet.backend.cupy.plan_conv import ConvPlan, blocks
from fastnet.backend.cupy.plan_rows import RowsPlan
from fastnet.backend.cupy.plan_tiled import TiledPlan
from cuda_emulator import H100, template_declaration
from fastnet.backend.cupy.numgrad import kernel_names


class _DryModule:
    def get_function(self, name: str) -> None:
        return None


class DryDevice:
    """Enough of a device to build a plan and read its source; runs nothing."""

    name = "dry"
    can_capture = False

    def __init__(self) -> None:
        self.xp = numpy
        self.sources: list[str] = []

    def hardware(self) -> Any:
        return H100

    def module(self, source: str, names: Any = ()) -> _DryModule:
        self.sources.append(explicit(source, names))
        return _DryModule()

    def ptr(self, arr: Any) -> int:
        return int(arr.ctypes.data)

    def upload(self, dst: Any, host: Any) -> None:
        dst[...] = host

    def zero(self, dst: Any) -> None:
        dst[...] = 0

    def matmul(self, a: Any, b: Any, out: Any) -> None:
        raise RuntimeError("the dry device runs nothing")


def plan_source(layout: Layout) -> str:
    """The CUDA module text a plan with this layout compiles."""
    dev = DryDevice()
    (ConvPlan if layout.conv else RowsPlan if layout.rows_per_block else TiledPlan)(dev, layout, H100)
    return dev.sources[-1]


def variants(full: bool = False) -> Iterator[tuple[str, str]]:
    """(label, source) pairs covering every generated code path.

    The short list touches each kernel kind, epilogue, dtype, activation,
    optimizer, label form, split-K and the cuBLAS epilogues at least once;
    ``full`` is the cross product.
    """
    short = [
        # sizes, rows, dtype, act, onehot, decay, stage, kind, gather, blas
        ((784, 50, 10), 100, "float32", "relu", False, 0.0, "train", "sgd", False, ()),
        ((784, 50, 10), 100, "float64", "sigmoid", True, 0.1, "train", "adam", False, ()),
        ((784, 50, 10), 1000, "float32", "relu", False, 0.0, "train", "momentum", True, ()),
        ((784, 100, 60, 10), 64, "float64", "relu", True, 0.0, "train", "nesterov", False, (True, False, False)),
        ((30, 20, 5), 7, "float32", "sigmoid", False, 0.01, "train", "adagrad", True, ()),
        ((30, 20, 5), 7, "float64", "relu", False, 0.0, "train", "rmsprop", False, (True, True)),
        ((784, 50, 10), 10000, "float32", "relu", False, 0.0, "predict", None, False, (True, False)),
        ((784, 50, 10), 100, "float32", "sigmoid", True, 0.0, "loss", None, False, ()),
        ((784, 50, 10), 100, "float64", "relu", False, 0.0, "grad", None, False, ()),
        ((784, 50, 10), 100, "float32", "tanh", False, 0.01, "train", "adamw", False, ()),
        ((784, 100, 60, 10), 64, "float64", "tanh", True, 0.0, "train", "adamw", False, (True, False, False)),
    ]
    cases = short
    if full:
        cases = [
            ((784, 50, 10), 100, dt, act, oh, dec, "train", kind, gather, ())
            for dt, act, oh, dec, kind, gather in itertools.product(
                ("float32", "float64"), tuple(cuda.ACTIVATIONS), (False, True), (0.0, 0.1),
                tuple(cuda.RULES), (False, True),
            )
        ] + short
    rows_cases = [  # the two-kernel step: every stage, optimizer and label form
        ((784, 50, 10), rows, dt, act, oh, dec, stage, kind, gather, ())
        for rows, dt, act, oh, dec, stage, kind, gather in (
            (100, "float32", "relu", False, 0.0, "train", "sgd", False),
            (1000, "float32", "relu", False, 0.0, "train", "sgd", True),
            (100, "float64", "sigmoid", True, 0.1, "train", "adam", False),
            (100, "float64", "relu", False, 0.01, "grad", None, False),
            (100, "float32", "sigmoid", True, 0.0, "loss", None, False),
            (10000, "float32", "relu", False, 0.0, "predict", None, False),
            (100, "float32", "tanh", False, 0.0, "train", "adamw", True),
        )
    ] + [
        ((784, 100, 60, 10), 64, "float64", "relu", True, 0.0, "train", kind, False, ())
        for kind in tuple(cuda.RULES)
    ]
    for sizes, rows, dt, act, oh, dec, stage, kind, gather, blas in cases:
        layout = Layout(sizes, rows, dt, act, oh, dec, stage, kind, gather, blas, steps=3 if gather else 0)
        label = f"{stage}-{'-'.join(map(str, sizes))}-B{rows}-{dt}-{act}-{'onehot' if oh else 'labels'}" + (
            f"-{kind}" if kind else "") + ("-decay" if dec else "") + ("-gather" if gather else "") + (
            "-blas" if any(blas) else "")
        yield label, plan_source(layout)
    for sizes, rows, dt, act, oh, dec, stage, kind, gather, _ in rows_cases:
        shape = rows_shape(sizes, rows, numpy.dtype(dt).itemsize, H100)
        assert shape is not None
        layout = Layout(sizes, rows, dt, act, oh, dec, stage, kind, gather, rows_per_block=shape.per_block,
                        steps=3 if gather else 0)
        yield (f"rows-{stage}-{'-'.join(map(str, sizes))}-B{rows}-{dt}-{act}-{kind}"
               + ("" if gather else "-batch"), plan_source(layout))
    for sizes, act in (((784, 50, 10), "relu"), ((784, 50, 10), "sigmoid"), ((20, 10), "relu"),
                       ((9, 7, 5, 3), "sigmoid"), ((9, 7, 5, 3), "tanh")):
        names = list(kernel_names(100, sizes, act).values())
        yield f"numgrad-{'-'.join(map(str, sizes))}-{act}", explicit(cuda.source("numgrad.cu"), names)
    simple = (1, 28, 28, (30, 5, 5, 1, 0, 1))
    deep = (1, 28, 28, (16, 3, 3, 1, 1, 0), (16, 3, 3, 1, 1, 1), (32, 3, 3, 1, 1, 0), (32, 3, 3, 1, 2, 1),
            (64, 3, 3, 1, 1, 0), (64, 3, 3, 1, 1, 1))
    for rows, dt, oh, kind, gather, geometry, dropout in (  # the book's conv nets (plan_conv)
            (100, "float32", False, "adam", False, simple, False),
            (100, "float64", True, "sgd", True, simple, False),
            (7, "float32", False, "adamw", True, (3, 9, 10, (4, 3, 3, 2, 1, 1)), False),
            (100, "float32", False, "adam", False, deep, True),
            (100, "float64", True, "momentum", False, deep, True)):
        last = blocks(geometry)[-1]
        h, w = last.pooled_hw if last.pool else last.out_hw
        layout = Layout((last.FN * h * w, 50, 10), rows, dt, "relu", oh, 0.0, "train", kind, gather,
                        steps=3 if gather else 0, conv=geometry, dropout=dropout)
        yield (f"conv{len(geometry) - 3}-train-B{rows}-{dt}-{kind}" + ("-gather" if gather else "")
               + ("-dropout" if dropout else ""), plan_source(layout))
    yield "updates", update_source()
    yield "conv", explicit(cuda.source("conv.cu"), conv.KERNELS)


def explicit(source: str, names: Any) -> str:
    """`source` with its template instantiations `names` spelled out, for compilers given
    no name expressions (nvcc -cubin; NVRTC as called here)."""
    lines = [source]
    for name in names:
        types, params = template_declaration(source, name)
        params = re.sub(r"\b\w+\b", lambda m: types.get(m.group(0), m.group(0)), params)
        lines.append(f"template __global__ void {name}({params});")
    return "\n".join(lines) + "\n"


def update_names() -> list[str]:
    """The instantiations of updates.cu the library asks for."""
    return [cuda.rule_kernel(r, k) for r in ("float", "double") for k in cuda.RULES]


def update_source() -> str:
    """updates.cu with the instantiations the library asks for spelled out."""
    return explicit(cuda.source("updates.cu"), update_names())


def nvcc() -> str | None:
    return shutil.which("nvcc")


def compile_nvcc(source: str, arch: str = "sm_90", verbose: bool = False) -> str:
    """Compile to a cubin with nvcc (as NVRTC would: device code only); returns ptxas' report."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cu")
        with open(path, "w") as f:
            f.write(source)
        cmd = [nvcc() or "nvcc", f"-arch={arch}", "-cubin", "-std=c++14", "-Werror", "all-warnings",
               "-diag-suppress", "177",  # a shared helper this module does not call
               "-o", os.path.join(tmp, "k.cubin"), path]
        if verbose:
            cmd.insert(1, "-Xptxas=-v")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"nvcc failed:\n{done.stderr[-6000:]}")
        return done.stderr


def compile_nvrtc(source: str, arch: str = "90") -> None:
    """Compile with NVRTC through CuPy's own wrapper, with the options the backend uses."""
    from cupy.cuda import compiler

    from fastnet.backend.cupy.device import NVRTC_OPTIONS

    prog = compiler._NVRTCProgram(source, "fastnet.cu", method="cubin")
    prog.compile((*NVRTC_OPTIONS, f"-arch=sm_{arch}", "--device-as-default-execution-space"))


def main(argv: list[str]) -> int:
    full = "--full" in argv
    failures = 0
    use_nvcc = nvcc() is not None and "--no-nvcc" not in argv
    try:
        import cupy  # noqa: F401

        use_nvrtc = "--no-nvrtc" not in argv
    except ImportError:
        use_nvrtc = False
    print(f"nvcc: {nvcc() if use_nvcc else 'not used'}; NVRTC via CuPy: {use_nvrtc}")
    for label, text in variants(full):
        for name, ok in (("nvrtc", use_nvrtc), ("nvcc", use_nvcc)):
            if not ok:
                continue
            try:
                if name == "nvcc":
                    report = compile_nvcc(text, verbose="-v" in argv)
                    if "-v" in argv:
                        print(report)
                else:
                    compile_nvrtc(text)
                print(f"ok    {name:5s} {label}")
            except Exception as exc:
                failures += 1
                print(f"FAIL  {name:5s} {label}\n{exc}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
