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
# rows_a: threads per block. More threads split layer 0's inputs more ways, halving each
# thread's chain of dependent loads: 784-50-10 at B=100 fp32 on an H100, a step took 22.2 us
# at 256 threads and 15.8 us at 1024, an epoch 14.2 and 10.2 ms (python -m benchmarks.gpu_profile,
# docs/gpu.md); with rows_b's parameter split in place, 512 threads come within 2% of 1024.
ROW_THREADS = 1024
B_THREADS = 256  # rows_b: threads per block
MIN_SPLIT_K = 64  # tiled matmul: K left to each split at least
# CUDA's cap on static shared memory is 48 KiB a block; rows_a keeps some of it spare
SHARED_LIMIT = 40 * 1024  # bytes rows_a's rows may use


@dataclass(frozen=True)
class Hardware:
    """The numbers of the device the launch shapes are made for."""

    sms: int  # MultiProcessorCount
    threads_per_sm: int  # MaxThreadsPerMultiProcessor
    grid_y: int = 65535  # MaxGridDimY: the tiled matmul's row blocks at most

    @classmethod
    def of(cls, cupy: object) -> "Hardware":
        attrs = cupy.cuda.Device().attributes  # type: ignore[attr-defined]
        return cls(int(attrs["MultiProcessorCount"]), int(attrs["MaxThreadsPerMultiProcessor"]),
                   int(attrs["MaxGridDimY"]))

    @property
    def wave_threads(self) -> int:
        """Threads resident at once: one wave."""
        return self.sms * self.threads_per_sm


def choose_split(M: int, N: int, K: int, hw: Hardware) -> int:
    """Split K (a power of two) when the output alone gives fewer than two blocks an SM.

    ``benchmarks/bench_gpu.py -k split_k`` measures what it gains: the
    tiled step of the book's ch.6 net with and without it.
    """
    blocks = -(-M // TILE) * -(-N // TILE)
    split = 1
    while blocks * split * 2 <= 2 * hw.sms and K // (split * 2) >= MIN_SPLIT_K:
        split *= 2
    return split


def fits_grid(rows: int, hw: Hardware) -> bool:
    """Whether a tiled product with `rows` output rows fits the device's grid (one block a TILE rows)."""
    return -(-rows // TILE) <= hw.grid_y


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

    @property
    def depth(self) -> int:
        return len(self.sizes) - 1

    @property
    def b_split(self) -> int:
        n = self.sizes
        return row_split(self.rows, sum(a * b + b for a, b in zip(n, n[1:])), self.hw)

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


def rows_b_blocks(shape: RowsShape, stage: str) -> int:
    """Blocks of rows_b: its parameters' blocks (stages grad/train), then the loss block."""
    if stage not in ("grad", "train"):
        return 1
    n = shape.sizes
    total = sum(n[i] * n[i + 1] + n[i + 1] for i in range(shape.depth))
    per_block = B_THREADS // shape.b_split
    return -(-total // per_block) + 1
