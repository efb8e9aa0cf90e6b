"""The book's conv nets trained through plan_conv (one launch list, captured as one graph on a
GPU), run on the CPU emulator: the same steps as the layer path within rounding."""

from __future__ import annotations

import numpy as np
import pytest
from cupy_helpers import REF, needs_cxx, plan_kinds, worst

import fastnet
from fastnet.layers import Relu, Sigmoid
from fastnet.optimizers import SGD, Adam, Momentum

pytestmark = needs_cxx

GEOMETRIES = {  # input_dim, conv_param: 9x9 -> 9x9 -> 4x4 pooled (odd: the last row is left out); 9x10 stride 2
    "pad1": ((2, 9, 9), {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1}),
    "stride2": ((1, 9, 10), {"filter_num": 4, "filter_size": 3, "pad": 0, "stride": 2}),
}


def convnet(backend, geometry, dtype=np.float64, **kw):
    input_dim, conv = GEOMETRIES[geometry]
    return fastnet.SimpleConvNet(input_dim, conv, hidden_size=6, output_size=4, weight_init_std=0.3, seed=0,
                                 dtype=dtype, backend=backend, **kw)


def batch(geometry, rows, dtype=np.float64, seed=1, onehot=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, *GEOMETRIES[geometry][0])).astype(dtype)
    labels = rng.integers(0, 4, rows)
    return x, (np.eye(4, dtype=dtype)[labels] if onehot else labels)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("optimizer", [Adam, Momentum], ids=["adam", "momentum"])
def test_train_step_follows_the_layers(emu_backend, emu, geometry, dtype, tol, optimizer):
    ours, ref = convnet(emu_backend, geometry, dtype), convnet(REF, geometry, dtype)
    o1, o2 = optimizer(lr=0.01), optimizer(lr=0.01)
    for step in range(3):
        x, t = batch(geometry, 5, dtype, seed=step, onehot=step == 1)
        got, want = ours.train_step(x, t, o1), ref.train_step(x, t, o2)
        assert abs(float(got) - float(want)) <= tol * abs(float(want))
        assert worst(ours.params, ref.params) <= tol, step
    assert plan_kinds(emu_backend.engine) == {"ConvPlan"}
    assert all(ours.params[k].dtype == dtype for k in ours.params)


def test_an_epoch_is_one_call_on_the_data_set(emu_backend):
    """train_batches gathers each mini-batch on the device: the steps of a loop over x[idx]."""
    ours, ref = convnet(emu_backend, "pad1"), convnet(REF, "pad1")
    x, t = batch("pad1", 12, seed=7)
    batches = [np.array([3, 1, 4, 0]), np.array([11, 5, 9, 2]), np.array([-1, 6, 7, 8])]
    o1, o2 = SGD(0.1), SGD(0.1)
    losses = ours.train_batches(x, t, batches, o1)
    want = [float(ref.train_step(x[idx], t[idx], o2)) for idx in batches]
    np.testing.assert_allclose(np.asarray(losses, dtype=float), want, rtol=1e-12)
    assert worst(ours.params, ref.params) <= 1e-12
    assert plan_kinds(emu_backend.engine) == {"ConvPlan"}


def test_the_plan_learns_what_the_layers_learn(emu_backend):
    """The gradient the plan applies is the layers' one: with SGD(1) one step's change is -grad."""
    ours = convnet(emu_backend, "stride2")
    x, t = batch("stride2", 6, seed=3)
    grads = ours.gradient(x, t)  # the layer path
    before = {k: p.copy() for k, p in ours.params.items()}
    ours.train_step(x, t, SGD(1.0))
    for k, g in grads.items():
        np.testing.assert_allclose(before[k] - ours.params[k], g, rtol=0, atol=1e-13, err_msg=k)


class LeakyRelu(Relu):
    def forward(self, x, train_flg=True):
        self.x = x
        return np.where(x > 0, x, 0.1 * x)

    def backward(self, dout):
        return np.where(self.x > 0, dout, 0.1 * dout)


@pytest.mark.parametrize("change", ["leaky", "sigmoid", "pool"])
def test_other_nets_run_their_layers(emu_backend, change):
    """No plan for what is not exactly the book's net: the layers' own results, bit for bit."""
    ours, ref = convnet(emu_backend, "pad1"), convnet(REF, "pad1")
    for net in (ours, ref):
        if change == "leaky":
            net.layers["Relu1"] = LeakyRelu()
        if change == "sigmoid":
            net.layers["Relu2"] = Sigmoid(backend=net.backend)
        if change == "pool":
            net.layers["Pool1"].pool_h = net.layers["Pool1"].pool_w = 3  # 3x3 windows, still 4x4 out
    x, t = batch("pad1", 4)
    assert ours.train_step(x, t, SGD(0.1)).tobytes() == ref.train_step(x, t, SGD(0.1)).tobytes()
    for k in ref.params:
        assert ours.params[k].tobytes() == ref.params[k].tobytes(), k
    assert "ConvPlan" not in plan_kinds(emu_backend.engine)


@pytest.mark.parametrize("geometry,grid_y", [("pad1", 2), ("stride2", 1)], ids=["conv-rows", "dense-fan-in"])
def test_a_product_past_the_grid_runs_the_layers(emu_backend, geometry, grid_y):
    """More row blocks than the device's grid allows: pad1's convolution (81 rows: 6 blocks of 16)
    against 2; stride2's first dense weight gradient (16 + 1 rows: 2 blocks; the convolution's
    16 rows: 1) against 1."""
    from fastnet.backend.cupy.launch import Hardware

    engine = emu_backend.engine
    engine.hw = Hardware(engine.hw.sms, engine.hw.threads_per_sm, grid_y=grid_y)
    ours, ref = convnet(emu_backend, geometry), convnet(REF, geometry)
    x, t = batch(geometry, 1)
    assert ours.train_step(x, t, SGD(0.1)).tobytes() == ref.train_step(x, t, SGD(0.1)).tobytes()
    assert "ConvPlan" not in plan_kinds(engine)


def test_parameters_that_do_not_fit_raise_the_layers_error(emu_backend):
    """A W2 swapped for one of another size: no plan reads past its end; the layers raise."""
    ours = convnet(emu_backend, "pad1")
    ours.params["W2"] = np.zeros((ours.params["W2"].shape[0] - 1, 6))
    x, t = batch("pad1", 2)
    with pytest.raises(ValueError, match="W expects"):
        ours.train_step(x, t, SGD(0.1))
    assert "ConvPlan" not in plan_kinds(emu_backend.engine)


def test_plan_and_layer_steps_mixed(emu_backend):
    """train_step (the plan) and gradient + update (the layers) in turn share Adam's state."""
    ours, ref = convnet(emu_backend, "pad1"), convnet(REF, "pad1")
    o1, o2 = Adam(lr=0.01), Adam(lr=0.01)
    for step in range(4):
        x, t = batch("pad1", 3, seed=10 + step)
        if step % 2:
            o1.update(ours.params, ours.gradient(x, t))
        else:
            ours.train_step(x, t, o1)
        ref.train_step(x, t, o2)
    assert o1.iter == o2.iter == 4
    assert worst(ours.params, ref.params) <= 1e-12


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_an_adam_epoch_on_one_hot_targets(emu_backend, dtype, tol):
    ours, ref = convnet(emu_backend, "stride2", dtype), convnet(REF, "stride2", dtype)
    x, t = batch("stride2", 8, dtype, seed=4, onehot=True)
    batches = np.random.default_rng(5).permutation(8).reshape(2, 4)
    o1, o2 = Adam(lr=0.01), Adam(lr=0.01)
    losses = ours.train_batches(x, t, batches, o1)
    want = [float(ref.train_step(x[idx], t[idx], o2)) for idx in batches]
    np.testing.assert_allclose(np.asarray(losses, dtype=float), want, rtol=tol)
    assert worst(ours.params, ref.params) <= tol and o1.iter == o2.iter == 2
    assert plan_kinds(emu_backend.engine) == {"ConvPlan"}


def test_a_failing_plan_warns_and_the_layers_take_the_step(emu_backend, monkeypatch):
    """Not strict: a plan that fails to run warns once; the step is the layers' own, counted once."""
    from fastnet.backend.cupy import plan as plan_mod

    def broken(self, *args):
        raise RuntimeError("launch failed")

    monkeypatch.setattr(plan_mod.Binding, "launch", broken)
    emu_backend.engine.strict = False
    ours, ref = convnet(emu_backend, "pad1"), convnet(REF, "pad1")
    o1, o2 = Adam(lr=0.01), Adam(lr=0.01)
    x, t = batch("pad1", 3)
    with pytest.warns(RuntimeWarning, match="fused CUDA training step failed"):
        loss = ours.train_step(x, t, o1)
    assert loss.tobytes() == ref.train_step(x, t, o2).tobytes() and o1.iter == o2.iter == 1
    for k in ref.params:
        assert ours.params[k].tobytes() == ref.params[k].tobytes(), k


def deepnet(backend, dtype=np.float64, stride1=1):
    """The book's DeepConvNet on 10x10 images with few filters: 10 -> pool 5 -> (pad 2) 7 -> pool 3 -> pool 1
    (stride1=2: 10 -> 5 -> pool 2 -> 4 -> pool 2 -> pool 1)."""
    pads = (1, 1, 1, 2, 1, 1)
    convs = {f"conv_param_{i}": {"filter_num": 2 + i % 3, "filter_size": 3, "pad": p, "stride": stride1 if i == 1 else 1}
             for i, p in enumerate(pads, start=1)}
    return fastnet.DeepConvNet((1, 10, 10), **convs, hidden_size=6, output_size=4, seed=0, dtype=dtype,
                               backend=backend)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_deep_convnet_steps_with_the_layers_dropout_masks(emu_backend, dtype, tol):
    """Six convolutions, three poolings, padding 2, and dropout with the masks the net's own Dropout
    layers draw: the numpy backend's steps within rounding."""
    ours, ref = deepnet(emu_backend, dtype), deepnet(REF, dtype)
    o1, o2 = Adam(lr=0.01), Adam(lr=0.01)
    rng = np.random.default_rng(8)
    for step in range(3):
        x, t = rng.random((3, 1, 10, 10)).astype(dtype), rng.integers(0, 4, 3)
        got, want = ours.train_step(x, t, o1), ref.train_step(x, t, o2)
        assert abs(float(got) - float(want)) <= tol * abs(float(want)), step
    assert worst(ours.params, ref.params) <= tol
    assert plan_kinds(emu_backend.engine) == {"ConvPlan"}
    layout = next(iter(emu_backend.engine.plans))
    assert layout.dropout and len(layout.conv) == 3 + 6


def test_deep_convnet_epoch_steps_one_batch_at_a_time(emu_backend):
    """train_batches with dropout: each step its own masks, in the order the layers draw them."""
    ours, ref = deepnet(emu_backend), deepnet(REF)
    rng = np.random.default_rng(9)
    x, t = rng.random((6, 1, 10, 10)), rng.integers(0, 4, 6)
    batches = [np.array([0, 2, 4]), np.array([5, 3, 1])]
    o1, o2 = SGD(0.1), SGD(0.1)
    losses = ours.train_batches(x, t, batches, o1)
    want = [float(ref.train_step(x[idx], t[idx], o2)) for idx in batches]
    np.testing.assert_allclose([float(v) for v in losses], want, rtol=1e-12)
    assert worst(ours.params, ref.params) <= 1e-12
    assert plan_kinds(emu_backend.engine) == {"ConvPlan"}


def test_without_dropout_masks_the_deep_plan_is_not_taken(emu_backend):
    """The engine runs a dropout layout only with the layers' masks."""
    from fastnet.backend.conv_ops import conv_spec

    net = deepnet(emu_backend)
    x, t = np.random.default_rng(1).random((2, 1, 10, 10)), np.array([1, 2])
    assert emu_backend.engine.train_step(conv_spec(net, x), x, t, SGD(0.1)) is None
    assert not emu_backend.engine.plans


@pytest.mark.parametrize("change", ["stride2", "last-block-unpooled"])
def test_deep_convnet_variants_steps(emu_backend, change):
    """A strided first convolution; the last pooling removed (the dense layer resized to fit);
    train_step and gradient + update in turn: the numpy backend's steps within rounding."""
    nets = [deepnet(bk, stride1=2 if change == "stride2" else 1) for bk in (emu_backend, REF)]
    if change == "last-block-unpooled":
        W7 = 0.3 * np.random.default_rng(2).standard_normal((2 * 3 * 3, 6))
        for net in nets:
            del net.layers["Pool3"]
            net.params["W7"] = W7.copy()
    ours, ref = nets
    o1, o2 = Adam(lr=0.01), Adam(lr=0.01)
    rng = np.random.default_rng(11)
    for step in range(3):
        x, t = rng.random((3, 1, 10, 10)), rng.integers(0, 4, 3)
        if step == 1:
            o1.update(ours.params, ours.gradient(x, t))
        else:
            ours.train_step(x, t, o1)
        ref.train_step(x, t, o2)
    assert worst(ours.params, ref.params) <= 1e-12
    assert plan_kinds(emu_backend.engine) == {"ConvPlan"}


def test_a_failing_deep_plan_leaves_the_layers_its_masks(emu_backend, monkeypatch):
    """Not strict, a launch that fails after the step's dropout masks were drawn: the layers take the
    step with those same masks (the numpy backend's bits), and the next step draws the next ones."""
    from fastnet.backend.cupy import plan as plan_mod

    def broken(self, *args):
        raise RuntimeError("launch failed")

    monkeypatch.setattr(plan_mod.Binding, "launch", broken)
    emu_backend.engine.strict = False
    ours, ref = deepnet(emu_backend), deepnet(REF)
    rng = np.random.default_rng(12)
    with pytest.warns(RuntimeWarning, match="fused CUDA training step failed"):  # once
        for _ in range(2):
            x, t = rng.random((3, 1, 10, 10)), rng.integers(0, 4, 3)
            assert ours.train_step(x, t, SGD(0.1)).tobytes() == ref.train_step(x, t, SGD(0.1)).tobytes()
    for k in ref.params:
        assert ours.params[k].tobytes() == ref.params[k].tobytes(), k


@pytest.mark.parametrize("change", ["shared-dropout", "shared-relu", "last-layer"])
def test_nets_the_layers_would_refuse_get_no_spec(change):
    """One layer object in two places, or a last layer that is not the softmax loss: no plan."""
    from fastnet.backend.conv_ops import conv_spec

    net = deepnet(REF)
    if change == "shared-dropout":
        net.layers["Dropout2"] = net.layers["Dropout1"]
    elif change == "shared-relu":
        net.layers["Relu2"] = net.layers["Relu1"]
    else:
        net.last_layer = Relu()
    x = np.zeros((2, 1, 10, 10))
    assert conv_spec(deepnet(REF), x) is not None and conv_spec(net, x) is None


def test_images_too_small_for_a_window_raise_the_layers_error(emu_backend):
    """W1 swapped for 11x11 filters: the images shrink to 1 pixel before the last 2x2 pooling, which
    raises; the plan is not built, and the error is the layers'."""
    ours, ref = deepnet(emu_backend), deepnet(REF)
    for net in (ours, ref):
        net.params["W1"] = np.full((3, 1, 11, 11), 0.01)
    x, t = np.random.default_rng(3).random((2, 1, 10, 10)), np.array([1, 2])
    with pytest.raises(ValueError) as want:
        ref.train_step(x, t, SGD(0.1))
    with pytest.raises(ValueError) as got:
        ours.train_step(x, t, SGD(0.1))
    assert str(got.value) == str(want.value)
    assert not emu_backend.engine.plans
