"""The CuPy backend's convolution kernels (kernels/conv.cu) give the reference path's values
bit for bit, run on the CPU emulator: each kernel alone, then whole conv nets training."""

from __future__ import annotations

import numpy as np
import pytest
from cupy_helpers import REF, needs_cxx

import fastnet
from fastnet.activations import RELU
from fastnet.backend.conv_ops import ConvOps
from fastnet.patches import reference_col2im, reference_im2col
from fastnet.optimizers import Adam

pytestmark = needs_cxx

GEOMETRIES = [  # (N, C, H, W), filter, stride, pad
    ((2, 3, 7, 6), (3, 3), 1, 0),
    ((2, 2, 8, 8), (3, 2), 2, 1),
    ((1, 1, 5, 5), (5, 5), 1, 2),
    ((3, 2, 6, 7), (2, 2), 2, 0),
]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == np.ascontiguousarray(b).tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,filt,stride,pad", GEOMETRIES)
def test_im2col_and_col2im_match_the_reference(emu_backend, dtype, shape, filt, stride, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    col = emu_backend.im2col(x, *filt, stride, pad)
    assert same(col, reference_im2col(np, x, *filt, stride, pad))
    dcol = rng.standard_normal(col.shape).astype(dtype)
    assert same(emu_backend.col2im(dcol, shape, *filt, stride, pad),
                reference_col2im(np, dcol, shape, *filt, stride, pad))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,filt,stride,pad", GEOMETRIES)
def test_pooling_matches_the_reference(emu_backend, dtype, shape, filt, stride, pad):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 1, 1] = np.nan  # NumPy's max and argmax: the first NaN wins
    x[-1, -1, :2, :2] = 0.5  # ties: the first position
    out, arg = emu_backend.pool_forward(x, *filt, stride, pad)
    ref_out, ref_arg = REF.pool_forward(x, *filt, stride, pad)
    assert np.array_equal(out, ref_out, equal_nan=True) and out.dtype == ref_out.dtype
    assert np.array_equal(arg, ref_arg)
    dout = rng.standard_normal(out.shape).astype(dtype)
    assert same(emu_backend.pool_backward(dout, arg, shape, *filt, stride, pad),
                REF.pool_backward(dout, ref_arg, shape, *filt, stride, pad))


@pytest.mark.parametrize("relu", [False, True])
def test_convolution_forward_and_backward_match_the_reference(emu_backend, relu):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 7))
    W, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    if relu:
        out, col, col_W, mask = emu_backend.conv_activation_forward(x, W, b, 2, 1, RELU)
        ref, rcol, rcol_W, rmask = REF.conv_activation_forward(x, W, b, 2, 1, RELU)
        assert np.array_equal(mask, rmask)
    else:
        out, col, col_W = emu_backend.conv_forward(x, W, b, 2, 1)
        ref, rcol, rcol_W = REF.conv_forward(x, W, b, 2, 1)
    assert same(out, ref) and same(col, rcol)
    dout = rng.standard_normal(out.shape)
    if relu:
        got = emu_backend.conv_activation_backward(dout, mask, RELU, x.shape, W.shape,
                                                   col, col_W, 2, 1)
        want = REF.conv_activation_backward(dout, rmask, RELU, x.shape, W.shape,
                                            rcol, rcol_W, 2, 1)
    else:
        got = emu_backend.conv_backward(dout, x.shape, W.shape, col, col_W, 2, 1)
        want = REF.conv_backward(dout, x.shape, W.shape, rcol, rcol_W, 2, 1)
    for a, r in zip(got, want):
        assert same(a, r)


def test_other_inputs_take_the_reference_path(emu_backend, emu):
    """Integer images are not what the kernels were written for: the reference runs, no launch."""
    x = np.arange(2 * 1 * 5 * 5).reshape(2, 1, 5, 5)
    before = emu.launches
    assert same(emu_backend.im2col(x, 3, 3, 1, 0), reference_im2col(np, x, 3, 3, 1, 0))
    assert emu.launches == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_simple_convnet_trains_as_on_numpy(emu_backend, emu, dtype):
    """Three Adam steps of a small SimpleConvNet layer by layer (net.gradient, then the optimizer's
    update; train_step runs plan_conv instead): every parameter equal to numpy's, bit for bit."""
    kw = dict(input_dim=(2, 9, 9), conv_param={"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1},
              hidden_size=6, output_size=3, weight_init_std=0.3, seed=0, dtype=dtype)
    ours = fastnet.SimpleConvNet(**kw, backend=emu_backend)
    ref = fastnet.SimpleConvNet(**kw, backend=REF)
    rng = np.random.default_rng(3)
    o1, o2 = Adam(lr=0.01), Adam(lr=0.01)
    before = emu.launches
    for _ in range(3):
        x, t = rng.standard_normal((5, 2, 9, 9)).astype(dtype), rng.integers(0, 3, 5)
        assert ours.loss(x, t).tobytes() == ref.loss(x, t).tobytes()
        for net, optimizer in ((ours, o1), (ref, o2)):
            optimizer.update(net.params, net.gradient(x, t))
    assert emu.launches > before  # the kernels ran
    for k in ref.params:
        assert same(ours.params[k], ref.params[k]), k
    assert same(ours.predict(x), ref.predict(x))


def small_convnet(backend, conv):
    return fastnet.SimpleConvNet((2, 9, 10), {"filter_num": 3, "filter_size": 3, **conv}, hidden_size=8,
                                 output_size=4, weight_init_std=0.3, seed=0, dtype=np.float64, backend=backend)


@pytest.mark.parametrize("conv", [{"pad": 1, "stride": 1}, {"pad": 0, "stride": 2}], ids=["pad1", "stride2"])
def test_convnet_numerical_gradient_equals_the_loop(emu_backend, conv, monkeypatch):
    ours, ref = small_convnet(emu_backend, conv), small_convnet(REF, conv)
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((3, 2, 9, 10)), rng.integers(0, 4, 3)
    want = ref.numerical_gradient(x, t)

    def loop(*args, **kwargs):
        raise AssertionError("the emulated backend ran the loop, not the incremental gradient")

    monkeypatch.setattr(ConvOps, "convnet_numerical_gradient", loop)
    got = ours.numerical_gradient(x, t)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-9, err_msg=k)
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape


def test_convnet_numerical_gradient_losses_are_the_perturbed_nets_losses():
    """f(p + h) and f(p - h) of sampled entries, each against a plain forward pass of the perturbed net."""
    from fastnet.backend.cupy.conv_numgrad import simple_convnet_losses

    h = 1e-4
    net = small_convnet(REF, {"pad": 1, "stride": 1})
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((3, 2, 9, 10)), rng.integers(0, 4, 3)
    plus, minus = simple_convnet_losses(np, net.params, 1, 1, x, t, h)
    probe = small_convnet(REF, {"pad": 1, "stride": 1})
    for key, p in net.params.items():
        for idx in rng.choice(p.size, size=min(6, p.size), replace=False):
            for sign, table in ((1, plus), (-1, minus)):
                for k, q in net.params.items():
                    probe.params[k][...] = q
                probe.params[key].reshape(-1)[idx] += sign * h
                want = float(probe.loss(x, t))
                got = float(table[key].reshape(-1)[idx])
                assert abs(got - want) <= 1e-12 * abs(want), (key, idx, sign, got, want)


def test_deep_convnet_step_as_on_numpy(emu_backend, emu):
    """One Adam step of the book's DeepConvNet (padding, three pools, dropout) layer by layer
    (net.gradient, then the update; train_step runs plan_conv instead), bit for bit."""
    ours = fastnet.DeepConvNet(seed=0, dtype=np.float64, backend=emu_backend)
    ref = fastnet.DeepConvNet(seed=0, dtype=np.float64, backend=REF)
    rng = np.random.default_rng(6)
    x, t = rng.random((2, 1, 28, 28)), rng.integers(0, 10, 2)
    before = emu.launches
    optimizer = Adam()
    optimizer.update(ours.params, ours.gradient(x, t))
    ref.train_step(x, t, Adam())
    assert emu.launches > before
    for k in ref.params:
        assert same(ours.params[k], ref.params[k]), k


def test_convnet_numerical_gradient_in_groups_of_samples(monkeypatch):
    """A small memory budget works the batch through in groups: the same losses within rounding."""
    from fastnet.backend.cupy import conv_numgrad

    net = small_convnet(REF, {"pad": 1, "stride": 1})
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((5, 2, 9, 10)), rng.integers(0, 4, 5)
    whole = conv_numgrad.simple_convnet_losses(np, net.params, 1, 1, x, t, 1e-4)
    monkeypatch.setattr(conv_numgrad, "CHUNK", 1)  # one sample at a time
    grouped = conv_numgrad.simple_convnet_losses(np, net.params, 1, 1, x, t, 1e-4)
    for a, b in zip(whole, grouped):
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-13, err_msg=k)


class BrokenDevice:
    """A device whose compiler fails, as an NVRTC that cannot build the module would."""

    xp = np

    def module(self, source, names=()):
        raise RuntimeError("nvrtc: compilation failed")


def test_kernels_that_fail_to_build_fall_back_with_one_warning(emu_backend):
    from fastnet.backend.cupy.conv import ConvKernels

    emu_backend._conv = ConvKernels(BrokenDevice())
    emu_backend.strict = True
    x = np.random.default_rng(8).standard_normal((2, 2, 6, 6))
    with pytest.raises(RuntimeError, match="nvrtc"):
        emu_backend.im2col(x, 3, 3, 1, 0)
    emu_backend.strict = False
    with pytest.warns(RuntimeWarning, match="failed to build"):
        col = emu_backend.im2col(x, 3, 3, 1, 0)
    assert same(col, reference_im2col(np, x, 3, 3, 1, 0))
    out, _ = emu_backend.pool_forward(x, 2, 2, 2, 0)  # no second warning: the reference from now on
    assert same(out, REF.pool_forward(x, 2, 2, 2, 0)[0])


def test_a_changed_convnet_takes_the_channel_losses(emu, emu_backend, monkeypatch):
    """A net the incremental kernel does not know: the filters' losses one output channel at a time
    (within rounding of the book's loop), every other entry's from its layer (the loop's bits)."""
    from fastnet.layers import Sigmoid

    def tiny(backend):
        net = fastnet.SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3, "pad": 1}, hidden_size=3,
                                    output_size=2, weight_init_std=0.3, seed=0, dtype=np.float64, backend=backend)
        net.layers["Relu2"] = Sigmoid(backend=net.backend)
        return net

    ours, ref = tiny(emu_backend), tiny(REF)
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((2, 1, 6, 6)), np.array([1, 0])
    want = ref.numerical_gradient(x, t)

    def loop(*args, **kwargs):
        raise AssertionError("the emulated backend ran the whole loop")

    monkeypatch.setattr(ConvOps, "convnet_numerical_gradient", loop)
    before = emu.launches
    got = ours.numerical_gradient(x, t)
    assert emu.launches > before  # the conv kernels ran
    for k in want:
        if k in ("W1", "b1"):
            np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-9, err_msg=k)
        else:
            assert same(got[k], want[k]), k
