"""GPU suite for the conv nets: CuPy against PyTorch with cuDNN on the same GPU.

Groups and names (B=100, Adam, float32; each timed call runs STEPS steps and
syncs once, ``scale`` = 1/STEPS):

* ``gpu-conv-<simple|deep>-B100-float32``: ``cupy`` (``net.train_step``: one
  captured CUDA graph of our own kernels), ``cupy-layers`` (``net.gradient``
  then ``optimizer.update``: the layer path, conv.cu with cuBLAS),
  ``cupy-book`` (the book's algorithm on CuPy arrays), ``torch-cuda``
  (eager, cuDNN) and ``torch-cuda-graph`` (the whole step captured with
  ``torch.cuda.graph``, Adam capturable: PyTorch's fastest form);
* ``gpu-conv-epoch-<simple|deep>-600x100-float32``: one epoch on data already
  on the device, ``cupy`` (``net.train_batches``: SimpleConvNet one graph,
  DeepConvNet a graph replay per step after its Dropout layers draw the masks;
  ch08/train_deepnet.py runs 20 such epochs);
* ``gpu-conv-numgrad-simple-B10``: SimpleConvNet's exact numerical gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import fastnet
from fastnet.optimizers import Adam

from .bench_conv import BATCH, NETS, TorchConvStep, images
from .bench_gpu import book_backend, chunk, gpu, gpu_info, pytestmark  # noqa: F401  (gpu: the fixture)
from .peers import torch_reason
from .workloads import measure

STEPS = 10  # steps per timed call


class TorchConvGraphStep:
    """TorchConvStep captured once with ``torch.cuda.graph`` (after warm-up on a side stream)."""

    def __init__(self, net: Any, x: np.ndarray, t: np.ndarray) -> None:
        import torch

        self.inner = TorchConvStep(net, x, t, device="cuda", capturable=True)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.inner()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.inner.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            loss = self.inner.loss()
            loss.backward()
            self.inner.optimizer.step()
        self.loss = loss.detach()

    def __call__(self) -> Any:
        self.graph.replay()
        return self.loss


@pytest.mark.parametrize("impl", ["cupy", "cupy-layers", "cupy-book", "torch-cuda", "torch-cuda-graph"])
@pytest.mark.parametrize("net_name", ["simple", "deep"])
def test_gpu_conv_step(benchmark: Any, gpu: Any, net_name: str, impl: str) -> None:  # noqa: F811
    x, t = images(BATCH, np.float32)
    bk = book_backend() if impl == "cupy-book" else gpu
    net = NETS[net_name](seed=0, dtype=np.float32, backend=bk)
    if impl.startswith("torch"):
        reason = torch_reason("cuda")
        if reason:
            pytest.skip(reason)
        import torch

        torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithms for these shapes
        step = TorchConvGraphStep(net, x, t) if impl == "torch-cuda-graph" else TorchConvStep(net, x, t, "cuda")
        sync = torch.cuda.synchronize
    else:
        optimizer = Adam()
        xb, tb = bk.asarray(x), bk.asarray(t)
        if impl == "cupy-layers":

            def step() -> Any:
                grads = net.gradient(xb, tb)
                optimizer.update(net.params, grads)
        else:

            def step() -> Any:
                return net.train_step(xb, tb, optimizer)

        sync = bk.synchronize
    for _ in range(3):  # compiles, captures, and (torch) lets cuDNN choose
        step()
    sync()
    info = gpu_info("gpu-conv-step", f"{net_name}-B{BATCH}-float32", impl, batch=BATCH, dtype="float32",
                    steps_per_call=STEPS, scale=1 / STEPS)
    measure(benchmark, chunk(step, STEPS), group=f"gpu-conv-{net_name}-B{BATCH}-float32", name=impl, info=info,
            sync=sync)


@pytest.mark.parametrize("net_name", ["simple", "deep"])
def test_gpu_conv_epoch(benchmark: Any, gpu: Any, net_name: str) -> None:  # noqa: F811
    """600 steps of 100 on 60,000 images already on the device, as the Trainer runs an epoch."""
    x, t = images(60000, np.float32)
    net = NETS[net_name](seed=0, dtype=np.float32, backend=gpu)
    X, T = gpu.asarray(x), gpu.asarray(t)
    optimizer = Adam()
    rng = np.random.default_rng(0)
    batches = gpu.asarray(rng.permutation(60000).reshape(600, 100))
    net.train_batches(X, T, batches, optimizer)
    gpu.synchronize()
    info = gpu_info("gpu-conv-epoch", f"{net_name}-600x100-float32", "cupy", steps=600, batch=100)
    measure(benchmark, lambda: net.train_batches(X, T, batches, optimizer),
            group=f"gpu-conv-epoch-{net_name}-600x100-float32", name="cupy", info=info, sync=gpu.synchronize,
            rounds=3)


def test_gpu_conv_numgrad(benchmark: Any, gpu: Any) -> None:  # noqa: F811
    """SimpleConvNet's exact numerical gradient (all 433,890 parameters) at B=10, float64 losses."""
    x, t = images(10, np.float32)
    net = fastnet.SimpleConvNet(seed=0, backend=gpu)
    xb, tb = gpu.asarray(x), gpu.asarray(t)
    grads = net.numerical_gradient(xb, tb)
    exact = net.gradient(xb, tb)
    diff = max(float(abs(grads[k] - exact[k]).max()) for k in exact)
    info = gpu_info("gpu-conv-numgrad", "simple-B10", "cupy", batch=10, max_abs_diff_vs_backprop=diff)
    measure(benchmark, lambda: net.numerical_gradient(xb, tb), group="gpu-conv-numgrad-simple-B10", name="cupy",
            info=info, sync=gpu.synchronize, rounds=3)
