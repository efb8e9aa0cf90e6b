"""The CUDA device as the fused kernels see it: compile, launch, copy, capture.

Plans talk to a device object, never to CuPy directly, so the same plan runs
on the GPU (this class) or on the CPU emulator (``emulator.EmuDevice``).
Every operation is queued on CuPy's current stream and none waits for the
GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .launch import Hardware

# NVRTC options: C++14 for the generated text; no fast-math, so exp/log and
# division stay IEEE and float64 results can match NumPy's to ~1e-15.
NVRTC_OPTIONS = ("--std=c++14",)


class CupyDevice:
    name = "cuda"
    can_capture = True

    def __init__(self) -> None:
        import cupy

        self.cupy = cupy
        self.xp = cupy
        self.launches = 0

    def hardware(self) -> Hardware:
        """The current device's numbers the launch shapes are made for."""
        return Hardware.of(self.cupy)

    def module(self, source: str, names: tuple[str, ...] | list[str] = ()) -> Any:
        """A compiled module (NVRTC; CuPy keeps the binary in its on-disk kernel cache).

        `names` are the template instantiations the caller will ask for
        (``name_expressions``); plain ``extern "C"`` kernels need none.
        """
        mod = self.cupy.RawModule(code=source, options=NVRTC_OPTIONS, name_expressions=list(names) or None)
        mod.compile()  # compile now, not lazily during a graph capture
        return mod

    def launch(self, kernel: Any, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
        self.launches += 1
        kernel(grid, block, args)

    def ptr(self, arr: Any) -> int:
        return int(arr.data.ptr)

    def copy(self, dst: Any, src: Any) -> None:
        """dst[...] = src; a plain device-to-device copy when layouts agree."""
        cupy = self.cupy
        if dst.dtype == src.dtype and src.flags.c_contiguous and dst.shape == src.shape:
            rt = cupy.cuda.runtime
            stream = cupy.cuda.get_current_stream()
            rt.memcpyAsync(dst.data.ptr, src.data.ptr, dst.nbytes, rt.memcpyDeviceToDevice, stream.ptr)
        else:
            cupy.copyto(dst, src, casting="unsafe")

    def item_view(self, arr: Any, i: int) -> Any:
        """Element i as a 0-d device array (a view: no copy, no sync)."""
        return arr[i]

    def upload(self, dst: Any, host: Any) -> None:
        """Host values into a device array (small and rare: hyper-parameters, counters).

        Ordered on the current stream; without ``stream=`` CuPy's ``set`` is a
        synchronous cudaMemcpy that would wait for every queued step.
        """
        dst.set(host, stream=self.cupy.cuda.get_current_stream())

    def zero(self, dst: Any) -> None:
        """dst[...] = 0 on the current stream (a memset: no host memory involved)."""
        rt = self.cupy.cuda.runtime
        rt.memsetAsync(dst.data.ptr, 0, dst.nbytes, self.cupy.cuda.get_current_stream().ptr)

    def matmul(self, a: Any, b: Any, out: Any) -> None:
        self.cupy.matmul(a, b, out=out)

    def capture(self, run: Callable[[], None]) -> Any:
        """Record `run`'s launches into a CUDA graph (nothing executes)."""
        cupy = self.cupy
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture()
            try:
                run()
            except BaseException:
                try:
                    stream.end_capture()
                except Exception:
                    pass  # the capture is already invalid; report the first error
                raise
            graph = stream.end_capture()
        graph.upload()  # instantiate on the device now rather than at the first replay
        return graph

    def synchronize(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()
