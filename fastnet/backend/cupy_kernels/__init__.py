"""Fused CUDA kernels for the CuPy backend.

The kernels are CUDA C generated per (layer sizes, batch size, dtype,
activation, optimizer) so loop bounds are compile-time constants; each
generated source is compiled once (CuPy also keeps the binary in its on-disk
kernel cache). The pieces:

* ``source``     the CUDA C text generators (no CuPy needed: nvcc, NVRTC and
                 the CPU emulator all compile the same text)
* ``plan``       a training/gradient step as a fixed list of launches over
                 static buffers, run eagerly or captured in a CUDA graph
* ``numgrad``    the numerical gradient: every perturbed loss computed exactly
* ``engine``     picks and caches plans; what ``CupyBackend`` calls
* ``device``     the CuPy device (compile, launch, copy, capture)
* ``emulator``   a CPU stand-in for the device that runs the same CUDA text
                 with one OS thread per CUDA thread, for tests without a GPU
"""

from __future__ import annotations
