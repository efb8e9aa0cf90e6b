"""Launch policy: which kernel layout a net gets and the shapes of its launches.

Everything here is a pure function of the net's sizes and the device's
numbers (``Hardware``, read from ``cupy.cuda.Device().attributes``; the
emulator's tests pass them explicitly). Figures quoted below were measured
on an H100 with ``python -m benchmarks.gpu_profile`` (see docs/gpu.md).
"""

from __future__ import annotations

from dataclasses import dataclass

TILE = 16  # tiled matmul: blocks of TILE x TILE threads, one output each
EW_THREADS = 256  # elementwise kernels
ROW_THREADS = 1024  # rows_a: threads per block
B_THREADS = 256  # rows_b: threads per block
MIN_SPLIT_K = 64  # tiled matmul: K left to each split at least
# CUDA's cap on static shared memory is 48 KiB a block; rows_a keeps some of it spare
SHARED_LIMIT = 40 * 1024  # bytes rows_a's rows may use
STAGED_LIMIT = 46 * 1024  # ... with the later layers' weights staged as well


@dataclass(frozen=True)
class Hardware:
    """The numbers of the device the launch shapes are made for."""

    sms: int  # MultiProcessorCount
    threads_per_sm: int  # MaxThreadsPerMultiProcessor
    registers_per_sm: int  # MaxRegistersPerMultiprocessor (32-bit)

    @classmethod
    def of(cls, cupy: object) -> "Hardware":
        attrs = cupy.cuda.Device().attributes  # type: ignore[attr-defined]
        return cls(int(attrs["MultiProcessorCount"]), int(attrs["MaxThreadsPerMultiProcessor"]),
                   int(attrs["MaxRegistersPerMultiprocessor"]))

    @property
    def wave_threads(self) -> int:
        """Threads resident at once: one wave."""
        return self.sms * self.threads_per_sm


def choose_split(M: int, N: int, K: int, hw: Hardware) -> int:
    """Split K (a power of two) when the output alone gives fewer than two blocks an SM."""
    blocks = -(-M // TILE) * -(-N // TILE)
    split = 1
    while blocks * split * 2 <= 2 * hw.sms and K // (split * 2) >= MIN_SPLIT_K:
        split *= 2
    return split


def ew_grid(size: int) -> tuple[int, int, int]:
    """Blocks for a grid-stride elementwise kernel (capped: each thread loops)."""
    return (max(1, min(-(-size // EW_THREADS), 4096)), 1, 1)


@dataclass(frozen=True)
class RowsShape:
    """Sizes the two-kernel step (rows_a, rows_b) is specialised on."""

    sizes: tuple[int, ...]
    rows: int  # batch size B
    per_block: int  # rows per block of rows_a
    itemsize: int
    hw: Hardware
    threads: int = ROW_THREADS
    prefetch: bool = True  # weights loaded while the rows arrive (first_in_registers, staged_weights)
    compact: bool = True  # a gathered batch is copied for rows_b

    @property
    def depth(self) -> int:
        return len(self.sizes) - 1

    @property
    def b_split(self) -> int:
        n = self.sizes
        return row_split(self.rows, sum(a * b + b for a, b in zip(n, n[1:])), self.hw)

    def first_in_registers(self) -> int:
        """Weights per thread of layer 0 loaded into registers up front (0: none).

        Each thread of layer 0 reads one column slice of W; loading (the start
        of) it before the rows arrive overlaps those reads with the row
        gather. Only when one pass covers the layer, and as many as leave the
        thread's other values their registers.
        """
        K, N, Sp = self.sizes[0], self.sizes[1], self.splits(0)
        KS = -(-K // Sp)
        words = self.itemsize // 4  # registers per value
        regs = (self.hw.registers_per_sm // (self.threads * self.blocks_per_sm) - 32 - words * self.per_block
                - (4 if words == 2 else 0))
        if not self.prefetch or N * Sp > self.threads or KS > 96 or regs < 8:
            return 0
        return min(KS, regs * 4 // self.itemsize)

    def staged_weights(self) -> int:
        """Elements of b0 and the later layers' weights kept in shared memory (0: none); only
        with one block an SM (it cost 10% where two blocks share one)."""
        n = self.sizes
        size = n[1] + sum(n[i] * n[i + 1] + n[i + 1] for i in range(1, self.depth))
        ok = self.prefetch and self.blocks_per_sm == 1 and self.shared_bytes() + size * self.itemsize <= STAGED_LIMIT
        return size if ok else 0

    @property
    def blocks_per_sm(self) -> int:
        """Blocks of rows_a an SM runs at once (when they all fit one wave)."""
        return min(-(-self.blocks // self.hw.sms), max(1, self.hw.threads_per_sm // self.threads))

    @property
    def blocks(self) -> int:
        return -(-self.rows // self.per_block)

    def splits(self, i: int) -> int:
        """K-splits of layer i's forward product, so about `threads` threads work."""
        K, N = self.sizes[i], self.sizes[i + 1]
        return max(1, min(self.threads // N, K // 8))

    def shared_bytes(self) -> int:
        R, n = self.per_block, self.sizes
        part = max(self.splits(i) * R * n[i + 1] for i in range(self.depth))
        acts = R * sum(n[1:])
        deltas = 2 * R * max(n[1:])
        return (part + acts + deltas + R * n[0]) * self.itemsize + 8 * (self.threads + R)

    def h_offset(self, i: int) -> int:
        """Activation buffer: outputs of layers 1..L-1, each (B, n_i), concatenated."""
        return self.rows * sum(self.sizes[1:i])

    def d_offset(self, i: int) -> int:
        """Delta buffer: gradient w.r.t. layer i's pre-activation output, each (B, n_{i+1})."""
        return self.rows * sum(self.sizes[1 : i + 1])


def rows_shape(sizes: tuple[int, ...], rows: int, itemsize: int, hw: Hardware) -> RowsShape | None:
    """The rows_a shape for a net, or None when its activations do not fit a block.

    Rows per block: the fewest (of 1, 2, 4, 8) that keep the blocks within
    one wave of SMs.
    """
    per = 1
    while per < 8 and -(-rows // per) > hw.sms:
        per *= 2
    while per >= 1:
        shape = RowsShape(tuple(sizes), rows, per, itemsize, hw)
        if shape.shared_bytes() <= SHARED_LIMIT:
            return shape
        per //= 2
    return None


def row_split(rows: int, params: int, hw: Hardware) -> int:
    """Threads sharing one parameter's sum over the batch in rows_b (a power of two).

    More threads per parameter shorten each one's chain of dependent loads
    (down to about 16 rows each), but only while the kernel stays within one
    wave: a second, partial wave costs more (784-50-10, B=100: 4 threads a
    parameter took the epoch from 10.2 to 8.7 ms against 8). The partial sums
    meet in shared memory in a fixed order.
    """
    split = 1
    while split < 16 and rows > 16 * split and params * split * 2 <= hw.wave_threads:
        split *= 2
    return split
