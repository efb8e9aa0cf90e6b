"""The numba backend's own kernels, each against the NumPy reference.

Training kernels must agree with NumPy bit for bit; the numerical gradient
must return true losses of the perturbed net (1e-12 relative) and the book's
gradient (1e-9); the vectorised exp/log must stay within 1 ulp of libm.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import fastnet
from fastnet.backend import MLPSpec, NumpyBackend

numba = pytest.importorskip("numba")
if not fastnet.available_backends()["numba"].available:  # pragma: no cover
    pytest.skip("numba backend unavailable", allow_module_level=True)

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnet import activations, optimizers
from fastnet.backend.numba import activations as act_kernels
from fastnet.backend.numba import fastmath, reduce
from fastnet.backend.numba import kernels as step
from fastnet.backend.numba.numgrad import net_losses

# The kernel tests feed extreme values on purpose; NumPy's reference warns about them.
pytestmark = pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning"
)

REF = NumpyBackend()
NB = fastnet.backend.registry.instance("numba")
FLOATS = (np.float64, np.float32)
PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a, b) -> bool:
    """Bitwise equal arrays or scalars (nan equal to nan), of the same dtype."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


# ------------------------------------------------------------------ exp / log
@numba.njit(error_model="numpy")
def _exp_both(x, mine, libm):
    for i in range(x.size):
        mine[i] = fastmath.exp64(x[i])
        libm[i] = math.exp(x[i])


@numba.njit(error_model="numpy")
def _log_both(x, mine, libm):
    for i in range(x.size):
        mine[i] = fastmath.log64(x[i])
        libm[i] = math.log(x[i])


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in units in the last place (0 where both are equal or both nan)."""
    d = np.abs(a.view(np.int64) - b.view(np.int64))
    d[(a == b) | (np.isnan(a) & np.isnan(b))] = 0
    return d


def _max_ulps(fn, x: np.ndarray) -> int:
    mine, libm = np.empty_like(x), np.empty_like(x)
    fn(x, mine, libm)
    return int(_ulps(mine, libm).max())


def test_exp_within_one_ulp_of_libm_over_the_whole_range():
    rng = np.random.default_rng(0)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -1e-300, 5e-324,
                         709.782712893384, 709.7827128933841, 710.0, 1e308,
                         -708.3964185322641, -708.4, -744.0, -745.1332191019411,
                         -745.1332191019412, -745.2, -1e308])
    cases = [
        rng.uniform(-746, 710, 1_000_000),  # every exponent, subnormal results included
        rng.uniform(-1, 1, 1_000_000),
        rng.standard_normal(200_000) * 1e-9,
        rng.uniform(-745.2, -708, 200_000),  # the subnormal range
        specials,
    ]
    for x in cases:
        assert _max_ulps(_exp_both, x) <= 1


def test_log_within_one_ulp_of_libm_over_the_whole_range():
    rng = np.random.default_rng(1)
    specials = np.array([0.0, -0.0, -1.0, -np.inf, np.inf, np.nan, 1.0, 2.0, 0.5,
                         5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                         1.4142135623730951, 0.7071067811865476, 1 + 1e-7])
    cases = [
        rng.integers(0, 0x7FF0000000000000, 1_000_000).view(np.float64),  # every positive double
        rng.integers(1, 1 << 52, 200_000).view(np.float64),  # subnormals
        rng.uniform(1e-7, 1.0 + 1e-7, 1_000_000),  # what the loss takes logs of
        rng.uniform(0.5, 2.0, 500_000),
        specials,
    ]
    for x in cases:
        assert _max_ulps(_log_both, x) <= 1


@numba.njit(error_model="numpy")
def _exp_small_both(x, mine, libm):
    for i in range(x.size):
        mine[i] = fastmath.exp_small(x[i])
        libm[i] = math.exp(x[i])


def test_exp_small_within_one_ulp_of_libm_over_its_range():
    rng = np.random.default_rng(2)
    edge = fastmath.SMALL
    specials = np.array([0.0, -0.0, edge, -edge, np.nextafter(edge, 0), 1e-300, -1e-300, 5e-324])
    for x in (rng.uniform(-edge, edge, 1_000_000), rng.standard_normal(200_000) * 1e-6, specials):
        assert _max_ulps(_exp_small_both, x) <= 1
    mine, libm = np.empty(2), np.empty(2)
    _exp_small_both(np.array([0.0, -0.0]), mine, libm)
    assert np.array_equal(mine, [1.0, 1.0])  # an unmoved score keeps its exact old exp


def test_exp_and_log_loops_vectorise():
    """Without vector code the numerical gradient loses its speed; check it is there."""

    @numba.njit(error_model="numpy")
    def loop(x, out):
        for i in range(x.size):
            out[i] = fastmath.exp64(x[i]) + fastmath.log64(x[i])

    x = np.linspace(0.5, 2, 64)
    loop(x, np.empty_like(x))
    asm = "".join(loop.inspect_asm().values())
    assert "ymm" in asm or "zmm" in asm


# ------------------------------------------------------------------ sums
@PROPS
@given(
    n=st.integers(0, 3000),
    dtype=st.sampled_from(FLOATS),
    scale=st.floats(-20, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_pairwise_sums_are_numpys(n, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(n) * 10.0 ** rng.uniform(-abs(scale), abs(scale), n)).astype(dtype)
    assert same(dtype(reduce.pairwise_sum(a)), np.sum(a))
    assert same(dtype(reduce.pairwise_sum_squares(a)), np.sum(a**2))


def test_pairwise_sum_long_arrays_and_negative_zero():
    rng = np.random.default_rng(2)
    for n in (8191, 8192, 8193, 39200, 1_000_003):
        a = rng.standard_normal(n)
        assert reduce.pairwise_sum(a) == np.sum(a)
    assert same(np.float64(reduce.pairwise_sum(np.array([-0.0]))), np.sum(np.array([-0.0])))


@PROPS
@given(rows=st.integers(1, 300), cols=st.integers(1, 40), dtype=st.sampled_from(FLOATS),
       seed=st.integers(0, 2**32 - 1))
def test_column_sums_are_numpys(rows, cols, dtype, seed):
    d = np.random.default_rng(seed).standard_normal((rows, cols)).astype(dtype)
    out = np.empty(cols, dtype)
    reduce.column_sums(d, out)
    assert same(out, np.sum(d, axis=0))


# ------------------------------------------------------------------ layer kernels
def _values(rng: np.random.Generator, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Random values with exact zeros, negative zeros and a wide range, for edge cases."""
    v = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 3, shape)
    v[rng.random(shape) < 0.1] = 0.0
    v[rng.random(shape) < 0.05] = -0.0
    return v.astype(dtype)


shapes = st.tuples(st.integers(1, 40), st.integers(1, 30))


@PROPS
@given(shape=shapes, dtype=st.sampled_from(FLOATS), seed=st.integers(0, 2**32 - 1))
def test_bias_activation_kernels_are_numpys(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    a, b = _values(rng, shape, dtype), _values(rng, shape[1:], dtype)
    for act in (activations.RELU, activations.SIGMOID, activations.TANH):
        out = a.copy()
        act_kernels.KERNELS[act.kernel].bias_forward(out, b)
        assert same(out, REF.activation_forward(act, a + b)[0]), act
        mine = act_kernels.KERNELS[act.kernel].forward(a + b)
        ref = REF.activation_forward(act, a + b)
        assert same(mine[0], ref[0]) and same(mine[1], ref[1]), act
    out = a.copy()
    step.add_bias(out, b)
    assert same(out, a + b)


@PROPS
@given(shape=st.tuples(st.integers(1, 40), st.integers(2, 300)), dtype=st.sampled_from(FLOATS),
       onehot=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_softmax_cross_entropy_kernels_are_numpys(shape, dtype, onehot, seed):
    """Rows of 2 to 300 scores (the reference needs 2 classes; past 128 NumPy splits its sums)."""
    rng = np.random.default_rng(seed)
    n, k = shape
    scores, b = _values(rng, shape, dtype), _values(rng, (k,), dtype)
    labels = rng.integers(0, k, n)
    t = np.eye(k, dtype=dtype)[labels] if onehot else labels
    ref_loss, y = REF.softmax_cross_entropy(scores + b, t)
    ref_dx = REF.softmax_cross_entropy_backward(y, t)

    e = scores.copy()
    step.bias_shift_rows(e, b)
    np.exp(e, out=e)
    picked, dz, db = np.empty(n, dtype), np.empty(shape, dtype), np.empty(k, dtype)
    kernel = step.softmax_ce_onehot if onehot else step.softmax_ce_labels
    kernel(e, t, picked, dz, db)
    np.log(picked, out=picked)
    assert same(-np.sum(picked) / n, ref_loss)
    assert same(-dtype(step.pairwise_sum(picked)) / n, ref_loss)
    assert same(dz, ref_dx)
    assert same(db, np.sum(ref_dx, axis=0))


def test_label_out_of_range_raises_instead_of_reading_memory():
    e = np.ones((2, 3))
    with pytest.raises(IndexError):
        step.softmax_ce_labels(e, np.array([0, 3]), np.empty(2), np.empty((2, 3)), np.empty(3))


@PROPS
@given(shape=shapes, dtype=st.sampled_from(FLOATS), seed=st.integers(0, 2**32 - 1))
def test_activation_backward_kernels_are_numpys(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    a, dout = _values(rng, shape, dtype), _values(rng, shape, dtype)
    db = np.empty(shape[1], dtype)
    for act in (activations.RELU, activations.SIGMOID, activations.TANH):
        kernels = act_kernels.KERNELS[act.kernel]
        out, cache = REF.activation_forward(act, a)
        ref = REF.activation_backward(act, dout.copy(), cache)
        d = dout.copy()
        kernels.backward_sums(d, out, db)
        assert same(d, ref) and same(db, np.sum(ref, axis=0)), act
        mine_out, mine_cache = kernels.forward(a)
        assert same(kernels.backward(dout.copy(), mine_cache), ref), act


OPTIMIZER_ARGS = {
    "sgd": {"lr": 0.05},
    "momentum": {"lr": 0.05, "momentum": 0.9},
    "nesterov": {"lr": 0.05, "momentum": 0.85},
    "adagrad": {"lr": 0.05},
    "rmsprop": {"lr": 0.05, "decay_rate": 0.99},
    "adam": {"lr": 0.003, "beta1": 0.9, "beta2": 0.999},
    "adamw": {"lr": 0.003, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.1},
}


@PROPS
@given(kind=st.sampled_from(sorted(OPTIMIZER_ARGS)), dtype=st.sampled_from(FLOATS),
       shape=st.sampled_from([(7,), (5, 3), (31, 9)]), seed=st.integers(0, 2**32 - 1))
def test_update_kernels_are_numpys(kind, dtype, shape, seed):
    """Each compiled rule against the definition's own rule on NumPy arrays, 3 steps."""
    rng = np.random.default_rng(seed)
    p, g = _values(rng, shape, dtype), _values(rng, shape, dtype)
    mine = optimizers.make_optimizer(kind, OPTIMIZER_ARGS[kind])
    ref = optimizers.make_optimizer(kind, OPTIMIZER_ARGS[kind])
    assert optimizers.builtin(mine) == kind
    mine.backend, ref.backend = NB, REF
    p_mine, p_ref = {"p": p.copy()}, {"p": p.copy()}
    for _ in range(3):
        mine.update(p_mine, {"p": g})
        ref.update(p_ref, {"p": g})
    assert same(p_mine["p"], p_ref["p"])
    for name in mine.state_names:
        assert same(mine.state[name]["p"], ref.state[name]["p"])


def test_compiled_rule_runs_only_for_the_builtin_definition(monkeypatch):
    from fastnet.backend.numba import optimizers as rules

    calls = []
    monkeypatch.setitem(rules.RULES, "sgd", lambda *a: calls.append(a))

    class Halved(optimizers.SGD):
        @staticmethod
        def rule(xp, p, g, lr):
            p -= 0.5 * lr * g

    p = {"W": np.ones(4)}
    opt = Halved(lr=1.0)
    opt.backend = NB
    opt.update(p, {"W": np.ones(4)})
    assert not calls and same(p["W"], np.full(4, 0.5))
    sgd = optimizers.SGD(lr=1.0)
    sgd.backend = NB
    sgd.update(p, {"W": np.ones(4)})
    assert len(calls) == 1


def test_updates_on_non_contiguous_arrays_fall_back_to_numpy():
    p = np.arange(12.0).reshape(3, 4)[:, ::2]
    ref = p.copy()
    opt, opt_ref = optimizers.SGD(0.5), optimizers.SGD(0.5)
    opt.backend, opt_ref.backend = NB, REF
    opt.update({"p": p}, {"p": np.ones_like(p)})
    opt_ref.update({"p": ref}, {"p": np.ones_like(ref)})
    assert same(p, ref)


# ------------------------------------------------------------------ whole nets
def _net_params(rng, sizes, dtype, scale=0.3):
    params = {}
    for i, (a, b) in enumerate(zip(sizes, sizes[1:]), start=1):
        params[f"W{i}"] = (scale * rng.standard_normal((a, b))).astype(dtype)
        params[f"b{i}"] = (0.1 * rng.standard_normal(b)).astype(dtype)
    return params


nets = st.fixed_dictionaries({
    "sizes": st.tuples(st.lists(st.integers(1, 24), min_size=1, max_size=4), st.integers(2, 12))
    .map(lambda p: p[0] + [p[1]]),  # widths, then at least 2 classes
    "batch": st.integers(1, 40),
    "dtype": st.sampled_from(FLOATS),
    "activation": st.sampled_from(["relu", "sigmoid", "tanh"]),
    "decay": st.sampled_from([0.0, 0.01]),
    "onehot": st.booleans(),
    "seed": st.integers(0, 2**32 - 1),
})


def _problem(cfg):
    rng = np.random.default_rng(cfg["seed"])
    sizes, dtype = cfg["sizes"], cfg["dtype"]
    params = _net_params(rng, sizes, dtype)
    spec = MLPSpec(params, len(sizes) - 1, cfg["activation"], cfg["decay"])
    x = _values(rng, (cfg["batch"], sizes[0]), dtype)
    labels = rng.integers(0, sizes[-1], cfg["batch"])
    t = np.eye(sizes[-1], dtype=dtype)[labels] if cfg["onehot"] else labels
    return spec, x, t


@PROPS
@given(cfg=nets)
def test_whole_net_kernels_are_numpys(cfg):
    spec, x, t = _problem(cfg)
    assert same(NB.mlp_predict(spec, x), REF.mlp_predict(spec, x))
    assert same(NB.mlp_loss(spec, x, t), REF.mlp_loss(spec, x, t))
    grads, loss = NB.mlp_gradient(spec, x, t)
    ref_grads, ref_loss = REF.mlp_gradient(spec, x, t)
    assert same(loss, ref_loss) and type(loss) is type(ref_loss)
    assert list(grads) == list(ref_grads)
    for name in grads:
        assert same(grads[name], ref_grads[name]), name


@PROPS
@given(cfg=nets, kind=st.sampled_from(["SGD", "Momentum", "AdaGrad", "Adam"]))
def test_train_steps_are_numpys(cfg, kind):
    from fastnet import optimizers

    spec, x, t = _problem(cfg)
    ref_spec = MLPSpec({k: v.copy() for k, v in spec.params.items()}, spec.depth,
                       spec.activation, spec.weight_decay)
    opt, ref_opt = getattr(optimizers, kind)(), getattr(optimizers, kind)()
    opt.backend, ref_opt.backend = NB, REF
    for _ in range(3):
        loss = NB.mlp_train_step(spec, x, t, opt)
        ref_loss = REF.mlp_train_step(ref_spec, x, t, ref_opt)
        assert same(loss, ref_loss)
    for name in spec.params:
        assert same(spec.params[name], ref_spec.params[name]), name


def test_train_batches_gather_like_fancy_indexing():
    from fastnet.optimizers import SGD

    rng = np.random.default_rng(5)
    x, t = rng.random((50, 6)), rng.integers(0, 3, 50)
    batches = [rng.integers(-50, 50, 8) for _ in range(4)] + [list(range(5))]
    nets = [fastnet.TwoLayerNet(6, 5, 3, seed=1, backend=b) for b in ("numpy", "numba")]
    losses = [n.train_batches(x, t, batches, SGD(0.1)) for n in nets]
    assert [float(v) for v in losses[0]] == [float(v) for v in losses[1]]
    for k in nets[0].params:
        assert same(nets[0].params[k], nets[1].params[k])
    with pytest.raises(IndexError):
        nets[1].train_batches(x, t, [np.array([0, 50])], SGD(0.1))


def test_gradient_returns_fresh_arrays_each_call():
    """The book keeps ``grad = net.gradient(x, t)`` and then updates: nothing may alias."""
    rng = np.random.default_rng(3)
    net = fastnet.TwoLayerNet(8, 6, 4, seed=2, backend="numba")
    x1, x2 = rng.random((5, 8)), rng.random((5, 8))
    t = rng.integers(0, 4, 5)
    g1 = net.gradient(x1, t)
    kept = {k: v.copy() for k, v in g1.items()}
    g2 = net.gradient(x2, t)
    net.train_step(x2, t, fastnet.optimizers.SGD(0.1))
    for k in g1:
        assert same(g1[k], kept[k])
        assert not np.shares_memory(g1[k], g2[k])
    assert not np.shares_memory(net.predict(x1), net.predict(x2))


def test_two_threads_train_two_nets_at_once():
    """Work buffers are per thread: concurrent training gives the sequential results."""
    from fastnet.optimizers import SGD

    rng = np.random.default_rng(4)
    x, t = rng.random((32, 10)), rng.integers(0, 3, 32)

    def train(seed, out):
        net = fastnet.TwoLayerNet(10, 7, 3, seed=seed, backend="numba")
        opt = SGD(0.1)
        for _ in range(200):
            net.train_step(x, t, opt)
        out[seed] = net.params

    alone: dict = {}
    for seed in (1, 2):
        train(seed, alone)
    together: dict = {}
    threads = [threading.Thread(target=train, args=(seed, together)) for seed in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for seed in (1, 2):
        for k in alone[seed]:
            assert same(alone[seed][k], together[seed][k])


def test_unusual_params_fall_back_to_numpy():
    """Non-contiguous or mixed-dtype params are not for the fused kernels: NumPy runs them."""
    rng = np.random.default_rng(6)
    params = _net_params(rng, [6, 5, 3], np.float64)
    params["W1"] = np.asfortranarray(params["W1"])
    spec = MLPSpec(params, 2, activations.RELU, 0.0)
    x, t = rng.random((4, 6)), rng.integers(0, 3, 4)
    assert same(NB.mlp_loss(spec, x, t), REF.mlp_loss(spec, x, t))
    assert same(NB.mlp_predict(spec, x), REF.mlp_predict(spec, x))


# ------------------------------------------------------------------ numerical gradient
def _perturbed_loss(spec: MLPSpec, x, t, name: str, idx: tuple, sign: int, h: float) -> float:
    """A plain float64 forward pass of the net with params[name][idx] moved as the book moves it."""
    params = {k: v.copy() for k, v in spec.params.items()}
    p = params[name]
    old = p[idx]
    p[idx] = float(old) + h if sign > 0 else old - h
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    ref = MLPSpec(p64, spec.depth, spec.activation, spec.weight_decay)
    return float(REF.mlp_loss(ref, x.astype(np.float64), t if t.ndim == 1 else t.astype(np.float64)))


def _check_losses(spec, x, t, picks, h=1e-4, any_depth=False):
    if any_depth:  # the general kernel, forced on a net the backend gives the fast one
        fplus, fminus = net_losses(spec.params, spec.depth, act_kernels.KERNELS[spec.activation.kernel].code,
                                   spec.weight_decay, x, t, h, any_depth=True)
    else:  # what mlp_numerical_gradient differentiates
        fplus, fminus = NB.mlp_numerical_losses(spec, x, t, h)
    for name, idx in picks:
        for sign, f in ((1, fplus), (-1, fminus)):
            ref = _perturbed_loss(spec, x, t, name, idx, sign, h)
            assert abs(f[name][idx] - ref) <= 1e-12 * abs(ref), (name, idx, sign)


def _all_params(spec):
    return [(name, idx) for name in spec.names() for idx in np.ndindex(spec.params[name].shape)]


def _mnist_like(rng, n, d):
    """Images with ~80% exact zeros, like MNIST (FASTNET_DATA supplies the real thing below)."""
    x = rng.random((n, d))
    x[rng.random((n, d)) < 0.8] = 0.0
    return x


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_numerical_losses_are_true_losses_of_the_perturbed_net(activation, depth):
    """Every parameter of small nets: the layered kernels (last layer, the one before it,
    then the replay through later layers from depth 3 on) and the plain general kernel."""
    rng = np.random.default_rng(depth)
    sizes = [9, 6, 5, 7][: depth] + [4]
    spec = MLPSpec(_net_params(rng, sizes, np.float64, 0.8), depth, activation, 0.05)
    x, t = _mnist_like(rng, 7, sizes[0]), rng.integers(0, 4, 7)
    _check_losses(spec, x, t, _all_params(spec))
    _check_losses(spec, x, t, _all_params(spec), any_depth=True)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_numerical_losses_when_scores_move_far(activation):
    """Scores that move by more than ``exp_small``'s range take the shifted exp64 path: samples
    with inputs in the thousands beside ordinary ones, then a large h for every sample."""
    rng = np.random.default_rng(11)
    spec = MLPSpec(_net_params(rng, [9, 6, 4], np.float64, 0.8), 2, activation, 0.05)
    x, t = _mnist_like(rng, 8, 9), rng.integers(0, 4, 8)
    x[::2] *= 3000.0
    _check_losses(spec, x, t, _all_params(spec))
    _check_losses(spec, x, t, _all_params(spec), h=0.5)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_numerical_losses_on_a_full_size_net(activation, mnist_batch):
    """784-50-10 on 100 images: a random sample of 200 parameters against plain forward passes."""
    x, t = mnist_batch
    net = fastnet.TwoLayerNet(784, 50, 10, activation=activation, seed=0, backend="numba")
    rng = np.random.default_rng(7)
    spec = net.spec()
    picks = _all_params(spec)
    picks = [picks[i] for i in rng.choice(len(picks), 200, replace=False)]
    _check_losses(spec, x, t, picks)


@pytest.fixture
def mnist_batch():
    """100 real MNIST images when FASTNET_DATA is set, else MNIST-like random ones."""
    import os

    path = os.environ.get("FASTNET_DATA")
    if path and os.path.exists(os.path.join(path, "train-images-idx3-ubyte.gz")):
        from fastnet.datasets import load_mnist

        (x, t), _ = load_mnist(data_dir=path, dtype=np.float64, download=False)
        return x[:100], t[:100].astype(np.int64)
    rng = np.random.default_rng(8)
    return _mnist_like(rng, 100, 784), rng.integers(0, 10, 100)


@PROPS
@given(cfg=nets)
def test_numerical_gradient_matches_the_book_loop(cfg):
    spec, x, t = _problem(cfg)
    if cfg["dtype"] == np.float32:
        # the book's loop differences float32 losses; compare with float64 params instead
        spec = MLPSpec({k: v.astype(np.float64) for k, v in spec.params.items()}, spec.depth,
                       spec.activation, spec.weight_decay)
        x = x.astype(np.float64)
        t = t if t.ndim == 1 else t.astype(np.float64)
    before = {k: v.copy() for k, v in spec.params.items()}
    mine = NB.mlp_numerical_gradient(spec, x, t)
    ref = REF.mlp_numerical_gradient(spec, x, t)
    for name in ref:
        assert mine[name].dtype == ref[name].dtype
        np.testing.assert_allclose(mine[name], ref[name], rtol=0, atol=1e-9, err_msg=name)
        assert same(spec.params[name], before[name])  # params untouched


def test_numerical_gradient_of_a_float32_net():
    """Perturbed as the book perturbs float32 params; losses still true float64 losses."""
    rng = np.random.default_rng(9)
    spec = MLPSpec(_net_params(rng, [10, 6, 3], np.float32), 2, activations.RELU, 0.0)
    x, t = rng.random((8, 10)).astype(np.float32), rng.integers(0, 3, 8)
    _check_losses(spec, x, t, _all_params(spec))
    grads = NB.mlp_numerical_gradient(spec, x, t)
    ref = REF.mlp_gradient(MLPSpec({k: v.astype(np.float64) for k, v in spec.params.items()}, 2),
                           x.astype(np.float64), t)[0]
    for name in grads:
        assert grads[name].dtype == np.float32
        np.testing.assert_allclose(grads[name], ref[name], rtol=0, atol=2e-3)


def test_numerical_gradient_parts_assemble_to_the_whole():
    rng = np.random.default_rng(10)
    spec = MLPSpec(_net_params(rng, [12, 5, 4], np.float64), 2, activations.SIGMOID, 0.1)
    x, t = rng.random((6, 12)), rng.integers(0, 4, 6)
    whole = NB.mlp_numerical_gradient(spec, x, t)
    for name in spec.names():
        size = spec.params[name].size
        parts = [NB.mlp_numerical_gradient_part(spec, x, t, name, a, min(a + 7, size))
                 for a in range(0, size, 7)]
        assert same(np.concatenate(parts).reshape(whole[name].shape), whole[name])


def test_compiled_f_gets_the_compiled_loop_with_the_books_results():
    from fastnet.backend.numba import generic

    @numba.njit
    def f(x):
        return np.sum(x**2) + x[0] * x[-1]

    for dtype in FLOATS:
        x = np.array([3.0, 4.0, -1.5, 0.25], dtype=dtype)
        with fastnet.use_backend("numba"):
            mine = fastnet.numerical_gradient(f, x)
        with fastnet.use_backend("numpy"):
            ref = fastnet.numerical_gradient(f, x)
        assert same(mine, ref)
        assert same(x, np.array([3.0, 4.0, -1.5, 0.25], dtype=dtype))  # restored
    assert generic.is_compiled(f) and not generic.is_compiled(lambda x: 0.0)
    assert generic.compiled_gradient(f, np.ones(3), 1e-4) is not None


def test_other_callables_get_the_plain_loop():
    calls = []

    def f(x):
        calls.append(1)
        return float(np.sum(x**2))

    @numba.njit
    def returns_array(x):
        return x * 2.0

    from fastnet.backend.numba import generic

    x = np.array([1.0, 2.0])
    with fastnet.use_backend("numba"):
        mine = fastnet.numerical_gradient(f, x)
    assert len(calls) == 4  # the book's loop: two calls per element, from Python
    with fastnet.use_backend("numpy"):
        assert same(mine, fastnet.numerical_gradient(f, x))
    assert generic.compiled_gradient(returns_array, x.copy(), 1e-4) is None
