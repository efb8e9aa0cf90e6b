"""Peers: the same step in PyTorch (CPU; CUDA when there is one) and JAX ``jit``.

Same groups as ``bench_step`` (``step-B<batch>-<dtype>``), names ``torch-autograd``,
``torch-manual``, ``torch-cuda-autograd``, ``torch-cuda-manual``, ``jax-jit``.
Skipped with a reason when the library (or the device) is missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from .bench_step import after_one_book_step, batches, dtypes, step_info
from .peers import JaxStep, TorchStep, jax_reason, torch_reason
from .workloads import dense_batch, max_abs_diff, measure, start_params, step_group

PEER_TOLERANCE = 1e-6  # PyTorch's cross_entropy has no +1e-7: updates differ by ~1e-8


def _run(benchmark: Any, step: Any, impl: str, batch: int, dtype: Any, **extra: Any) -> None:
    step()
    step.sync()
    diff = max_abs_diff(step.params(), after_one_book_step(batch, dtype))
    assert diff <= PEER_TOLERANCE, f"{impl} step differs from the book's by {diff:.3g}"
    info = step_info(batch, dtype, impl)
    info.update(extra, max_abs_diff_vs_book=diff)
    measure(benchmark, step, group=step_group(batch, dtype), name=impl, info=info, sync=step.sync)


@pytest.mark.parametrize("style", ["autograd", "manual"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
@dtypes
@batches
def test_torch(benchmark: Any, batch: int, dtype: Any, device: str, style: str) -> None:
    reason = torch_reason(device)
    if reason:
        pytest.skip(reason)
    import torch

    x, t = dense_batch(batch, dtype)
    step = TorchStep(start_params(dtype), x, t, device=device, autograd=style == "autograd")
    impl = "torch-" + ("cuda-" if device == "cuda" else "") + style
    _run(benchmark, step, impl, batch, dtype, peer="torch", peer_version=torch.__version__,
         device=device, threads=torch.get_num_threads())


@dtypes
@batches
def test_jax(benchmark: Any, batch: int, dtype: Any) -> None:
    reason = jax_reason()
    if reason:
        pytest.skip(reason)
    import jax

    x, t = dense_batch(batch, dtype)
    step = JaxStep(start_params(dtype), x, t)
    assert step.p["W1"].dtype == np.dtype(dtype)
    _run(benchmark, step, "jax-jit", batch, dtype, peer="jax", peer_version=jax.__version__,
         device=step.platform)
