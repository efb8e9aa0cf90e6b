"""The Numba backend's numerical gradient of conv nets: SimpleConvNet's incremental kernel (true losses,
the loop's gradient), any other conv net from the layer holding each entry (the loop's bits)."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet import SimpleConvNet
from fastnet.layers import Sigmoid

if not fastnet.available_backends()["numba"].available:
    pytest.skip("numba unavailable", allow_module_level=True)

from fastnet.backend.numba.conv_numgrad import simple_convnet_losses

H = 1e-4


def small(backend, **kw):
    conv = {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1}
    conv.update(kw.pop("conv", {}))
    return SimpleConvNet((2, 9, 10), conv, hidden_size=8, output_size=4, weight_init_std=0.3, seed=0,
                         backend=backend, **kw)


def data(net, n=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + net.input_dim), rng.integers(0, net.output_size, n)


@pytest.mark.parametrize("conv", [{}, {"stride": 2, "pad": 0}], ids=["pad1", "stride2"])
def test_gradient_equals_the_numpy_loop(conv):
    a, b = small("numpy", conv=conv), small("numba", conv=conv)
    x, t = data(a)
    want, got = a.numerical_gradient(x, t), b.numerical_gradient(x, t)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-9, err_msg=k)
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape


def check_losses_against_plain_passes(net, x, t, per_array, seed=2):
    """f(p + h) and f(p - h) of sampled entries, each against the loss of the whole perturbed net."""
    plus, minus = simple_convnet_losses(net.params, net.layers["Conv1"].stride, net.layers["Conv1"].pad,
                                        x, t, H)
    ref = SimpleConvNet(**net.config(), backend="numpy")  # a plain forward pass, in float64
    rng = np.random.default_rng(seed)
    for key, p in net.params.items():
        for idx in rng.choice(p.size, size=min(per_array, p.size), replace=False):
            for sign, table in ((1, plus), (-1, minus)):
                for k, q in net.params.items():
                    ref.params[k][...] = q
                ref.params[key].reshape(-1)[idx] += sign * H
                want = float(ref.loss(x, t))
                got = table[key].reshape(-1)[idx]
                assert abs(got - want) <= 1e-12 * abs(want), (key, idx, sign, got, want)


def test_losses_are_the_perturbed_nets_losses():
    net = small("numba")
    x, t = data(net)
    check_losses_against_plain_passes(net, x, t, per_array=12)


@pytest.mark.slow
def test_losses_of_the_books_net_at_batch_10():
    net = SimpleConvNet(seed=0, backend="numba")
    rng = np.random.default_rng(3)
    x, t = rng.random((10, 1, 28, 28)), rng.integers(0, 10, 10)
    check_losses_against_plain_passes(net, x, t, per_array=6)


def test_one_hot_targets_and_float32():
    net = small("numba", dtype=np.float32)
    x, t = data(net)
    onehot = np.eye(4)[t]
    g1, g2 = net.numerical_gradient(x, t), net.numerical_gradient(x, onehot)
    for k in g1:
        assert g1[k].dtype == np.float32
        assert np.array_equal(g1[k], g2[k])
    backprop = net.gradient(x, t)
    for k in g1:
        np.testing.assert_allclose(g1[k], backprop[k], rtol=1e-2, atol=1e-4, err_msg=k)


def close_or_same_bits(want, got, filters):
    """The filter entries within rounding of the loop (their own losses), every other entry its bits."""
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        if k in filters:
            np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-9, err_msg=k)
        else:
            assert np.array_equal(got[k], want[k]), k


def test_a_changed_net_takes_the_channel_losses():
    a, b = small("numpy"), small("numba")
    for net in (a, b):
        net.layers["Relu2"] = Sigmoid(backend=net.backend)
    x, t = data(a)
    close_or_same_bits(a.numerical_gradient(x, t), b.numerical_gradient(x, t), {"W1", "b1"})
    check_channel_losses(b, x, t, ["W1", "b1"])


def small_deep(backend, dtype=np.float64, **kw):
    convs = {f"conv_param_{i}": {"filter_num": 2, "filter_size": 3, "pad": 2 if i == 4 else 1, "stride": 1}
             for i in range(1, 7)}
    convs.update(kw)
    return fastnet.DeepConvNet((1, 10, 10), **convs, hidden_size=5, output_size=3, seed=0, dtype=dtype,
                               backend=backend)


DEEP_FILTERS = {f"{p}{i}" for p in "Wb" for i in range(1, 7)}


@pytest.mark.parametrize("one_hot", [False, True], ids=["labels", "one-hot"])
def test_deep_convnet_float64_within_rounding_of_the_loop(one_hot):
    a, b = small_deep("numpy"), small_deep("numba")
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((3, 1, 10, 10)), np.array([2, 0, 1])
    if one_hot:
        t = np.eye(3)[t]
    close_or_same_bits(a.numerical_gradient(x, t), b.numerical_gradient(x, t), DEEP_FILTERS)


def test_deep_convnet_float32_gives_the_loops_bits():
    """float32 losses round far more than h shows: the loop from the holding layer, the loop's bits."""
    a, b = small_deep("numpy", np.float32), small_deep("numba", np.float32)
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((3, 1, 10, 10)).astype(np.float32), np.array([2, 0, 1])
    close_or_same_bits(a.numerical_gradient(x, t), b.numerical_gradient(x, t), set())


def check_channel_losses(net, x, t, names, per_array=5, seed=4):
    """Sampled f(p + h), f(p - h) of the channel path, each against a plain forward pass of the
    whole perturbed net (test mode) on the numpy backend."""
    from fastnet.backend.channel_numgrad import filter_losses

    xc, tc = net.checked_batch(x, t)
    ref = type(net)(**net.config(), backend="numpy")
    ref.layers = type(ref.layers)((name, layer) for name, layer in ref.layers.items())
    for name, layer in net.layers.items():  # a changed net: the same layer kinds in the reference
        if type(layer) is not type(ref.layers[name]):
            ref.layers[name] = type(layer)(backend="numpy")
    rng = np.random.default_rng(seed)
    for key in names:
        plus, minus = filter_losses(net, xc, tc, H, key)
        p = net.params[key]
        for idx in rng.choice(p.size, size=min(per_array, p.size), replace=False):
            for sign, table in ((1, plus), (-1, minus)):
                for k, q in net.params.items():
                    ref.params[k][...] = q
                ref.params[key].reshape(-1)[idx] += sign * H
                want = float(ref.loss(x, t, train_flg=False)) if isinstance(ref, fastnet.DeepConvNet) \
                    else float(ref.loss(x, t))
                got = float(table.reshape(-1)[idx])
                assert abs(got - want) <= 1e-12 * abs(want), (key, idx, sign, got, want)


def test_deep_convnet_losses_are_the_perturbed_nets_losses():
    net = small_deep("numba", conv_param_5={"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 2})
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((4, 1, 10, 10)), np.array([2, 0, 1, 1])
    check_channel_losses(net, x, t, sorted(DEEP_FILTERS))


@pytest.mark.parametrize("change", ["decay", "activation", "shared"])
def test_what_the_channel_losses_do_not_know_runs_the_loop(change):
    from fastnet.backend.channel_numgrad import filter_losses

    nets = small_deep("numpy"), small_deep("numba")
    for net in nets:
        if change == "decay":
            net.weight_decay_lambda = 0.1
        elif change == "activation":  # a user's activation may mix channels
            from fastnet.layers import Activation

            class Softsign:
                def forward(self, xp, x):
                    return x / (1 + xp.abs(x)), x

                def backward(self, xp, dout, x):
                    return dout / (1 + xp.abs(x)) ** 2

            net.layers["Relu3"] = Activation(Softsign(), backend=net.backend)
        else:  # one layer object twice: a perturbation moves two places
            net.layers["Conv4"] = net.layers["Conv3"] = net.layers["Conv3"]
    x, t = data(nets[1])
    if change != "shared":
        assert filter_losses(nets[1], *nets[1].checked_batch(x, t), H, "W1") is None
    close_or_same_bits(nets[0].numerical_gradient(x, t), nets[1].numerical_gradient(x, t), set())


def test_the_holding_convolution_runs_only_for_the_base_pass(monkeypatch):
    """float64: W1's perturbations recompute one channel, never the whole convolution; float32
    (the loop from the holding step): twice per entry."""
    for dtype, want in ((np.float64, lambda n: n <= 2), (np.float32, lambda n: n == 1 + 2 * 20)):
        net = small_deep("numba", dtype)
        backend, calls = net.backend, []
        forward = backend.conv_activation_forward

        def counted(x, W, *args, _net=net, **kw):
            calls.append(W is _net.params["W1"])
            return forward(x, W, *args, **kw)

        monkeypatch.setattr(backend, "conv_activation_forward", counted)
        x, t = data(net)
        net.numerical_gradient(x.astype(dtype), t)
        assert net.params["W1"].size + net.params["b1"].size == 20
        assert want(sum(calls)), (dtype, sum(calls))
        monkeypatch.undo()


class ChannelMeanRelu(fastnet.layers.Relu):
    """A user's layer: a Relu subclass whose forward mixes channels."""

    def forward(self, x):
        return super().forward(x - x.mean(axis=1, keepdims=True))

    def backward(self, dout):
        d = super().backward(dout)
        return d - d.mean(axis=1, keepdims=True)


class LeakyRelu(fastnet.layers.Relu):
    def forward(self, x):
        self.x = x
        return np.where(x > 0, x, 0.1 * x)

    def backward(self, dout):
        return np.where(self.x > 0, dout, 0.1 * dout)


@pytest.mark.parametrize("where", ["deep-after-pool", "simple-after-pool", "simple-relu2"])
def test_a_layer_subclass_runs_the_loop(where):
    """A subclass of a built-in layer is not the built-in: neither the channel losses nor the
    SimpleConvNet kernel may assume what it computes."""
    nets = [small_deep(bk) if where.startswith("deep") else small(bk) for bk in ("numpy", "numba")]
    for net in nets:
        if where == "simple-relu2":
            net.layers["Relu2"] = LeakyRelu(backend=net.backend)
        else:
            items = list(net.layers.items())
            at = [k for k, _ in items].index("Pool1") + 1
            net.layers = type(net.layers)(items[:at] + [("Mix", ChannelMeanRelu(backend=net.backend))] + items[at:])
    x, t = data(nets[1])
    close_or_same_bits(nets[0].numerical_gradient(x, t), nets[1].numerical_gradient(x, t), set())


@pytest.mark.slow
def test_the_readme_examples_difference_comes_from_a_few_kinks():
    """README's conv example: the largest |numerical - backprop| is about 1e-3 (ReLU inputs or pooling
    ties within h of their kink), while 99.9 % of the 433,890 entries agree to 1e-5 and half exactly."""
    x = np.random.default_rng(0).random((10, 1, 28, 28))
    t = np.arange(10) % 10
    net = SimpleConvNet(seed=0, backend="numba")
    optimizer = fastnet.Adam()
    for _ in range(3):
        net.train_step(x, t, optimizer)
    numerical, backprop = net.numerical_gradient(x, t), net.gradient(x, t)
    diff = np.concatenate([np.abs(numerical[k] - backprop[k]).ravel() for k in backprop])
    assert 1e-4 < diff.max() < 1e-2
    assert np.quantile(diff, 0.999) < 1e-5 and np.median(diff) < 1e-12


def test_float32_nets_differ_from_the_float32_loop_by_its_rounding():
    """numba.md: float32 losses computed in float64 against the numpy loop's float32 losses differ by
    about the float32 rounding of a loss over 2h (~1e-3 at h = 1e-4), not more."""
    ours, loop = small("numba", dtype=np.float32), small("numpy", dtype=np.float32)
    x, t = data(ours)
    got, want = ours.numerical_gradient(x, t), loop.numerical_gradient(x, t)
    loss = float(loop.loss(x, t))
    bound = 4 * np.finfo(np.float32).eps * loss / (2 * H)  # a few ulps of the loss, over 2h
    worst = max(float(np.abs(got[k] - want[k]).max()) for k in want)
    assert 1e-5 < worst < bound, (worst, bound)
