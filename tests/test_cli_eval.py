"""``fastnet eval``: a saved net's accuracy and loss on MNIST, and one-line errors for what it cannot measure."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import fastnet
from fastnet import cli_common
from fastnet.cli import main

REAL_MNIST = os.environ.get("FASTNET_DATA", "")  # read before the fixture hides it

pytestmark = pytest.mark.usefixtures("cli_env")  # no MNIST, no network (conftest)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def small_mnist(seed=0):
    """Images and labels shaped as load_mnist gives them (normalized, flat, labels)."""
    rng = np.random.default_rng(seed)
    x = rng.random((300, 784), dtype=np.float32)
    t = rng.integers(0, 10, 300).astype(np.uint8)
    return (x[:200], t[:200]), (x[200:], t[200:])


@pytest.fixture
def fake_mnist(monkeypatch):
    data = small_mnist()
    monkeypatch.setattr(cli_common, "load_mnist_or_explain", lambda args, download: data)
    return data


def printed(out, name):
    match = re.search(rf"^{name}: accuracy ([0-9.]+), loss ([0-9.]+) \((\d+) images", out, re.M)
    assert match, out
    return float(match[1]), float(match[2]), int(match[3])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_eval_reports_what_the_net_measures(capsys, tmp_path, fake_mnist, backend):
    if not fastnet.available_backends()[backend].available:
        pytest.skip(f"backend {backend!r} unavailable")
    net = fastnet.TwoLayerNet(784, 20, 10, weight_init_std=0.1, seed=3, backend="numpy")
    path = tmp_path / "net.npz"
    fastnet.save_params(path, net)
    (x, t), (xt, tt) = fake_mnist
    code, out, err = run(capsys, "eval", str(path), "--train", "--backend", backend)
    assert code == 0, err
    assert "TwoLayerNet(784-20-10" in out and f"backend='{backend}'" in out
    for name, images, labels in (("test", xt, tt), ("train", x, t)):
        loss, acc = net.evaluate(images.astype(np.float64), labels)
        assert printed(out, name) == (round(acc, 4), round(loss, 4), len(labels))


def test_eval_samples_and_test_set_only(capsys, tmp_path, fake_mnist):
    path = tmp_path / "net.npz"
    fastnet.save_params(path, fastnet.TwoLayerNet(784, 20, 10, seed=1, backend="numpy"))
    code, out, err = run(capsys, "eval", str(path), "--eval-samples", "30", "--backend", "numpy")
    assert code == 0, err
    assert printed(out, "test")[2] == 30 and "train:" not in out


def assert_one_line_error(code, err, message):
    assert code == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("fastnet eval: error:") and message in lines[0], err


def test_eval_refuses_what_it_cannot_measure(capsys, tmp_path, fake_mnist):
    spiral = tmp_path / "spiral.npz"
    fastnet.save_params(spiral, fastnet.TwoLayerNet(2, 8, 3, seed=0, backend="numpy"))
    wide = tmp_path / "three.npz"
    fastnet.save_params(wide, fastnet.TwoLayerNet(784, 8, 3, seed=0, backend="numpy"))
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    for argv, message in (
        ([str(tmp_path / "missing.npz")], "no such file"),
        ([str(tmp_path)], "is a folder"),
        ([str(spiral)], "2 inputs"),
        ([str(wide)], "3 outputs"),
        ([str(junk)], "not a .npz file"),
    ):
        code, out, err = run(capsys, "eval", *argv, "--backend", "numpy")
        assert_one_line_error(code, err, message)


def test_eval_without_mnist_says_where_it_looked(capsys, tmp_path):
    path = tmp_path / "net.npz"
    fastnet.save_params(path, fastnet.TwoLayerNet(784, 8, 10, seed=0, backend="numpy"))
    code, out, err = run(capsys, "eval", str(path), "--backend", "numpy")
    assert_one_line_error(code, err, "train-images-idx3-ubyte.gz")


@pytest.mark.mnist
def test_train_save_then_eval_on_real_mnist(capsys, monkeypatch, tmp_path):
    if not fastnet.datasets.mnist_available(REAL_MNIST or "/nonexistent"):
        pytest.skip("real MNIST not found: set FASTNET_DATA to a folder with the IDX .gz files")
    monkeypatch.setenv("FASTNET_DATA", REAL_MNIST)
    path = tmp_path / "mnist-net.npz"
    code, out, err = run(capsys, "train", "--train-size", "3000", "--epochs", "1", "--seed", "0",
                         "--backend", "numpy", "--save", str(path))
    assert code == 0, err
    trained = float(re.search(r"test acc ([0-9.]+)", out)[1])
    code, out, err = run(capsys, "eval", str(path), "--backend", "numba")
    assert code == 0, err
    assert printed(out, "test")[0] == trained and printed(out, "test")[2] == 10000
