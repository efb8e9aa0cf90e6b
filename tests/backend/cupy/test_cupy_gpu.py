"""On a GPU (skipped without one): results against NumPy, graphs against eager runs, an MNIST epoch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import fastnet
from fastnet import optimizers as opt
from fastnet.backend.cupy import plan as plan_mod
from fastnet.backend.cupy.cuda import RULES
from fastnet.backend.cupy.engine import FusedEngine

from cupy_helpers import REF, make_batch, worst


def _gpu_reason() -> str | None:
    status = fastnet.available_backends()["cupy"]
    return None if status.available else status.reason


gpu = pytest.mark.skipif(_gpu_reason() is not None, reason=f"no usable GPU: {_gpu_reason()}")


@pytest.fixture
def cupy_bk():
    with fastnet.use_backend("cupy") as bk:
        engine = bk.engine
        saved = engine.strict
        engine.strict = True  # a fused path that fails must fail the test, not fall back
        yield bk
        engine.strict = saved


def _host_params(net: Any) -> dict[str, np.ndarray]:
    return {k: fastnet.to_numpy(v) for k, v in net.params.items()}


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("kind", RULES)
def test_gpu_float64_steps_match_numpy(cupy_bk, kind):
    sizes, rows = (784, 50, 10), 100
    gpu_net = fastnet.TwoLayerNet(*sizes, seed=0, dtype=np.float64, backend="cupy")
    cpu_net = fastnet.TwoLayerNet(*sizes, seed=0, dtype=np.float64, backend="numpy")
    o_gpu, o_cpu = opt.OPTIMIZERS[kind](lr=0.05), opt.OPTIMIZERS[kind](lr=0.05)
    for step in range(5):
        x, t = make_batch(rows, sizes, onehot=step % 2 == 0, seed=step)
        loss = gpu_net.train_step(cupy_bk.asarray(x), cupy_bk.asarray(t), o_gpu)
        ref = cpu_net.train_step(x, t, o_cpu)
        assert isinstance(loss, cupy_bk.xp.ndarray) and loss.shape == ()
        assert abs(float(loss) - float(ref)) < 1e-10
    assert worst(_host_params(gpu_net), cpu_net.params) < 1e-10
    x, t = make_batch(rows, sizes, onehot=False, seed=9)
    xg = cupy_bk.asarray(x)
    np.testing.assert_allclose(fastnet.to_numpy(gpu_net.predict(xg)), cpu_net.predict(x), atol=1e-10)
    g, _ = gpu_net.gradient_and_loss(xg, cupy_bk.asarray(t))
    assert worst({k: fastnet.to_numpy(v) for k, v in g.items()}, cpu_net.gradient(x, t)) < 1e-10


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("rows", [100, 1000])
def test_gpu_float32_within_1e5_relative(cupy_bk, rows):
    sizes = (784, 50, 10)
    gpu_net = fastnet.TwoLayerNet(*sizes, seed=0, dtype=np.float32, backend="cupy")
    cpu_net = fastnet.TwoLayerNet(*sizes, seed=0, dtype=np.float64, backend="numpy")
    for k in cpu_net.params:  # the same float32 start on both
        cpu_net.params[k][...] = fastnet.to_numpy(gpu_net.params[k])
    x, t = make_batch(rows, sizes, onehot=True, dtype=np.float32)
    g, loss = gpu_net.gradient_and_loss(cupy_bk.asarray(x), cupy_bk.asarray(t))
    ref, ref_loss = cpu_net.gradient_and_loss(x.astype(np.float64), t.astype(np.float64))
    for k in ref:
        scale = np.max(np.abs(ref[k]))
        assert np.max(np.abs(fastnet.to_numpy(g[k]) - ref[k])) <= 1e-5 * scale, k
    assert abs(float(loss) - float(ref_loss)) <= 1e-5 * abs(float(ref_loss))


@gpu
@pytest.mark.gpu
def test_gpu_numerical_gradient_within_1e9_of_numpy(cupy_bk):
    sizes = (64, 20, 10)  # small enough for the book's loop on NumPy
    gpu_net = fastnet.TwoLayerNet(*sizes, weight_init_std=0.3, seed=0, dtype=np.float64, backend="cupy")
    cpu_net = fastnet.TwoLayerNet(*sizes, weight_init_std=0.3, seed=0, dtype=np.float64, backend="numpy")
    x, t = make_batch(16, sizes, onehot=True)
    ours = gpu_net.numerical_gradient(cupy_bk.asarray(x), cupy_bk.asarray(t))
    ref = cpu_net.numerical_gradient(x, t)
    assert worst({k: fastnet.to_numpy(v) for k, v in ours.items()}, ref) < 1e-9


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_gpu_graph_step_equals_eager_step(cupy_bk, kind):
    from fastnet.backend.cupy.device import CupyDevice

    sizes = (784, 50, 10)
    eager_engine = FusedEngine(CupyDevice(), use_graphs=False, strict=True)
    graph_net = fastnet.TwoLayerNet(*sizes, seed=0, backend="cupy")
    eager_net = fastnet.TwoLayerNet(*sizes, seed=0, backend="cupy")
    o_graph, o_eager = opt.OPTIMIZERS[kind](lr=0.05), opt.OPTIMIZERS[kind](lr=0.05)
    batches = []
    for step in range(2 + plan_mod.BOUND_MISSES + 4):
        x, t = make_batch(100, sizes, onehot=False, dtype=np.float32, seed=step)
        batches.append((cupy_bk.asarray(x), cupy_bk.asarray(t)))
    # two buffers used in turn: graphs captured on the callers' own addresses;
    # then every batch a new address: the plan goes back to copying into its own
    order = [0, 1] * 3 + list(range(2, len(batches)))
    for i in order:
        x, t = batches[i]
        graph_net.train_step(x, t, o_graph)
        eager_engine.train_step(eager_net.spec(), x, t, o_eager)
    plans = list(cupy_bk.engine.plans.values())
    bindings = [b for p in plans for b in p.bindings.values()]
    assert any(b.graph is not None for b in bindings), "no step was captured"
    assert any(p.batch_misses > plan_mod.BOUND_MISSES for p in plans), "new batches were not copied in"
    for k in graph_net.params:  # the same kernels on the same data: bitwise equal
        np.testing.assert_array_equal(fastnet.to_numpy(graph_net.params[k]), fastnet.to_numpy(eager_net.params[k]))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_gpu_epoch_graph_equals_step_by_step(cupy_bk, kind):
    """Three epochs (run eagerly, captured as one graph, replayed) against the same batches one step at a time."""
    sizes = (784, 50, 10)
    x_host, labels = make_batch(400, sizes, onehot=False, dtype=np.float32, seed=3)
    x, t = cupy_bk.asarray(x_host), cupy_bk.asarray(labels)
    epoch_net = fastnet.TwoLayerNet(*sizes, seed=0, backend="cupy")
    step_net = fastnet.TwoLayerNet(*sizes, seed=0, backend="cupy")
    o_epoch, o_step = opt.OPTIMIZERS[kind](lr=0.05), opt.OPTIMIZERS[kind](lr=0.05)
    tables = [np.random.default_rng(e).permutation(400).reshape(20, 20) for e in range(3)]
    losses = [epoch_net.train_batches(x, t, cupy_bk.asarray(tab), o_epoch) for tab in tables]
    epochs = [b for p in cupy_bk.engine.plans.values() if p.layout.gather for b in p.bindings.values()]
    assert any(b.graph is not None for b in epochs), "no epoch was captured"
    step_losses = [[step_net.train_step(x[cupy_bk.asarray(row)], t[cupy_bk.asarray(row)], o_step) for row in tab]
                   for tab in tables]
    for k in epoch_net.params:  # the same kernels on the same batches: bitwise equal
        np.testing.assert_array_equal(fastnet.to_numpy(epoch_net.params[k]), fastnet.to_numpy(step_net.params[k]))
    np.testing.assert_array_equal(fastnet.to_numpy(losses[-1]), np.array([float(v) for v in step_losses[-1]]))
    assert getattr(o_epoch, "iter", 0) == getattr(o_step, "iter", 0)


@gpu
@pytest.mark.gpu
@pytest.mark.mnist
def test_gpu_one_mnist_epoch_matches_numpy_accuracy(cupy_bk, mnist_dir, monkeypatch):
    from fastnet.datasets import load_mnist

    monkeypatch.setenv("FASTNET_OFFLINE", "1")
    (x_train, t_train), (x_test, t_test) = load_mnist(data_dir=mnist_dir, normalize=True, download=False)
    batches = np.random.default_rng(0).permutation(60000).reshape(600, 100)
    accuracy = {}
    for name, dtype in (("numpy", np.float64), ("cupy", np.float32)):
        bk = fastnet.get_backend() if name == "cupy" else REF
        net = fastnet.TwoLayerNet(784, 50, 10, seed=0, dtype=dtype, backend=name)
        xs, ts = bk.asarray(x_train, dtype=dtype), bk.asarray(t_train.astype(np.int64))
        net.train_batches(xs, ts, [bk.asarray(b) for b in batches], opt.SGD(lr=0.1))
        accuracy[name] = net.accuracy(bk.asarray(x_test, dtype=dtype), bk.asarray(t_test.astype(np.int64)))
    assert accuracy["numpy"] > 0.85
    assert abs(accuracy["cupy"] - accuracy["numpy"]) <= 0.005, accuracy


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("net_name", ["SimpleConvNet", "DeepConvNet"])
def test_gpu_conv_kernels_give_the_reference_paths_bits(cupy_bk, net_name):
    """conv.cu's kernels beside the same cuBLAS calls (the layer path: net.gradient, then the
    update): two Adam steps equal to the book's algorithm on CuPy arrays bit for bit, and
    (SimpleConvNet: no dropout, whose masks come from CuPy's generator) within 1e-10 of NumPy."""
    from fastnet.backend.cupy import CupyBackend

    book = CupyBackend()
    book.fused = False  # the inherited (book's) algorithm on CuPy arrays
    Net = getattr(fastnet, net_name)
    ours = Net(seed=0, dtype=np.float64, backend=cupy_bk)
    ref = Net(seed=0, dtype=np.float64, backend=book)
    host = Net(seed=0, dtype=np.float64, backend="numpy")
    rng = np.random.default_rng(0)
    o1, o2, o3 = opt.Adam(), opt.Adam(), opt.Adam()
    for _ in range(2):
        x, t = rng.random((4, 1, 28, 28)), rng.integers(0, 10, 4)
        o1.update(ours.params, ours.gradient(cupy_bk.asarray(x), cupy_bk.asarray(t)))
        ref.train_step(book.asarray(x), book.asarray(t), o2)
        host.train_step(x, t, o3)
    for k in host.params:
        a, b = fastnet.to_numpy(ours.params[k]), fastnet.to_numpy(ref.params[k])
        assert a.tobytes() == b.tobytes(), k
    if net_name == "SimpleConvNet":
        assert worst(_host_params(ours), host.params) < 1e-10


@gpu
@pytest.mark.gpu
def test_gpu_simple_convnet_numerical_gradient_equals_the_loop(cupy_bk):
    conv = {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1}
    kw = dict(input_dim=(2, 9, 10), conv_param=conv, hidden_size=8, output_size=4, weight_init_std=0.3,
              seed=0, dtype=np.float64)
    ours, ref = fastnet.SimpleConvNet(**kw, backend=cupy_bk), fastnet.SimpleConvNet(**kw, backend="numpy")
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((3, 2, 9, 10)), rng.integers(0, 4, 3)
    got = ours.numerical_gradient(cupy_bk.asarray(x), cupy_bk.asarray(t))
    assert worst({k: fastnet.to_numpy(v) for k, v in got.items()}, ref.numerical_gradient(x, t)) < 1e-9


def _conv_bindings(bk: Any, gather: bool) -> list[Any]:
    return [b for p in bk.engine.plans.values() if type(p).__name__ == "ConvPlan" and p.layout.gather == gather
            for b in p.bindings.values()]


@gpu
@pytest.mark.gpu
def test_gpu_simple_convnet_step_is_one_graph_within_1e10_of_numpy(cupy_bk):
    """The book's SimpleConvNet trains through plan_conv, captured as a CUDA graph: float64 Adam
    steps within 1e-10 of NumPy's."""
    ours = fastnet.SimpleConvNet(seed=0, dtype=np.float64, backend=cupy_bk)
    host = fastnet.SimpleConvNet(seed=0, dtype=np.float64, backend="numpy")
    rng = np.random.default_rng(2)
    data = [(rng.random((8, 1, 28, 28)), rng.integers(0, 10, 8)) for _ in range(2)]
    device = [(cupy_bk.asarray(x), cupy_bk.asarray(t)) for x, t in data]
    o1, o2 = opt.Adam(), opt.Adam()
    for i in (0, 1, 0, 1, 0):  # the second run on the same buffers is captured, then replayed
        loss = ours.train_step(*device[i], o1)
        want = host.train_step(*data[i], o2)
        assert abs(float(loss) - float(want)) <= 1e-10 * abs(float(want))
    assert any(b.graph is not None for b in _conv_bindings(cupy_bk, False)), "no step was captured"
    assert worst(_host_params(ours), host.params) < 1e-10


@gpu
@pytest.mark.gpu
def test_gpu_simple_convnet_epoch_graph_equals_step_by_step(cupy_bk):
    """Two epochs of train_batches (each one captured graph) against the same batches one step at a time."""
    rng = np.random.default_rng(3)
    x, t = cupy_bk.asarray(rng.random((60, 1, 28, 28), dtype=np.float32)), cupy_bk.asarray(rng.integers(0, 10, 60))
    epoch_net = fastnet.SimpleConvNet(seed=0, backend=cupy_bk)
    step_net = fastnet.SimpleConvNet(seed=0, backend=cupy_bk)
    o_epoch, o_step = opt.Adam(), opt.Adam()
    tables = [np.random.default_rng(e).permutation(60).reshape(6, 10) for e in range(3)]
    losses = [epoch_net.train_batches(x, t, cupy_bk.asarray(tab), o_epoch) for tab in tables]
    assert any(b.graph is not None for b in _conv_bindings(cupy_bk, True)), "no epoch was captured"
    step_losses = [[step_net.train_step(x[cupy_bk.asarray(row)], t[cupy_bk.asarray(row)], o_step) for row in tab]
                   for tab in tables]
    for k in epoch_net.params:  # the same kernels on the same batches: bitwise equal
        np.testing.assert_array_equal(fastnet.to_numpy(epoch_net.params[k]), fastnet.to_numpy(step_net.params[k]))
    np.testing.assert_array_equal(fastnet.to_numpy(losses[-1]), np.array([float(v) for v in step_losses[-1]]))


@gpu
@pytest.mark.gpu
def test_gpu_deep_convnet_step_is_one_graph_within_1e10_of_its_layers(cupy_bk):
    """The book's DeepConvNet through plan_conv, captured as a CUDA graph, with the masks its Dropout
    layers draw: float64 Adam steps within 1e-10 of the same net run layer by layer on CuPy (NumPy's
    generator would draw other masks)."""
    from fastnet.backend.cupy import CupyBackend

    layers = CupyBackend()
    layers.fused = False  # the inherited (book's) algorithm on CuPy arrays, same generator
    ours = fastnet.DeepConvNet(seed=0, dtype=np.float64, backend=cupy_bk)
    ref = fastnet.DeepConvNet(seed=0, dtype=np.float64, backend=layers)
    rng = np.random.default_rng(4)
    data = [(rng.random((8, 1, 28, 28)), rng.integers(0, 10, 8)) for _ in range(2)]
    device = [(cupy_bk.asarray(x), cupy_bk.asarray(t)) for x, t in data]
    o1, o2 = opt.Adam(), opt.Adam()
    for i in (0, 1, 0, 1, 0):
        loss, want = ours.train_step(*device[i], o1), ref.train_step(*device[i], o2)
        assert abs(float(loss) - float(want)) <= 1e-10 * abs(float(want))
    assert any(b.graph is not None for b in _conv_bindings(cupy_bk, False)), "no step was captured"
    assert worst(_host_params(ours), _host_params(ref)) < 1e-10
