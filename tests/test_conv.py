"""Convolution, pooling, im2col and the conv nets against straightforward references."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fastnet
from fastnet import DeepConvNet, SimpleConvNet
from fastnet.patches import col2im, conv_output_size, im2col
from fastnet.layers import Convolution, Pooling
from fastnet.optimizers import Adam

SHAPES = [  # (x shape, filter h, filter w, stride, pad)
    ((2, 3, 7, 6), 3, 3, 1, 0),
    ((2, 2, 8, 8), 3, 2, 2, 1),
    ((1, 1, 5, 5), 5, 5, 1, 2),
    ((3, 2, 6, 7), 2, 3, 3, 2),
]


def padded(x, pad):
    return np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])


def direct_conv(x, W, b, stride, pad):
    """out[n, f, i, j] = sum over the window of x * W[f] + b[f], one position at a time."""
    xp = padded(x, pad)
    fn, _, fh, fw = W.shape
    oh = (xp.shape[2] - fh) // stride + 1
    ow = (xp.shape[3] - fw) // stride + 1
    out = np.empty((x.shape[0], fn, oh, ow))
    for n in range(x.shape[0]):
        for f in range(fn):
            for i in range(oh):
                for j in range(ow):
                    patch = xp[n, :, i * stride:i * stride + fh, j * stride:j * stride + fw]
                    out[n, f, i, j] = np.sum(patch * W[f]) + b[f]
    return out


def direct_pool(x, ph, pw, stride, pad):
    xp = padded(x, pad)
    oh = (xp.shape[2] - ph) // stride + 1
    ow = (xp.shape[3] - pw) // stride + 1
    out = np.empty(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = xp[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw].max(axis=(2, 3))
    return out


def numerical(f, a, h=1e-6):
    grad = np.zeros_like(a)
    for idx in np.ndindex(*a.shape):
        keep = a[idx]
        a[idx] = keep + h
        up = f()
        a[idx] = keep - h
        down = f()
        a[idx] = keep
        grad[idx] = (up - down) / (2 * h)
    return grad


@pytest.mark.parametrize("shape, fh, fw, stride, pad", SHAPES)
def test_im2col_rows_are_patches(shape, fh, fw, stride, pad):
    x = np.random.default_rng(0).standard_normal(shape)
    col = im2col(x, fh, fw, stride, pad)
    oh, ow = conv_output_size(shape[2], fh, stride, pad), conv_output_size(shape[3], fw, stride, pad)
    assert col.shape == (shape[0] * oh * ow, shape[1] * fh * fw)
    xp = padded(x, pad)
    for n in range(shape[0]):
        for i in range(oh):
            for j in range(ow):
                patch = xp[n, :, i * stride:i * stride + fh, j * stride:j * stride + fw]
                assert np.array_equal(col[(n * oh + i) * ow + j], patch.reshape(-1))


@pytest.mark.parametrize("shape, fh, fw, stride, pad", SHAPES)
def test_col2im_is_the_adjoint_of_im2col(shape, fh, fw, stride, pad):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    col = im2col(x, fh, fw, stride, pad)
    c = rng.standard_normal(col.shape)
    back = col2im(c, shape, fh, fw, stride, pad)
    assert back.shape == shape
    np.testing.assert_allclose(np.sum(col * c), np.sum(x * back), rtol=1e-12)


def test_conv_output_size_and_its_errors():
    assert conv_output_size(28, 5) == 24
    assert conv_output_size(28, 3, 1, 1) == 28
    assert conv_output_size(7, 3, 2, 1) == 4
    with pytest.raises(ValueError, match="filter_size 9 is larger"):
        conv_output_size(4, 9)
    with pytest.raises(ValueError, match="stride"):
        conv_output_size(4, 2, 0)
    with pytest.raises(ValueError, match="pad"):
        conv_output_size(4, 2, 1, -1)


@pytest.mark.parametrize("shape, fh, fw, stride, pad", SHAPES)
def test_convolution_forward_and_backward(cpu_backend, shape, fh, fw, stride, pad):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    W = rng.standard_normal((4, shape[1], fh, fw))
    b = rng.standard_normal(4)
    layer = Convolution(W, b, stride, pad)
    out = layer.forward(x)
    np.testing.assert_allclose(out, direct_conv(x, W, b, stride, pad), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(out.shape)
    dx = layer.backward(g)

    def f():
        return np.sum(direct_conv(x, W, b, stride, pad) * g)

    for got, arr in ((dx, x), (layer.dW, W), (layer.db, b)):
        np.testing.assert_allclose(got, numerical(f, arr), rtol=1e-6, atol=1e-6)
    assert layer.col.shape[0] == out.shape[0] * out.shape[2] * out.shape[3]


@pytest.mark.parametrize("pool, stride, pad", [(2, 2, 0), (3, 1, 0), (2, 1, 1), (3, 2, 1)])
def test_pooling_forward_and_backward(cpu_backend, pool, stride, pad):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    layer = Pooling(pool, pool, stride, pad)
    out = layer.forward(x)
    np.testing.assert_array_equal(out, direct_pool(x, pool, pool, stride, pad))
    g = rng.standard_normal(out.shape)
    dx = layer.backward(g)

    def f():
        return np.sum(direct_pool(x, pool, pool, stride, pad) * g)

    np.testing.assert_allclose(dx, numerical(f, x), rtol=1e-6, atol=1e-6)


def test_layer_errors_name_the_argument():
    W, b = np.ones((2, 3, 3, 3)), np.zeros(2)
    with pytest.raises(ValueError, match="W must hold filters"):
        Convolution(np.ones((2, 3)), b)
    with pytest.raises(ValueError, match=r"b must have shape \(2,\)"):
        Convolution(W, np.zeros(3))
    with pytest.raises(TypeError, match="W must be a floating-point"):
        Convolution(W.astype(int), b)
    with pytest.raises(ValueError, match="stride must be an integer >= 1"):
        Convolution(W, b, stride=0)
    with pytest.raises(ValueError, match="pad must be an integer >= 0"):
        Convolution(W, b, pad=-1)
    conv = Convolution(W, b)
    with pytest.raises(RuntimeError, match="before forward"):
        conv.backward(np.ones((1, 2, 1, 1)))
    with pytest.raises(ValueError, match="x has 2 channels"):
        conv.forward(np.ones((1, 2, 5, 5)))
    with pytest.raises(ValueError, match=r"x must be a non-empty batch of images \(N, C, H, W\)"):
        conv.forward(np.ones((3, 5, 5)))
    with pytest.raises(ValueError, match="does not fit filters 3x3"):
        conv.forward(np.ones((1, 3, 2, 5)))
    out = conv.forward(np.ones((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="dout must have the forward output's shape"):
        conv.backward(np.ones((1, 2, 2, 3)))
    assert out.shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="pool_h must be an integer >= 1"):
        Pooling(0, 2)
    with pytest.raises(ValueError, match="does not fit the 4x4 pooling window"):
        Pooling(4, 4).forward(np.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="col must have shape"):
        col2im(np.ones((3, 3)), (1, 1, 4, 4), 2, 2)
    with pytest.raises(ValueError, match="input_data must be a batch of images"):
        im2col(np.ones((4, 4)), 2, 2)


def small_simple(**kw):
    return SimpleConvNet((2, 8, 8), {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1},
                         hidden_size=5, output_size=4, weight_init_std=0.3, seed=0, **kw)


def small_deep(**kw):
    convs = {f"conv_param_{i}": {"filter_num": 2} for i in range(1, 7)}
    return DeepConvNet((1, 8, 8), **convs, hidden_size=4, output_size=3, seed=0, **kw)


def test_simple_convnet_architecture_is_the_books():
    net = SimpleConvNet(seed=0, backend="numpy")
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {"W1": (30, 1, 5, 5), "b1": (30,), "W2": (4320, 100), "b2": (100,),
                      "W3": (100, 10), "b3": (10,)}
    assert list(net.layers) == ["Conv1", "Relu1", "Pool1", "Affine1", "Relu2", "Affine2"]
    assert 0.0095 < net.params["W2"].std() < 0.0105


def test_deep_convnet_architecture_is_the_books():
    net = DeepConvNet(seed=0, backend="numpy")
    shapes = [net.params[f"W{i}"].shape for i in range(1, 9)]
    assert shapes == [(16, 1, 3, 3), (16, 16, 3, 3), (32, 16, 3, 3), (32, 32, 3, 3),
                      (64, 32, 3, 3), (64, 64, 3, 3), (1024, 50), (50, 10)]
    assert net.layers["Conv4"].pad == 2
    np.testing.assert_allclose(net.params["W6"].std(), np.sqrt(2 / 576), rtol=0.05)
    assert sum(1 for k in net.layers if k.startswith("Dropout")) == 2


def test_simple_convnet_gradient_matches_numerical(cpu_backend):
    net = small_simple()
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((3, 2, 8, 8)), np.array([0, 3, 1])
    grads = net.gradient(x, t)
    numgrads = net.numerical_gradient(x, t)
    for k in net.params:
        np.testing.assert_allclose(grads[k], numgrads[k], rtol=1e-4, atol=2e-6, err_msg=k)  # h=1e-4 differences


def test_deep_convnet_gradient_matches_numerical_without_dropout(cpu_backend):
    net = small_deep()
    for name in ("Dropout1", "Dropout2"):
        net.layers[name].dropout_ratio = 0.0  # training and test mode then compute the same loss
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((2, 1, 8, 8)), np.array([2, 0])
    grads = net.gradient(x, t)
    numgrads = net.numerical_gradient(x, t)
    for k in net.params:
        np.testing.assert_allclose(grads[k], numgrads[k], rtol=1e-4, atol=2e-6, err_msg=k)  # h=1e-4 differences


def test_training_lowers_the_loss_and_accuracy_counts_every_sample(cpu_backend):
    net = small_simple()
    rng = np.random.default_rng(6)
    x, t = rng.standard_normal((30, 2, 8, 8)), rng.integers(0, 4, 30)
    first = float(net.loss(x, t))
    opt = Adam(0.01)
    for _ in range(30):
        net.train_step(x, t, opt)
    assert float(net.loss(x, t)) < 0.5 * first
    labels = np.argmax(net.predict(x), axis=1)
    assert net.accuracy(x, t, batch_size=7) == np.mean(labels == t)  # 30 = 4*7 + 2: the rest counts
    loss, acc = net.evaluate(x, t)
    assert acc == np.mean(labels == t)
    assert np.isclose(loss, float(net.loss(x, t)))


@pytest.mark.parametrize("make", [small_simple, small_deep])
def test_save_and_load_roundtrip(tmp_path, make):
    net = make(backend="numpy")
    x = np.random.default_rng(7).standard_normal((2,) + net.input_dim)
    json.dumps(net.config())
    path = fastnet.save_params(tmp_path / "net.npz", net)
    again = fastnet.load_net(path)
    assert type(again) is type(net) and again.config() == net.config()
    for k in net.params:
        assert np.array_equal(again.params[k], net.params[k])
    assert np.array_equal(again.predict(x), net.predict(x))


def test_net_input_errors():
    net = small_simple(backend="numpy")
    with pytest.raises(ValueError, match=r"x must be a batch of images of shape \(N, 2, 8, 8\)"):
        net.predict(np.ones((2, 1, 8, 8)))
    assert net.predict(np.ones((2, 128))).shape == (2, 4)  # flat rows are reshaped
    with pytest.raises(ValueError, match="conv_param has unknown keys"):
        SimpleConvNet(conv_param={"filters": 3})
    with pytest.raises(ValueError, match=r"conv_param\['stride'\] must be an integer >= 1"):
        SimpleConvNet(conv_param={"stride": 0})
    with pytest.raises(ValueError, match="input_dim must be"):
        SimpleConvNet(input_dim=(28, 28))
    with pytest.raises(ValueError, match="weight_init_std"):
        SimpleConvNet(weight_init_std=-1)
    with pytest.raises(ValueError, match=r"input_dim \(1, 5, 5\) is too small .*the 2x2 pooling after the conv"):
        SimpleConvNet(input_dim=(1, 5, 5))
    with pytest.raises(ValueError, match=r"input_dim \(1, 3, 3\) .*the convolution \(conv_param\).*5x5 window"):
        SimpleConvNet(input_dim=(1, 3, 3))
    with pytest.raises(ValueError, match=r"input_dim \(1, 2, 2\) is too small .*pooling 3"):
        fastnet.DeepConvNet(input_dim=(1, 2, 2))


@pytest.mark.parametrize("make", [small_simple, small_deep])
def test_net_gradient_equals_the_layers_run_one_by_one(cpu_backend, make):
    """The net runs a convolution and its ReLU as one backend call; the layers end up as the book's."""
    net, ref = make(), make()
    for name in ("Dropout1", "Dropout2"):
        if name in net.layers:
            net.layers[name].dropout_ratio = ref.layers[name].dropout_ratio = 0.0
    x = np.random.default_rng(8).standard_normal((3,) + net.input_dim)
    t = np.array([0, 2, 1])
    grads = net.gradient(x, t)
    h = x
    for layer in ref.layers.values():
        h = layer.forward(h)
    ref.last_layer.forward(h, t)
    dout = ref.last_layer.backward(1)
    for layer in reversed(list(ref.layers.values())):
        dout = layer.backward(dout)
    for name, layer in ref.layers.items():
        mine = net.layers[name]
        for attr in ("out", "mask", "col", "col_W", "dW", "db", "arg_max"):
            if hasattr(layer, attr) and getattr(layer, attr) is not None:
                assert np.array_equal(getattr(mine, attr), getattr(layer, attr)), f"{name}.{attr}"
    for name, i in net._owners.items():
        assert np.array_equal(grads["W" + i], ref.layers[name].dW)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["conv_param"].update(filter_num=10**9), r"config needs W1 of shape \[1000000000"),
        (lambda c: c.update(hidden_size=10**15), r"config needs W2 of shape"),
        (lambda c: c.update(input_dim=[1, 28]), "input_dim"),
        (lambda c: c.pop("conv_param"), "conv_param"),
    ],
)
def test_tampered_conv_config_is_refused_before_building(tmp_path, edit, message):
    """A config edited to huge sizes is a ModelFileError found from shapes alone, not a MemoryError."""
    import json

    from fastnet.io import HEADER_KEY, ModelFileError, load_net, save_params

    path = save_params(tmp_path / "conv.npz", fastnet.SimpleConvNet(
        (1, 8, 8), {"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1}, hidden_size=4, output_size=3, seed=0))
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(str(arrays[HEADER_KEY][()]))
    edit(header["config"])
    arrays[HEADER_KEY] = np.array(json.dumps(header))
    np.savez(path, **arrays)
    with pytest.raises(ModelFileError, match=message):
        load_net(path)


def test_loss_from_any_step_is_the_test_mode_loss(cpu_backend):
    """predict_from / loss_from / step_holding: what the numerical gradients build on."""
    net = small_deep(backend=cpu_backend)
    x, t = np.random.default_rng(6).standard_normal((2, 1, 8, 8)), np.array([1, 2])
    inputs = []
    net.predict_from(0, x, False, keep=inputs)
    want = net.loss(x, t, train_flg=False)
    assert all(net.loss_from(k, inputs[k], t) == want for k in range(len(inputs)))
    holding = net.step_holding()
    assert sorted(holding) == sorted(net.params) and holding["W1"] == 0 and holding["W8"] == len(inputs) - 2
    for bad in (-1, len(inputs) + 1, 1.0):
        with pytest.raises(ValueError, match="start must be a step number"):
            net.predict_from(bad, x, False)


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_a_changed_activation_layer_after_a_convolution_runs_its_own_forward(backend_name):
    """A Relu subclass (or a replaced forward) right after a convolution is not fused with it."""
    if not fastnet.available_backends()[backend_name].available:
        pytest.skip(f"{backend_name} unavailable")

    class Leaky(fastnet.layers.Relu):
        def forward(self, x):
            return np.where(x > 0, x, 0.1 * x)

    net = SimpleConvNet((1, 8, 8), {"filter_num": 2, "filter_size": 3, "pad": 1, "stride": 1}, hidden_size=4,
                        output_size=3, weight_init_std=0.3, seed=0, backend=backend_name)
    net.layers["Relu1"] = Leaky(backend=backend_name)
    x = np.random.default_rng(2).standard_normal((2, 1, 8, 8))
    y = x
    for layer in net.layers.values():
        y = layer.forward(y)
    np.testing.assert_array_equal(net.predict(x), y)
