"""Every bad input a learner can give gets a clear error: what was wrong and how to fix it.

Also: full or read-only disks and interrupted downloads leave nothing half-written and a
retry recovers; backend choice never leaks between threads, pool tasks or asyncio tasks.
The CLI has its own file, test_cli_errors.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import hashlib
import io
import json
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hostarrays import host

import fastnet
from fastnet import (
    SGD,
    BackendMismatchError,
    ModelFileError,
    MultiLayerNet,
    Trainer,
    TwoLayerNet,
    load_net,
    load_params,
    save_params,
)
from fastnet import functions as F
from fastnet import layers as L
from fastnet.backend import NumpyBackend
from fastnet.datasets import MNIST_FILES, load_idx_dataset, write_idx
from fastnet.datasets import fileio as file_helpers
from fastnet.datasets import mnist as mnist_mod
from fastnet.datasets.idx import encode_idx
from fastnet.errors import DatasetError, DownloadError
from fastnet.gradient import gradient_descent, numerical_gradient
from fastnet.io import HEADER_KEY


class FakeCupyArray:
    """Looks like a CuPy array to the type checks, without needing CuPy."""


FakeCupyArray.__module__ = "cupy._core.core"

ROWS = np.full((2, 3), 1 / 3)  # probabilities of 2 samples over 3 classes


# ------------------------------------------------------------------ functions


@pytest.mark.parametrize("name", ["step_function", "sigmoid", "sigmoid_grad", "relu", "relu_grad", "softmax"])
@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([None, 1.0], dtype=object)])
def test_functions_refuse_non_numbers(name, bad):
    with pytest.raises(TypeError, match=r"x must hold real numbers, got dtype"):
        getattr(F, name)(bad)


@pytest.mark.parametrize(
    "y, t, error, message",
    [
        (ROWS, np.array([0, 3]), ValueError, r"labels from 0 to 3, but there are 3 classes.*0\.\.2"),
        (ROWS, np.array([-1, 0]), ValueError, "labels from -1 to 0"),
        (ROWS, np.array([[0.5, 0.5, 0], [1, 0, 0]]), ValueError, r"row 0 of one-hot t is not one-hot"),
        (ROWS, np.array([[0, 0, 0], [1, 0, 0]]), ValueError, "row 0 of one-hot t"),
        (ROWS, np.array([1, 2, 0]), ValueError, r"expected .* or 2 class indices \(2,\), got 3 class indices but y has 2 rows"),
        (ROWS, np.array([1.0, 2.0]), TypeError, "must be integers"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), ValueError, "empty batch"),
        (np.zeros((2, 3, 1)), np.zeros(2, dtype=int), ValueError, r"got shape \(2, 3, 1\)"),
        (np.array([["a"]]), np.zeros(1, dtype=int), TypeError, "y must hold real numbers"),
        (np.array([0.1, 0.9]), np.array([0, 1, 0]), ValueError, r"expected one-hot \(2,\) or one class index, got shape \(3,\)"),
        (np.array([0.1, 0.9]), np.array([0, 2]), ValueError, "row 0 of one-hot t"),
        (np.array([0.1, 0.9]), np.array([2]), ValueError, "labels from 2 to 2"),
    ],
)
def test_cross_entropy_bad_targets(y, t, error, message):
    with pytest.raises(error, match=message):
        F.cross_entropy_error(y, t)


def test_cross_entropy_book_single_sample_still_works():
    y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    t = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])  # the book's ch.4 example: int one-hot
    assert float(F.cross_entropy_error(y, t)) == pytest.approx(0.510825457099338)


def test_functions_refuse_other_backends_arrays(cpu_backend):
    with pytest.raises(BackendMismatchError, match=r"fastnet.to_numpy\(x\)"):
        F.relu(FakeCupyArray())
    with pytest.raises(BackendMismatchError, match="y is a CuPy"):
        F.cross_entropy_error(FakeCupyArray(), np.zeros(1, dtype=int))


def test_numerical_gradient_and_descent_arguments():
    with pytest.raises(TypeError, match="f must be a function"):
        numerical_gradient(3, np.array([1.0]))
    with pytest.raises(ValueError, match=r"f must return a single number.*shape \(2,\)"):
        numerical_gradient(lambda x: x * 2, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="h must be a positive number"):
        numerical_gradient(lambda x: (x**2).sum(), np.array([1.0]), h=0)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        gradient_descent(lambda x: (x**2).sum(), np.array([1.0]), lr="0.1")
    with pytest.raises(ValueError, match="lr must be a positive number"):
        gradient_descent(lambda x: (x**2).sum(), np.array([1.0]), lr=-0.1)


# -------------------------------------------------------------------- layers


def affine():
    return L.Affine(np.ones((3, 2)), np.zeros(2))


@pytest.mark.parametrize(
    "make, args",
    [
        (L.Relu, (np.ones((2, 3)),)),
        (L.Sigmoid, (np.ones((2, 3)),)),
        (affine, (np.ones((4, 2)),)),
        (L.SoftmaxWithLoss, ()),
        (L.Dropout, (np.ones((2, 3)),)),
        (lambda: L.BatchNormalization(np.ones(3), np.zeros(3)), (np.ones((2, 3)),)),
    ],
)
def test_backward_before_forward(make, args):
    layer = make()
    with pytest.raises(RuntimeError, match=f"{type(layer).__name__}.backward was called before forward"):
        layer.backward(*args)


@pytest.mark.parametrize(
    "layer, x, dout, message",
    [
        (L.Relu(), np.ones((2, 3)), np.ones((3, 3)), r"dout \(3, 3\) and the forward output \(2, 3\)"),
        (L.Sigmoid(), np.ones((4, 3)), np.ones((1, 3)), r"dout \(1, 3\) and the forward output \(4, 3\)"),
        (L.Dropout(seed=0), np.ones((2, 3)), np.ones(3), r"dout \(3,\) and the forward output \(2, 3\)"),
        (affine(), np.ones((4, 3)), np.ones((4, 5)), r"dout must have shape \(4, 2\).*got \(4, 5\)"),
        (L.BatchNormalization(np.ones(3), np.zeros(3)), np.ones((2, 3)), np.ones((3, 3)), r"shape \(2, 3\), got \(3, 3\)"),
    ],
)
def test_backward_with_a_wrongly_shaped_dout(layer, x, dout, message):
    layer.forward(x)
    with pytest.raises(ValueError, match=message):
        layer.backward(dout)


def test_affine_arguments():
    with pytest.raises(ValueError, match=r"W must be a matrix.*\(3,\)"):
        L.Affine(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match=r"b must have shape \(2,\) to match W \(3, 2\), got \(5,\)"):
        L.Affine(np.ones((3, 2)), np.ones(5))
    with pytest.raises(TypeError, match="W must be a floating-point array, got dtype int64"):
        L.Affine(np.ones((3, 2), dtype=np.int64), np.zeros(2))
    with pytest.raises(ValueError, match="empty batch"):
        affine().forward(np.ones((0, 3)))
    with pytest.raises(ValueError, match=r"x has 4 features per sample.*W expects 3"):
        affine().forward(np.ones((2, 4)))
    with pytest.raises(TypeError, match="x must hold real numbers"):
        affine().forward(np.array([["1", "2", "3"]]))


@pytest.mark.parametrize(
    "x, t, error, message",
    [
        (np.ones((2, 3)), np.array([0, 3]), ValueError, "labels from 0 to 3"),
        (np.ones((2, 3)), np.array([0, 1, 1]), ValueError, "x has 2 samples but t has 3 labels"),
        (np.ones((2, 3)), np.eye(4)[:2], ValueError, r"one-hot t must have shape \(2, 3\), got \(2, 4\)"),
        (np.ones((2, 3)), np.array([[1, 1, 0], [0, 1, 0]]), ValueError, "row 0 of one-hot t"),
        (np.ones((2, 3)), np.array([0.0, 1.0]), TypeError, r"t.astype\(int\)"),
        (np.ones((2, 3)), np.zeros((2, 3, 1)), ValueError, r"t must hold labels \(2,\) or one-hot rows \(2, 3\)"),
        (np.ones((2, 3)), None, TypeError, "t is missing"),
        (np.ones(3), np.array([0]), ValueError, r"batch of scores \(N, classes\), got shape \(3,\)"),
        (np.ones((0, 3)), np.zeros(0, dtype=int), ValueError, "non-empty batch"),
    ],
)
def test_softmax_with_loss_targets(x, t, error, message):
    with pytest.raises(error, match=message):
        L.SoftmaxWithLoss().forward(x, t)


def test_batchnorm_and_dropout_inputs():
    bn = L.BatchNormalization(np.ones(4), np.zeros(4))
    with pytest.raises(ValueError, match=r"x has 3 features.*gamma and beta have shapes \(4,\)"):
        bn.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-empty batch"):
        bn.forward(np.ones((0, 4)))
    with pytest.raises(BackendMismatchError, match="x is a CuPy"):
        L.Dropout().forward(FakeCupyArray())


# ---------------------------------------------------------------------- nets

NETS = {
    "two": lambda: TwoLayerNet(4, 3, 2, seed=0),
    "multi": lambda: MultiLayerNet(4, [3, 3], 2, seed=0),
    "multi-bn-dropout": lambda: MultiLayerNet(4, [3], 2, use_batchnorm=True, use_dropout=True, seed=0),
}
X = np.ones((2, 4))
T = np.array([0, 1])

BAD_XT = [
    (np.ones((2, 5)), T, ValueError, r"x must have shape \(N, 4\), got \(2, 5\).*input_size=4"),
    (np.ones(4), T, ValueError, r"x must be a batch of shape \(N, 4\), got shape \(4,\).*reshape\(1, -1\)"),
    (np.ones((0, 4)), T[:0], ValueError, r"x is an empty batch \(0 samples"),
    (np.ones((0, 2, 2)), T[:0], ValueError, r"x is an empty batch .*\(0, 2, 2\)"),
    (np.array([["a"] * 4] * 2), T, TypeError, "x must hold real numbers"),
    (X, np.array([0, 1, 1]), ValueError, "x has 2 samples but t has 3 labels"),
    (X, np.array([0.0, 1.0]), TypeError, "class labels t must be integers, got dtype float64"),
    (X, np.array([True, False]), TypeError, "class labels t must be integers, got dtype bool"),
    (X, np.array([0, 2]), ValueError, r"labels from 0 to 2, but there are 2 classes.*0\.\.1"),
    (X, np.array([[1.0, 0.0], [0.5, 0.5]]), ValueError, r"row 1 of one-hot t is not one-hot.*\[0.5, 0.5\]"),
    (X, np.array([[np.nan, 1.0], [1.0, 0.0]]), ValueError, "row 0 of one-hot t is not one-hot"),
    (X, np.eye(3)[:2], ValueError, r"one-hot t must have shape \(2, 2\), got \(2, 3\)"),
    (X, np.zeros((2, 2, 1)), ValueError, r"t must hold labels \(2,\) or one-hot rows \(2, 2\)"),
    (X, None, TypeError, "t is missing"),
    (FakeCupyArray(), T, BackendMismatchError, r"x is a CuPy .* fastnet.to_numpy\(x\)"),
    (X, FakeCupyArray(), BackendMismatchError, r"t is a CuPy"),
]


@pytest.mark.parametrize("kind", NETS)
@pytest.mark.parametrize("x, t, error, message", BAD_XT)
def test_nets_refuse_bad_batches(kind, x, t, error, message):
    net = NETS[kind]()
    before = {k: host(v).copy() for k, v in net.params.items()}
    for call in (net.loss, net.gradient, net.accuracy, lambda x, t: net.train_step(x, t, SGD(0.1))):
        with pytest.raises(error, match=message):
            call(x, t)
    for k, v in net.params.items():  # nothing was half-done
        np.testing.assert_array_equal(host(v), before[k])


@pytest.mark.parametrize("x, t, error, message", BAD_XT[:5])
def test_predict_refuses_bad_x(x, t, error, message):
    with pytest.raises(error, match=message):
        TwoLayerNet(4, 3, 2).predict(x)


def test_numerical_gradient_checks_before_the_long_loop():
    net = MultiLayerNet(4, [3], 2, seed=0)
    with pytest.raises(ValueError, match="labels from 0 to 5"):
        net.numerical_gradient(X, np.array([0, 5]))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TwoLayerNet(4, 3, 2, weight_init_std=float("nan")), "weight_init_std"),
        (lambda: TwoLayerNet(4, 3, 2, weight_init_std=-0.1), "weight_init_std"),
        (lambda: TwoLayerNet(4, 3, 2, seed="abc"), "seed must be an integer >= 0"),
        (lambda: TwoLayerNet(4, 3, 2, seed=-1), "seed must be an integer >= 0"),
        (lambda: TwoLayerNet(4, 0, 2), "hidden_size must be a positive integer"),
        (lambda: MultiLayerNet(4, 3, 2), "hidden_size_list must be a list"),
        (lambda: MultiLayerNet(4, [3], 2, weight_init_std="big"), "weight_init_std"),
    ],
)
def test_net_constructor_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_float_dtype_and_backend_name_are_required():
    with pytest.raises(TypeError, match="TwoLayerNet is a number.*MultiLayerNet takes 'relu'"):
        TwoLayerNet(4, 3, 2, weight_init_std="relu")
    with pytest.raises(TypeError, match="dtype must be a floating-point type, got int64"):
        TwoLayerNet(4, 3, 2, dtype=np.int64)
    with pytest.raises(ValueError, match="unknown backend name 'gpu'"):
        TwoLayerNet(4, 3, 2, backend="gpu")


class OtherDeviceBackend(NumpyBackend):
    """A backend whose arrays live in another module, standing in for a GPU."""

    name = "other"

    def __init__(self) -> None:
        super().__init__()
        self.xp = types.SimpleNamespace(name="another array module")


def test_optimizer_bound_to_another_device_is_refused():
    opt = SGD(0.1)
    opt.backend = OtherDeviceBackend()
    net = TwoLayerNet(4, 3, 2, seed=0)
    with pytest.raises(BackendMismatchError, match="optimizer keeps its state on backend 'other'"):
        net.train_step(X, T, opt)
    with pytest.raises(BackendMismatchError, match="create a new optimizer"):
        Trainer(net, X, T, optimizer=opt, progress=False)
    with pytest.raises(TypeError, match="must be a fastnet Optimizer"):
        net.train_step(X, T, "sgd")


# ---------------------------------------------------------------- optimizers


@pytest.mark.parametrize(
    "params, grads, error, message",
    [
        ({"W": np.ones((2, 3))}, {"W": np.ones((1, 3))}, ValueError,
         r"grads\['W'\] has shape \(1, 3\) but params\['W'\] has shape \(2, 3\)"),
        ({"W": np.ones((2, 3))}, {"W": np.ones((3, 2))}, ValueError, r"grads\['W'\] has shape \(3, 2\)"),
        ({"W": np.ones(3, dtype=int)}, {"W": np.ones(3)}, TypeError, r"params\['W'\] must be floating point"),
        ({"W": [1.0, 2.0]}, {"W": np.ones(2)}, TypeError, r"params\['W'\] must be an array \(updated in place\) or a number"),
        ([np.ones(3)], [np.ones(3)], TypeError, "params and grads must be dicts"),
        ({"W": np.ones(3)}, {}, KeyError, "no entry for parameter"),
        ({"W": np.ones(3)}, {"W": FakeCupyArray()}, BackendMismatchError, r"grads\['W'\] is a CuPy"),
    ],
)
def test_update_refuses_mismatched_params_and_grads(params, grads, error, message):
    for opt in (SGD(0.1), fastnet.Adam()):
        with pytest.raises(error, match=message):
            opt.update(params, grads)
    if isinstance(params, dict) and isinstance(params.get("W"), np.ndarray):
        assert params["W"].tolist() == np.ones(params["W"].shape).tolist()  # untouched


def test_adam_step_count_unchanged_by_a_refused_update():
    opt = fastnet.Adam()
    with pytest.raises(ValueError):
        opt.update({"W": np.ones(2)}, {"W": np.ones(3)})
    assert opt.iter == 0


# ------------------------------------------------------------------- trainer


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((X[:0], T[:0]), {}, ValueError, "x_train is an empty batch"),
        ((np.ones((2, 5)), T), {}, ValueError, r"x_train must have shape \(N, 4\), got \(2, 5\)"),
        ((np.array([["a"] * 4] * 2), T), {}, TypeError, "x_train must be an array of numbers"),
        ((X, None), {}, TypeError, "t_train is missing"),
        ((None, T), {}, TypeError, "x_train is missing"),
        ((X, np.array([0, 5])), {}, ValueError, "t_train holds class labels from 0 to 5"),
        ((X, np.array([0.0, 1.0])), {}, TypeError, "t_train must hold integer class labels"),
        ((X, T, X, np.array([0])), {}, ValueError, "x_test has 2 samples but t_test has 1 labels"),
        ((X, T, np.ones((2, 3)), T), {}, ValueError, r"x_test must have shape \(N, 4\)"),
        ((np.where(np.eye(2, 4) > 0, np.nan, 1.0), T), {}, ValueError, "x_train holds 2 NaN or infinite"),
        ((X, T, np.full((2, 4), np.inf), T), {}, ValueError, "x_test holds 8 NaN or infinite.*check_finite=False"),
        ((X, T), {"mini_batch_size": 0}, ValueError, "mini_batch_size must be a positive integer"),
        ((X, T), {"sampling": "random"}, ValueError, "sampling must be one of"),
    ],
)
def test_trainer_checks_the_data_once_when_it_arrives(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        Trainer(TwoLayerNet(4, 3, 2, seed=0), *args, progress=False, **kwargs)


def test_trainer_finite_check_can_be_turned_off():
    x = np.ones((4, 4))
    x[0, 0] = np.nan
    trainer = Trainer(TwoLayerNet(4, 3, 2, seed=0), x, np.array([0, 1, 0, 1]), epochs=1,
                      check_finite=False, progress=False)
    trainer.train()  # runs; the NaN spreads into the loss, as asked
    assert np.isnan(trainer.history.train_loss[-1])


# ------------------------------------------------------------------ io files


def test_save_to_a_folder_or_unwritable_folder(tmp_path, monkeypatch):
    net = TwoLayerNet(4, 3, 2, seed=0)
    with pytest.raises(IsADirectoryError, match="is a folder; give a file name"):
        save_params(tmp_path, net)

    def refused(**kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("fastnet.io.tempfile.mkstemp", refused)  # root ignores chmod, so simulate it
    with pytest.raises(PermissionError, match=f"cannot save to {tmp_path / 'n.npz'}: folder .* is not writable"):
        save_params(tmp_path / "n.npz", net)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_saving_keeps_the_old_file_and_a_retry_works(tmp_path, monkeypatch):
    import fastnet.io as fio

    path = save_params(tmp_path / "net.npz", TwoLayerNet(4, 3, 2, seed=1))
    before = path.read_bytes()
    real_savez = fio.numpy.savez

    def full_disk(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fio.numpy, "savez", full_disk)
    newer = TwoLayerNet(4, 3, 2, seed=2)
    with pytest.raises(OSError, match=r"cannot save to .*net.npz: No space left on device; nothing was written") as info:
        save_params(path, newer)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["net.npz"]

    monkeypatch.setattr(fio.numpy, "savez", real_savez)
    save_params(path, newer)  # space is back: the retry replaces the file
    np.testing.assert_array_equal(load_net(path).params["W1"], newer.params["W1"])


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, -1])
def test_truncated_anywhere(tmp_path, keep):
    path = save_params(tmp_path / "net.npz", MultiLayerNet(4, [3], 2, use_batchnorm=True, seed=0))
    raw = path.read_bytes()
    cut = int(len(raw) * keep) if isinstance(keep, float) else keep % len(raw)
    path.write_bytes(raw[:cut])
    with pytest.raises(ModelFileError, match=str(path.name)):
        load_net(path)


def tamper(path: Path, edit) -> None:
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(str(arrays[HEADER_KEY][()]))
    edit(header, arrays)
    arrays[HEADER_KEY] = np.array(json.dumps(header)) if isinstance(header, dict) else header
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h, a: h["arrays"]["W1"].pop("shape"), "malformed header"),
        (lambda h, a: h.update(arrays=[1, 2]), "malformed header|inconsistent"),
        (lambda h, a: h["config"].update(hidden_size=7), r"config needs W1 of shape \[4, 7\] but the file holds \[4, 3\]"),
        (lambda h, a: h["config"].update(activation="swish"), "cannot rebuild TwoLayerNet"),
        (lambda h, a: h.pop("config"), "cannot rebuild TwoLayerNet"),
        (lambda h, a: h.update({"class": ["TwoLayerNet"]}), "unknown net class"),
        (lambda h, a: h.update(version=99), "format version 99"),
    ],
)
def test_tampered_headers(tmp_path, edit, message):
    path = save_params(tmp_path / "two.npz", TwoLayerNet(4, 3, 2, seed=0))
    tamper(path, edit)
    with pytest.raises(ModelFileError, match=message):
        load_net(path)


def test_header_that_is_not_a_dict(tmp_path):
    path = tmp_path / "odd.npz"
    np.savez(path, W1=np.ones(2), **{HEADER_KEY: np.array("[1, 2]")})
    with pytest.raises(ModelFileError, match="not a fastnet parameter file .*'list'"):
        load_net(path)


def test_pickled_header_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{HEADER_KEY: np.array([{"format": "fastnet-params"}], dtype=object)})
    with pytest.raises(ModelFileError, match="pickled Python objects"):
        load_net(path)


def test_other_architectures_are_refused(tmp_path):
    path = save_params(tmp_path / "multi.npz", MultiLayerNet(4, [3, 3], 2, seed=0))
    for other in (MultiLayerNet(4, [3], 2), MultiLayerNet(4, [3, 3], 2, use_batchnorm=True),
                  MultiLayerNet(4, [3, 3], 2, activation="sigmoid"), TwoLayerNet(4, 3, 2)):
        with pytest.raises(ModelFileError, match=r"different architecture: saved MultiLayerNet\(input_size=4"):
            load_params(path, other)


def test_load_arguments_are_blamed_not_the_file(tmp_path):
    path = save_params(tmp_path / "two.npz", TwoLayerNet(4, 3, 2, seed=0))
    with pytest.raises(TypeError, match="dtype must be a floating-point type"):
        load_net(path, dtype=np.int32)
    with pytest.raises(ValueError, match="unknown backend name 'tpu'"):
        load_net(path, backend="tpu")
    with pytest.raises(TypeError, match="net must be a fastnet net"):
        load_params(path, {"W1": np.ones(2)})
    with pytest.raises(IsADirectoryError, match="is a folder, not a saved parameters file"):
        load_net(tmp_path)
    with pytest.raises(FileNotFoundError, match="the file does not exist"):
        load_net(tmp_path / "absent.npz")


# ------------------------------------------------------------------ datasets

N = 6  # samples per split: tiny, the loader does not care


def tiny_set(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_img": rng.integers(0, 256, (N, 28, 28), dtype=np.uint8),
        "train_label": rng.integers(0, 10, N, dtype=np.uint8),
        "test_img": rng.integers(0, 256, (N, 28, 28), dtype=np.uint8),
        "test_label": rng.integers(0, 10, N, dtype=np.uint8),
    }


def checksums(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    return {MNIST_FILES[k]: hashlib.sha256(encode_idx(a)).hexdigest() for k, a in arrays.items()}


def served(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {MNIST_FILES[k]: gzip.compress(encode_idx(a), mtime=0) for k, a in arrays.items()}


class Response(io.BytesIO):
    def __init__(self, body: bytes, length: int | None = None) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body) if length is None else length)}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".part", ".tmp")))


@pytest.fixture
def no_home(tmp_path, monkeypatch) -> Path:
    """Keep the loader away from the real cache, FASTNET_DATA and the network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FASTNET_DATA", raising=False)
    monkeypatch.delenv("FASTNET_OFFLINE", raising=False)
    monkeypatch.setattr(mnist_mod, "urlopen", lambda url, timeout: pytest.fail(f"network: {url}"))
    return tmp_path / "xdg"


class FullDisk:
    """A file whose writes fail with ENOSPC after `room` bytes, like a full disk."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room
        self.name = f.name

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.f.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name: str):
        return getattr(self.f, name)


REAL_ATOMIC_WRITER = file_helpers.atomic_writer


def full_disk_writer(room: int):
    @contextlib.contextmanager
    def writer(path: Path):
        with REAL_ATOMIC_WRITER(path) as f:
            yield FullDisk(f, room)

    return writer


def test_full_disk_while_downloading_stops_at_once_and_a_retry_recovers(tmp_path, no_home, monkeypatch):
    arrays = tiny_set(1)
    files = served(arrays)
    calls: list[str] = []

    def opener(url: str, timeout: float) -> Response:
        calls.append(url)
        return Response(files[url.rsplit("/", 1)[1]])

    data = tmp_path / "data"
    monkeypatch.setattr(file_helpers, "atomic_writer", full_disk_writer(room=100))
    with pytest.raises(DownloadError, match=r"no space left in .*data.*Free some space") as info:
        load_idx_dataset(data, checksums=checksums(arrays), download=True,
                         mirrors=["http://a/", "http://b/"], opener=opener)
    assert isinstance(info.value, OSError)
    assert len(calls) == 1  # another mirror cannot help a full disk
    assert list(data.iterdir()) == []  # no partial file, no final file

    monkeypatch.setattr(file_helpers, "atomic_writer", full_disk_writer(room=10**9))  # space freed
    (_, t), _ = load_idx_dataset(data, checksums=checksums(arrays), download=True,
                                 mirrors=["http://a/", "http://b/"], opener=opener)
    np.testing.assert_array_equal(t, arrays["train_label"])
    assert leftovers(data) == []


def test_full_disk_while_caching_still_loads(tmp_path, no_home, monkeypatch):
    arrays = tiny_set(2)
    data = tmp_path / "data"
    data.mkdir()
    for key, a in arrays.items():
        write_idx(data / MNIST_FILES[key], a)
    monkeypatch.setattr(file_helpers, "atomic_writer", full_disk_writer(room=50))
    (_, t), _ = load_idx_dataset(data, checksums=checksums(arrays))  # the cache is only an optimisation
    np.testing.assert_array_equal(t, arrays["train_label"])
    assert not (data / "mnist-cache.npz").exists() and leftovers(data) == []


def test_interrupted_download_leaves_nothing_and_a_retry_recovers(tmp_path, no_home):
    arrays = tiny_set(3)
    files = served(arrays)
    cut = {"on": True}

    def opener(url: str, timeout: float) -> Response:
        body = files[url.rsplit("/", 1)[1]]
        if cut["on"] and "train-images" in url:
            return Response(body[: len(body) // 3], length=len(body))  # the connection drops
        return Response(body)

    data = tmp_path / "data"
    with pytest.raises(DownloadError, match=r"train-images-idx3-ubyte.gz.*interrupted: got \d+ of \d+ bytes"):
        load_idx_dataset(data, checksums=checksums(arrays), download=True, mirrors=["http://m/"], opener=opener)
    assert leftovers(data) == [] and not (data / MNIST_FILES["train_img"]).exists()
    cut["on"] = False
    (x, _), _ = load_idx_dataset(data, checksums=checksums(arrays), download=True, mirrors=["http://m/"],
                                 opener=opener, normalize=False)
    np.testing.assert_array_equal(x.reshape(N, 28, 28), arrays["train_img"])


def test_nothing_writable_and_files_missing(tmp_path, no_home):
    data = tmp_path / "ro"
    data.mkdir()
    no_home.mkdir()
    data.chmod(0o555)
    no_home.chmod(0o555)  # fastnet honours the mode bits even for root
    try:
        with pytest.raises(DatasetError, match="None of these directories is writable") as info:
            load_idx_dataset(data, download=True, mirrors=["http://m/"])
        assert str(data) in str(info.value) and "FASTNET_DATA" in str(info.value)
    finally:
        data.chmod(0o755)
        no_home.chmod(0o755)


def test_data_dir_that_is_a_file(tmp_path, no_home):
    path = tmp_path / "mnist.gz"
    path.write_bytes(b"x")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        load_idx_dataset(path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: gzip.compress(b"\x01\x02" + raw[2:]), "bad IDX magic"),
        (lambda raw: gzip.compress(raw)[:-12], "corrupt or truncated gzip"),
        (lambda raw: gzip.compress(raw[:4] + (9).to_bytes(4, "big") + raw[8:]), r"need 9 payload bytes|truncated|trailing"),
    ],
)
def test_broken_files_through_the_loader_name_the_file_and_cache_nothing(tmp_path, no_home, damage, message):
    arrays = tiny_set(4)
    data = tmp_path / "data"
    data.mkdir()
    for key, a in arrays.items():
        write_idx(data / MNIST_FILES[key], a)
    name = MNIST_FILES["test_label"]
    (data / name).write_bytes(damage(encode_idx(arrays["test_label"])))
    with pytest.raises(DatasetError, match=message) as info:
        load_idx_dataset(data, checksums=None)
    assert name in str(info.value)
    assert not (data / "mnist-cache.npz").exists()


# --------------------------------------------------------------- concurrency


def available(name: str) -> None:
    status = fastnet.available_backends()[name]
    if not status.available:
        pytest.skip(f"backend {name!r} unavailable: {status.reason}")


def small_run(seed: int) -> tuple[str, str, np.ndarray]:
    """Build and train a net on the backend in effect; report what it saw."""
    rng = np.random.default_rng(seed)
    x, t = rng.standard_normal((20, 4)), rng.integers(0, 3, 20)
    net = TwoLayerNet(4, 5, 3, seed=seed, dtype=np.float64)
    opt = SGD(0.1)
    for _ in range(5):
        net.train_step(x, t, opt)
    return net.backend.name, opt.backend.name, host(net.params["W1"]).copy()


def test_net_built_in_one_thread_while_another_uses_another_backend():
    available("numba")
    expected = {name: None for name in ("numpy", "numba")}
    for name in expected:
        with fastnet.use_backend(name):
            expected[name] = small_run(1)
    default = fastnet.get_backend()
    barrier = threading.Barrier(4)
    seen: dict[str, list] = {"numpy": [], "numba": []}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            with fastnet.use_backend(name):
                barrier.wait(timeout=30)
                for _ in range(3):
                    seen[name].append((small_run(1), fastnet.get_backend().name))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("numpy", "numba", "numpy", "numba")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    for name, runs in seen.items():
        assert len(runs) == 6
        for (net_backend, opt_backend, w1), current in runs:
            assert net_backend == opt_backend == current == name
            np.testing.assert_array_equal(w1, expected[name][2])
    assert fastnet.get_backend() is default


def test_thread_pool_tasks_never_see_each_others_backend():
    available("numba")
    default = fastnet.get_backend()

    def task(i: int) -> tuple[bool, str, str, bool]:
        clean = fastnet.get_backend() is default  # no override left by an earlier task on this thread
        name = ("numpy", "numba")[i % 2]
        with fastnet.use_backend(name):
            layer = L.Relu()
            loss = float(TwoLayerNet(3, 2, 2, seed=i).loss(np.ones((1, 3)), np.array([i % 2])))
            return clean, name, layer.backend.name + "/" + fastnet.get_backend().name, np.isfinite(loss)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(task, range(120)))
    for clean, name, seen, finite in results:
        assert clean and seen == f"{name}/{name}" and finite
    assert fastnet.get_backend() is default


def test_set_backend_in_one_thread_does_not_move_scoped_threads():
    available("numba")
    before = fastnet.get_backend()
    inside, go, done = threading.Event(), threading.Event(), []

    def scoped() -> None:
        with fastnet.use_backend("numpy"):
            inside.set()
            go.wait(10)
            done.append(fastnet.get_backend().name)

    th = threading.Thread(target=scoped)
    th.start()
    try:
        inside.wait(10)
        fastnet.set_backend("numba")  # the process-wide default changes meanwhile
        go.set()
        th.join(10)
        assert done == ["numpy"]
    finally:
        fastnet.set_backend(before)


def test_asyncio_tasks_build_nets_on_their_own_backend():
    available("numba")

    async def task(name: str) -> list[str]:
        seen = []
        with fastnet.use_backend(name):
            for i in range(5):
                await asyncio.sleep(0)
                net = TwoLayerNet(3, 2, 2, seed=i)
                seen.append(net.backend.name)
                # asyncio.to_thread copies the task's context, so the override goes along
                seen.append(await asyncio.to_thread(lambda: fastnet.get_backend().name))
        return seen

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(task(n) for n in ("numpy", "numba") * 4))

    for name, seen in zip(("numpy", "numba") * 4, asyncio.run(main())):
        assert set(seen) == {name}


# ------------------------------------------------------------ tune, distributed


@pytest.mark.parametrize(
    "x, t, error, message",
    [
        (np.ones((10, 2)), np.arange(10) - 1, ValueError, "t_train holds class labels from -1"),
        (np.ones((10, 2)), np.ones(10), TypeError, "class labels t_train must be integers"),
        (np.ones((10, 2)), np.zeros(9, dtype=int), ValueError, "x_train has 10 samples but t_train has 9"),
        (np.full((10, 2), np.nan), np.zeros(10, dtype=int), ValueError, "x_train holds 20 NaN"),
        (np.ones(10), np.zeros(10, dtype=int), ValueError, r"x_train must be numbers of shape \(N, features\)"),
        (np.ones((10, 2)), np.ones((10, 3)), ValueError, "row 0 of one-hot t_train is not one-hot"),
    ],
)
def test_random_search_checks_the_data_before_any_cluster(x, t, error, message):
    from fastnet.tune import random_search

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was asked for before the data were checked")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("fastnet.tune.as_client", no_cluster)
        with pytest.raises(error, match=message):
            random_search(x, t, trials=2, epochs=1)
