"""The ``fastnet`` command: each subcommand, and every bad input ends in one line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

import fastnet
from fastnet.cli import main

REAL_MNIST = os.environ.get("FASTNET_DATA", "")  # read before the fixture below hides it


pytestmark = pytest.mark.usefixtures("cli_env")  # by default no MNIST, no network (conftest)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err):
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "error:" in lines[0] and "--help" in lines[1], err


def test_train_spiral_save_and_plot(capsys, tmp_path):
    model, png = tmp_path / "m.npz", tmp_path / "curves.png"
    code, out, err = run(capsys, "train", "--epochs", "3", "--seed", "0", "--save", str(model),
                         "--plot", str(png), "--no-progress")
    assert code == 0, err
    assert out.splitlines()[0].startswith("dataset: spiral (MNIST is not in")  # one line saying why
    assert "epoch 3/3" in out and "test acc" in out
    net = fastnet.load_net(model)
    assert net.input_size == 2 and net.output_size == 3
    if png.exists() or "saved plot" in out:
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_train_multi_with_options(capsys):
    code, out, err = run(capsys, "train", "--dataset", "spiral", "--net", "multi", "--hidden", "16,16",
                         "--optimizer", "adam", "--lr", "0.01", "--epochs", "2", "--batchnorm",
                         "--dropout", "0.1", "--weight-decay", "0.001", "--dtype", "float32",
                         "--backend", "numpy", "--sampling", "replacement", "--seed", "3")
    assert code == 0, err
    assert "MultiLayerNet(2-16-16-3" in out and "float32" in out and "seed 3" in out


def test_same_seed_same_result(capsys):
    args = ("train", "--dataset", "spiral", "--epochs", "5", "--seed", "7", "--no-progress")
    first = run(capsys, *args)[1].splitlines()
    second = run(capsys, *args)[1].splitlines()
    strip = [line.split(" (")[0] for line in first if line.startswith("epoch")]
    assert strip == [line.split(" (")[0] for line in second if line.startswith("epoch")]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--epochs", "0"], "--epochs: expected a positive integer"),
        (["train", "--lr", "-1"], "--lr: expected a positive number"),
        (["train", "--hidden", "10,x"], "--hidden"),
        (["train", "--backend", "tpu"], "--backend: invalid choice"),
        (["train", "--dropout", "1.5"], "--dropout"),
        (["train", "--no-such-option"], "unrecognized arguments"),
        (["nope"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert_one_line_error(err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--dataset", "mnist"], "train-images-idx3-ubyte.gz"),
        (["train", "--save", "/no/such/folder/m.npz"], "does not exist"),
        (["train", "--lr", "1e300", "--optimizer", "sgd", "--epochs", "3", "--seed", "0"], "training stopped"),
    ],
)
def test_runtime_errors_exit_1_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert message in err


@pytest.mark.parametrize("argv, message", [
    (["train", "--hidden", "5,5", "--epochs", "1"], "--net multi"),
    (["train", "--batchnorm", "--epochs", "1"], "--batchnorm needs --net multi"),
])
def test_option_mixes_exit_2_as_bad_arguments(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_conv_net_without_mnist_says_it_needs_mnist(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FASTNET_OFFLINE", "1")
    monkeypatch.setenv("FASTNET_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, out, err = run(capsys, "train", "--net", "simple-conv", "--epochs", "1")
    assert code == 1 and "--net simple-conv needs MNIST images" in err and "--weight-init" not in err
    assert_one_line_error(err)


def test_unavailable_backend_is_one_line(capsys):
    if fastnet.available_backends()["cupy"].available:
        pytest.skip("cupy works here")
    code, out, err = run(capsys, "train", "--backend", "cupy")
    assert code == 1 and "backend 'cupy' is not available" in err
    assert_one_line_error(err)


def test_debug_shows_the_traceback(capsys):
    code, out, err = run(capsys, "train", "--dataset", "mnist", "--debug")
    assert code == 1 and "Traceback" in err


def test_gradcheck_random(capsys):
    code, out, err = run(capsys, "gradcheck", "--hidden", "4", "--samples", "2", "--seed", "0")
    assert code == 0, err
    assert "random" in out and "passed" in out
    for key in ("W1", "b1", "W2", "b2"):
        assert any(line.startswith(key) and line.endswith("ok") for line in out.splitlines())


def test_gradcheck_multi_batchnorm(capsys):
    code, out, err = run(capsys, "gradcheck", "--net", "multi", "--hidden", "4,3", "--batchnorm",
                         "--activation", "sigmoid", "--samples", "4", "--seed", "1")
    assert code == 0, err
    assert "gamma2" in out and "passed" in out


def test_gradcheck_failure_exits_1(capsys):
    code, out, err = run(capsys, "gradcheck", "--hidden", "4", "--samples", "2", "--tol", "1e-30", "--seed", "0")
    assert code == 1 and "FAILED" in out


def test_info(capsys):
    code, out, err = run(capsys, "info")
    assert code == 0
    assert f"fastnet {fastnet.__version__}" in out
    for name in ("numpy", "numba", "cupy"):
        assert f"  {name}" in out
    assert "CPU:" in out and "threads:" in out


def test_bench_delegates(capsys, monkeypatch):
    from fastnet import cli

    seen = []
    fake = types.SimpleNamespace(make_parser=_small_parser, main=lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr(cli, "load_benchmarks", lambda folder: fake)
    assert main(["bench", "--quick", "-k", "step"]) == 0
    assert seen == [["--quick", "-k", "step"]]


def _small_parser():
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("-k")
    return p


def test_bench_finds_the_suites_beside_the_package():
    from fastnet import cli

    folder = cli.find_benchmarks()
    assert folder is not None and (folder / "bench_step.py").is_file()
    assert cli.load_benchmarks(folder).find_suites() == folder


def test_bench_outside_a_clone_says_what_to_do(capsys, monkeypatch):
    from fastnet import cli

    monkeypatch.setattr(cli, "find_benchmarks", lambda: None)
    code, out, err = run(capsys, "bench")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err
    assert "clone" in lines[0] and "fastnet bench" in lines[0]


def test_no_command_prints_help(capsys):
    code, out, err = run(capsys)
    assert code == 2 and "train" in out


@pytest.mark.mnist
def test_train_mnist(capsys, monkeypatch, tmp_path):
    if not fastnet.datasets.mnist_available(REAL_MNIST or "/nonexistent"):
        pytest.skip("real MNIST not found: set FASTNET_DATA to a folder with the IDX .gz files")
    monkeypatch.setenv("FASTNET_DATA", REAL_MNIST)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "mnist-cache"))
    code, out, err = run(capsys, "train", "--train-size", "3000", "--epochs", "1", "--seed", "0")
    assert code == 0, err
    assert out.startswith("dataset: MNIST") and "784-50-10" in out


def test_python_dash_m_and_no_traceback(tmp_path):
    env = {**os.environ, "FASTNET_OFFLINE": "1", "FASTNET_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "fastnet", "--version"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == f"fastnet {fastnet.__version__}"
    done = subprocess.run([sys.executable, "-m", "fastnet", "train", "--dataset", "mnist"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "error:" in done.stderr


def test_option_mixes_are_refused_before_loading_data(capsys):
    code, out, err = run(capsys, "train", "--hidden", "5,5")
    assert code == 2 and out == "" and "use --net multi" in err


def test_spiral_fallback_repeats_without_a_seed(capsys):
    args = ("train", "--dataset", "spiral", "--epochs", "5", "--no-progress", "--backend", "numpy")
    first, second = run(capsys, *args)[1], run(capsys, *args)[1]
    assert "seed 0" in first
    strip = lambda out: [line.split(" (")[0] for line in out.splitlines() if line.startswith(("epoch", "done"))]  # noqa: E731
    assert strip(first) == strip(second)


def test_collapse_warns_and_exits_1(capsys):
    code, out, err = run(capsys, "train", "--dataset", "spiral", "--lr", "50", "--epochs", "30",
                         "--seed", "0", "--no-progress", "--backend", "numpy")
    assert code == 1
    assert "training collapsed" in err and "learning rate (50) is probably too high" in err


def test_collapse_in_a_single_epoch_warns_and_exits_1(capsys):
    code, out, err = run(capsys, "train", "--dataset", "spiral", "--lr", "50", "--epochs", "1",
                         "--seed", "0", "--no-progress", "--backend", "numpy")
    assert code == 1
    assert "training collapsed" in err and "uniform guess" in err and "(50) is probably too high" in err
    code, out, err = run(capsys, "train", "--dataset", "spiral", "--epochs", "1", "--seed", "0", "--no-progress",
                         "--backend", "numpy")
    assert code == 0 and "warning" not in err  # the default rate, after one epoch: not yet learning, not blown up


@pytest.mark.skipif(not REAL_MNIST, reason="needs the real MNIST (set FASTNET_DATA)")
def test_mnist_lr_50_one_epoch_is_reported(capsys, monkeypatch):
    monkeypatch.setenv("FASTNET_DATA", REAL_MNIST)
    code, out, err = run(capsys, "train", "--lr", "50", "--epochs", "1", "--train-size", "5000",
                         "--eval-samples", "2000", "--seed", "0", "--no-progress", "--backend", "numpy")
    assert code == 1 and "training collapsed" in err


def _history(loss, acc):
    from types import SimpleNamespace

    return SimpleNamespace(epoch=list(range(1, len(loss) + 1)), train_loss=loss, train_acc=acc)


@pytest.mark.parametrize("loss, acc, final, status", [
    ([10.4], [0.097], 9.7, 1),                # scores blown up within one epoch
    ([2.9], [0.107], 5.7, 0),                 # one epoch, at chance but not saturated: maybe a slow start
    ([2.31], [0.11], 2.30, 0),                # one epoch at log(10)
    ([2.31, 2.31, 2.32], [0.1] * 3, 2.32, 1),  # several epochs, the loss never fell: learned nothing
    ([2.4, 2.2], [0.11, 0.12], 2.2, 0),       # chance accuracy so far, but the loss falls
    ([30.0], [0.9], 12.0, 0),                 # a high loss with real accuracy is not a collapse
])
def test_collapse_rule(capsys, loss, acc, final, status):
    from types import SimpleNamespace

    from fastnet.cli_train import collapsed

    assert collapsed(_history(loss, acc), 10, SimpleNamespace(lr=0.1), final) == status
    assert ("error: training" in capsys.readouterr().err) == bool(status)


def test_backend_defaults_to_auto(capsys, monkeypatch):
    monkeypatch.delenv("FASTNET_BACKEND", raising=False)
    code, out, err = run(capsys, "train", "--dataset", "spiral", "--epochs", "1", "--seed", "0", "--no-progress")
    assert code == 0, err
    expected = "cupy" if fastnet.available_backends()["cupy"].available else "numba"
    assert f"backend='{expected}'" in out
    assert ("numba compiles its kernels on first use" in out) == (expected == "numba")


def test_offline_mnist_message_speaks_cli(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--dataset", "mnist", "--data-dir", str(tmp_path))
    assert code == 1
    assert "download=False" not in err
    assert "FASTNET_OFFLINE is set" in err and "FASTNET_DATA or --data-dir" in err


def test_gradcheck_prints_its_seed(capsys):
    code, out, err = run(capsys, "gradcheck", "--dataset", "random", "--hidden", "8", "--seed", "5", "--backend", "numpy")
    assert code == 0, err
    assert "seed 5" in out


@pytest.mark.mnist
def test_gradcheck_relu_kink_is_explained_not_failed(capsys, monkeypatch):
    if not REAL_MNIST:
        pytest.skip("real MNIST not found: set FASTNET_DATA to a folder with the IDX .gz files")
    monkeypatch.setenv("FASTNET_DATA", REAL_MNIST)
    code, out, err = run(capsys, "gradcheck", "--seed", "0", "--samples", "100", "--backend", "numba")
    assert code == 0, out + err
    assert "b1" in out and "ok away from kinks" in out and "kinks:" in out and "FAIL" not in out


@pytest.mark.parametrize("argv, message", [
    (["--net", "simple-conv", "--dataset", "spiral"], "fixed architecture"),
    (["--net", "deep-conv", "--activation", "tanh"], "--activation"),
    (["--net", "simple-conv", "--hidden", "10,10"], "one dense hidden layer"),
])
def test_conv_nets_refuse_options_they_cannot_take(capsys, argv, message):
    code, out, err = run(capsys, "train", *argv)
    assert code == 2, out + err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("net, sleeps, blas, shown", [
    ("simple-conv", False, 2, True),
    ("deep-conv", False, 2, True),
    ("simple-conv", True, 2, False),  # started with the settings
    ("simple-conv", False, 1, False),  # BLAS on one thread: the kernels thread already
    ("two", False, 2, False),  # dense nets: short products pay for waking threads
])
def test_train_tells_how_conv_kernels_get_every_core(capsys, monkeypatch, net, sleeps, blas, shown):
    from fastnet.backend import loops, lookup
    from fastnet.cli_train import thread_tip

    monkeypatch.setattr(loops, "idle_threads_sleep", lambda: sleeps)
    monkeypatch.setattr(loops, "blas_threads", lambda: blas)
    thread_tip(net, lookup("numba"))
    thread_tip(net, lookup("numpy"))
    out = capsys.readouterr().out
    assert out.count("OPENBLAS_THREAD_TIMEOUT=4 OMP_WAIT_POLICY=passive") == int(shown)


@pytest.mark.mnist
def test_train_simple_conv_on_mnist(capsys, monkeypatch, tmp_path):
    if not REAL_MNIST:
        pytest.skip("real MNIST not found: set FASTNET_DATA to a folder with the IDX .gz files")
    monkeypatch.setenv("FASTNET_DATA", REAL_MNIST)
    path = tmp_path / "conv.npz"
    code, out, err = run(capsys, "train", "--net", "simple-conv", "--epochs", "2", "--train-size", "600",
                         "--seed", "0", "--backend", "numba", "--save", str(path))
    assert code == 0, out + err
    assert "SimpleConvNet" in out and "adam (lr 0.001" in out  # the book's ch.7 settings
    net = fastnet.load_net(path)
    assert type(net).__name__ == "SimpleConvNet" and net.params["W1"].shape == (30, 1, 5, 5)


def test_gradcheck_passes_a_conv_net_and_fails_a_wrong_backprop(capsys, monkeypatch):
    """Kinks within h=1e-4 are told apart by h=1e-7; a gradient 5 % off in one array fails."""
    argv = ("gradcheck", "--net", "simple-conv", "--dataset", "random", "--samples", "2", "--seed", "0",
            "--backend", "numba")
    code, out, err = run(capsys, *argv)
    assert code == 0 and "passed" in out and "FAIL" not in out, out + err
    assert "biases are drawn" in out and "y_t / (y_t + 1e-7)" in out
    right = fastnet.netbase.Net.gradient

    def wrong(self, x, t):
        grads = right(self, x, t)
        return {**grads, "W2": grads["W2"] * 1.05}

    monkeypatch.setattr(fastnet.netbase.Net, "gradient", wrong)
    code, out, err = run(capsys, *argv)
    assert code == 1 and "FAILED: mean |diff| above 1e-06 for W2" in out, out + err
    assert any(line.startswith("W1") and "ok" in line for line in out.splitlines())


def test_gradcheck_turns_dropout_off():
    """Backprop draws dropout masks, the numerical gradient takes the test-mode loss: with ratio 0
    both differentiate one function."""
    from fastnet.cli_gradcheck import dropout_off

    net = fastnet.DeepConvNet(seed=0, backend="numpy")
    assert dropout_off(net) and all(net.layers[k].dropout_ratio == 0.0 for k in ("Dropout1", "Dropout2"))
    assert not dropout_off(net) and not dropout_off(fastnet.SimpleConvNet(seed=0, backend="numpy"))


def test_gradcheck_checks_the_whole_batch_backprop(capsys, monkeypatch):
    """A backprop that forgets to divide by the batch size is wrong only along the batch: the
    check compares the net's own batch gradient, so it fails."""
    from fastnet.backend import NumpyBackend

    argv = ("gradcheck", "--backend", "numpy", "--hidden", "4", "--samples", "3", "--dataset", "random",
            "--seed", "1")
    code, out, err = run(capsys, *argv)
    assert code == 0, out + err
    right = NumpyBackend.softmax_cross_entropy_backward
    monkeypatch.setattr(NumpyBackend, "softmax_cross_entropy_backward",
                        lambda self, y, t, dout=1: right(self, y, t, dout) * t.shape[0])
    code, out, err = run(capsys, *argv)
    assert code == 1 and "FAILED" in out, out + err


def test_tanh_nets_get_xavier_weights_by_default(capsys):
    code, out, err = run(capsys, "train", "--net", "multi", "--hidden", "8,8", "--activation", "tanh",
                         "--dataset", "spiral", "--epochs", "2", "--no-progress")
    assert code == 0, out + err
    code, out, err = run(capsys, "gradcheck", "--net", "multi", "--hidden", "6,5", "--activation", "tanh",
                         "--dataset", "random", "--samples", "2", "--seed", "3", "--backend", "numpy")
    assert code == 0 and "passed" in out, out + err


def test_gradcheck_refuses_batchnorm_on_one_sample(capsys):
    code, out, err = run(capsys, "gradcheck", "--net", "multi", "--hidden", "4,3", "--batchnorm", "--samples", "1")
    assert code == 2 and "--samples 2 or more" in err


def test_ctrl_c_during_training_says_nothing_was_saved(capsys, tmp_path, monkeypatch):
    from fastnet.train import Trainer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", interrupted)
    target = tmp_path / "net.npz"
    code, out, err = run(capsys, "train", "--dataset", "spiral", "--epochs", "1", "--save", str(target))
    assert code == 130 and "interrupted" in err
    assert f"not saved: {target}" in out and not target.exists()


def test_info_names_both_defaults(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0 and "default backend:" in out and "the commands' --backend default:" in out
