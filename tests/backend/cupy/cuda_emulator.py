"""Run the generated CUDA C on the CPU, one OS thread per CUDA thread.

A test tool for machines without a GPU. The kernel text is compiled by g++
with a small header that maps CUDA's names onto C++: ``threadIdx`` and
``blockIdx`` become thread-local variables, ``__shared__`` becomes
``static`` (blocks run one after another, so a block's threads share it),
and ``__syncthreads()`` is a barrier over the block's threads. Launches are
serial and synchronous; arguments are checked against the C signature (array
dtypes, exact scalar types), which is where a real launch would silently
misread memory.

What this does not check: anything specific to the GPU or CuPy (NVRTC,
memory coalescing, graph capture, streams), races between blocks (blocks do
not run concurrently here), and warp-level behaviour (the kernels use none).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import numpy

from fastnet.backend.cupy.launch import Hardware

# The device the launch shapes are made for in these tests: an H100's numbers
# (the shapes the kernels of commit b2f66d5 were generated for).
H100 = Hardware(sms=132, threads_per_sm=2048)

_HEADER = r"""
#include <math.h>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
using std::exp; using std::log; using std::sqrt; using std::pow;

struct dim3 { unsigned x, y, z; };
static thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

class EmuBarrier {
 public:
  explicit EmuBarrier(unsigned n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mu_);
    unsigned gen = gen_;
    if (++count_ == n_) { count_ = 0; ++gen_; cv_.notify_all(); return; }
    cv_.wait(lock, [&] { return gen != gen_; });
  }
 private:
  std::mutex mu_; std::condition_variable cv_;
  unsigned n_, count_ = 0, gen_ = 0;
};
static EmuBarrier* emu_barrier = nullptr;
static inline void __syncthreads() { emu_barrier->wait(); }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
#define __restrict__ __restrict

static void emu_launch(dim3 g, dim3 b, const std::function<void()>& body) {
  gridDim = g; blockDim = b;
  const unsigned nt = b.x * b.y * b.z;
  EmuBarrier barrier(nt);
  emu_barrier = &barrier;
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < nt; ++t) {
    threads.emplace_back([&, t] {
      threadIdx = {t % b.x, (t / b.x) % b.y, t / (b.x * b.y)};
      for (unsigned bz = 0; bz < g.z; ++bz)
        for (unsigned by = 0; by < g.y; ++by)
          for (unsigned bx = 0; bx < g.x; ++bx) {
            blockIdx = {bx, by, bz};
            body();
            barrier.wait();  // the next block may reuse shared memory
          }
    });
  }
  for (auto& th : threads) th.join();
}
"""

_KERNEL = re.compile(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\s*\(([^)]*)\)')
_TEMPLATE = re.compile(
    r"template\s*<([^{};]*?)>\s*__global__ void (?:__launch_bounds__\(\w+\)\s*)?(\w+)\s*\(([^)]*)\)")

_SCALARS = {
    "int": (ctypes.c_int, numpy.int32),
    "long long": (ctypes.c_longlong, numpy.int64),
    "double": (ctypes.c_double, numpy.float64),
    "float": (ctypes.c_float, numpy.float32),
}
_POINTEES = {
    "real": None,  # resolved from the module's typedef
    "float": numpy.float32,
    "double": numpy.float64,
    "long long": numpy.int64,
    "int": numpy.int32,
    "unsigned long long": numpy.uint64,
    "bool": numpy.bool_,
}

_lock = threading.Lock()


def compiler() -> str | None:
    """The C++ compiler the emulator uses, or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def _param(text: str) -> tuple[str, str, bool]:
    """('long long', 'n', False) or ('real', 'A', True) from one C parameter."""
    text = text.replace("__restrict__", " ").replace("const ", " ").strip()
    pointer = "*" in text
    words = text.replace("*", " ").split()
    return " ".join(words[:-1]), words[-1], pointer


class EmuKernel:
    """Called like a CuPy RawKernel: ``kernel(grid, block, args)``."""

    def __init__(self, fn: Any, name: str, params: list[tuple[str, str, bool]], real: Any) -> None:
        self.fn, self.name, self.params, self.real = fn, name, params, real

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.params)} parameters")
        cargs: list[Any] = []
        for value, (ctype, pname, pointer) in zip(args, self.params):
            if pointer:
                want = self.real if ctype in ("real", "T") else _POINTEES[ctype]
                if not isinstance(value, numpy.ndarray):
                    raise TypeError(f"{self.name}: {pname} must be an array, got {type(value)}")
                if value.dtype != want or not value.flags.c_contiguous:
                    raise TypeError(
                        f"{self.name}: {pname} must be a contiguous {numpy.dtype(want)} array, "
                        f"got {value.dtype} (contiguous={value.flags.c_contiguous})"
                    )
                cargs.append(ctypes.c_void_p(value.ctypes.data))
            else:
                c, np_type = _SCALARS[ctype]
                if type(value) is not np_type:  # CuPy needs exact NumPy scalar types too
                    raise TypeError(f"{self.name}: {pname} must be {np_type.__name__}, got {type(value)}")
                cargs.append(c(value))  # type: ignore[arg-type]
        g = tuple(grid) + (1,) * (3 - len(grid))
        b = tuple(block) + (1,) * (3 - len(block))
        with _lock:
            self.fn(*g, *b, *cargs)


def _split_top(text: str) -> list[str]:
    """`text` split at commas outside <...>."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()] if cur.strip() else parts


def template_declaration(source: str, expr: str) -> tuple[dict[str, str], str]:
    """({template parameter: argument}, the kernel's parameter list) of a name
    expression like ``apply_rule<float, Sgd>`` (as NVRTC is given it)."""
    base, args = expr.split("<", 1)
    args_list = _split_top(args.rsplit(">", 1)[0])
    for m in _TEMPLATE.finditer(source):
        if m.group(2) == base.strip():
            names = [p.split()[-1] for p in _split_top(m.group(1))]
            return dict(zip(names, args_list)), m.group(3)
    raise KeyError(f"no __global__ template {base!r} for {expr!r}")


def instantiate(source: str, expr: str) -> tuple[str, list[tuple[str, str, bool]]]:
    """(the call target, its parameters with the template's types filled in)."""
    types, text = template_declaration(source, expr)
    params = []
    for part in text.split(","):
        ctype, pname, ptr = _param(part)
        params.append((" ".join(types.get(w, w) for w in ctype.split()), pname, ptr))
    return expr, params


class EmuModule:
    """A module compiled by g++: its ``extern "C"`` kernels, and the template
    instantiations named in `names` (what NVRTC's name expressions give)."""

    def __init__(self, source: str, workdir: str, names: tuple[str, ...] = ()) -> None:
        real_match = re.search(r"typedef (float|double) real;", source)
        self.real = _POINTEES[real_match.group(1)] if real_match else None
        self.kernels = {m.group(1): (m.group(1), [_param(p) for p in m.group(2).split(",")])
                        for m in _KERNEL.finditer(source)}
        for expr in names:
            self.kernels[expr] = instantiate(source, expr)
        self.symbols = {name: f"emu_k{i}" for i, name in enumerate(self.kernels)}
        wrappers = []
        for name, (target, params) in self.kernels.items():
            decl = ", ".join(("void*" if ptr else t) + " " + n for t, n, ptr in params)
            cast = ", ".join(
                f"({t}*){n}" if ptr else n for t, n, ptr in params
            )
            wrappers.append(
                f'extern "C" void {self.symbols[name]}(unsigned gx, unsigned gy, unsigned gz, unsigned bx,'
                f" unsigned by, unsigned bz, {decl}) {{"
                f" emu_launch({{gx, gy, gz}}, {{bx, by, bz}}, [&] {{ {target}({cast}); }}); }}"
            )
        text = _HEADER + source + "\n" + "\n".join(wrappers) + "\n"
        digest = hashlib.sha256(text.encode()).hexdigest()[:20]
        lib = os.path.join(workdir, f"emu_{digest}.so")
        if not os.path.exists(lib):
            src = os.path.join(workdir, f"emu_{digest}.cpp")
            with open(src, "w") as f:
                f.write(text)
            cmd = [compiler() or "g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-pthread",
                   "-Wno-unused-variable", "-o", lib + ".tmp", src]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"emulator compile failed:\n{done.stderr[-4000:]}")
            os.replace(lib + ".tmp", lib)
        self.lib = ctypes.CDLL(lib)

    def get_function(self, name: str) -> EmuKernel:
        _, params = self.kernels[name]
        fn = getattr(self.lib, self.symbols[name])
        fn.restype = None
        fn.argtypes = [ctypes.c_uint] * 6 + [
            ctypes.c_void_p if ptr else _SCALARS[t][0] for t, _, ptr in params
        ]
        return EmuKernel(fn, name, params, self.real)


class EmuDevice:
    """The device interface of ``device.CupyDevice`` on NumPy arrays and the CPU."""

    name = "cpu-emulator"
    can_capture = False

    def __init__(self, workdir: str | None = None, hardware: Hardware = H100) -> None:
        self.xp = numpy
        self.hw = hardware
        self.workdir = workdir or tempfile.mkdtemp(prefix="fastnet_emu_")
        self._modules: dict[str, EmuModule] = {}
        self.launches = 0  # counted so tests can tell the fused path ran

    def module(self, source: str, names: tuple[str, ...] | list[str] = ()) -> EmuModule:
        key = (source, tuple(names))
        mod = self._modules.get(key)
        if mod is None:
            mod = self._modules[key] = EmuModule(source, self.workdir, tuple(names))
        return mod

    def hardware(self) -> Hardware:
        return self.hw

    def launch(self, kernel: EmuKernel, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
        self.launches += 1
        kernel(grid, block, args)

    def ptr(self, arr: numpy.ndarray) -> int:
        return int(arr.ctypes.data)

    def copy(self, dst: numpy.ndarray, src: numpy.ndarray) -> None:
        numpy.copyto(dst, src, casting="unsafe")

    def item_view(self, arr: numpy.ndarray, i: int) -> numpy.ndarray:
        """A 0-d view (as CuPy's ``arr[i]`` is), not NumPy's scalar copy."""
        return arr[i : i + 1].reshape(())

    def upload(self, dst: numpy.ndarray, host: numpy.ndarray) -> None:
        dst[...] = host

    def zero(self, dst: numpy.ndarray) -> None:
        dst[...] = 0

    def matmul(self, a: Any, b: Any, out: Any) -> None:
        numpy.matmul(a, b, out=out)

    def capture(self, run: Callable[[], None]) -> Any:
        raise RuntimeError("the CPU emulator cannot capture graphs")

    def synchronize(self) -> None:
        pass
