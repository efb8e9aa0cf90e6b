"""One CuPy elementwise launch per optimizer update of one parameter.

The book's ``p -= lr * g`` is two launches on CuPy (the product, then the
subtraction), Adam's update about ten. These kernels do each update in one
pass, in the book's order of operations; coefficients the book computes as
Python floats arrive here already computed (float64) and are rounded to the
array's type once, as NumPy does with a Python scalar. Outputs are passed in
explicitly, so the arrays are updated in place.
"""

from __future__ import annotations

from typing import Any

# name: (inputs, outputs updated in place, body)
UPDATE_KERNELS: dict[str, tuple[str, str, str]] = {
    "sgd": ("T g, float64 lr", "T p", "p -= (T)lr * g;"),
    "momentum": (
        "T g, float64 lr, float64 mom", "T p, T v",
        "T nv = v * (T)mom - (T)lr * g; v = nv; p += nv;",
    ),
    "nesterov": (
        "T g, float64 lr, float64 mom, float64 mom2, float64 nes", "T p, T v",
        "T nv = v * (T)mom - (T)lr * g; v = nv; T q = p + (T)mom2 * nv; p = q - (T)nes * g;",
    ),
    "adagrad": (
        "T g, float64 lr, float64 eps", "T p, T h",
        "T nh = h + g * g; h = nh; p -= (T)lr * g / (sqrt(nh) + (T)eps);",
    ),
    "rmsprop": (
        "T g, float64 lr, float64 decay, float64 one_minus_decay, float64 eps", "T p, T h",
        (
            "T nh = h * (T)decay; nh = nh + (T)one_minus_decay * g * g; h = nh;"
            " p -= (T)lr * g / (sqrt(nh) + (T)eps);"
        ),
    ),
    "adam": (
        "T g, float64 lr_t, float64 one_minus_b1, float64 one_minus_b2, float64 eps", "T p, T m, T v",
        (
            "T nm = m + (T)one_minus_b1 * (g - m); m = nm;"
            " T nv = v + (T)one_minus_b2 * (g * g - v); v = nv;"
            " p -= (T)lr_t * nm / (sqrt(nv) + (T)eps);"
        ),
    ),
}


class UpdateKernels:
    """``kernels.sgd(g, lr, p)``, ``kernels.adam(g, lr_t, 1-b1, 1-b2, eps, p, m, v)``, ..."""

    def __init__(self, cupy: Any) -> None:
        for name, (ins, outs, body) in UPDATE_KERNELS.items():
            setattr(self, name, cupy.ElementwiseKernel(ins, outs, body, f"fastnet_{name}"))


def check_source(real: str) -> str:
    """The update bodies as plain device functions, to compile-check them without CuPy."""
    ctype = {"float64": "double", "float32": "float"}
    parts = [f"typedef {real} T;"]
    for name, (ins, outs, body) in UPDATE_KERNELS.items():
        args = []
        for decl in ins.split(","):
            t, n = decl.split()
            args.append(f"const {'T' if t == 'T' else ctype[t]} {n}")
        args += [f"T& {decl.split()[1]}" for decl in outs.split(",")]
        parts.append(f"__device__ void check_{name}({', '.join(args)}) {{ {body} }}")
    return "\n".join(parts) + "\n"


def raw_source(real: str) -> str:
    """Each update as a raw kernel over flat arrays, arguments in ElementwiseKernel's order.

    CuPy binds ``kernel(*inputs, *outputs)`` by position; the emulator runs
    this text to check both the bodies and the order the backend passes.
    """
    ctype = {"float64": "double", "float32": "float"}
    parts = [f"typedef {real} real;", "typedef real T;"]
    for name, (ins, outs, body) in UPDATE_KERNELS.items():
        params, binds = [], []
        for decl in ins.split(","):
            t, n = decl.split()
            if t == "T":
                params.append(f"const T* {n}_")
                binds.append(f"const T {n} = {n}_[i];")
            else:
                params.append(f"{ctype[t]} {n}")
        for decl in outs.split(","):
            n = decl.split()[1]
            params.append(f"T* {n}_")
            binds.append(f"T& {n} = {n}_[i];")
        params.append("long long n")
        parts.append(
            f'extern "C" __global__ void ew_{name}({", ".join(params)}) {{\n'
            "  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
            f"  if (i < n) {{ {' '.join(binds)} {body} }}\n}}"
        )
    return "\n".join(parts) + "\n"
