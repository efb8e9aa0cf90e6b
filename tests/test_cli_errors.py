"""Every bad invocation of every ``fastnet`` subcommand: a non-zero exit, a short message naming
what was wrong, a usage hint, and no traceback (unless --debug asks for one)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fastnet
from fastnet.cli import main


pytestmark = pytest.mark.usefixtures("cli_env")  # no MNIST, no network, no scheduler (conftest)


def check_error(code: int, err: str, names: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) <= 2, err  # the message, then where to find the usage
    assert "error:" in lines[0] and names in lines[0], err
    assert "--help" in lines[-1], err


FILE = "/tmp/fastnet-cli-errors-a-file.txt"

BAD = {
    "train": [
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "two"], "--epochs"),
        (["--epochs"], "--epochs"),
        (["--lr", "-1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--batch-size", "0"], "--batch-size"),
        (["--train-size", "-5"], "--train-size"),
        (["--eval-samples", "x"], "--eval-samples"),
        (["--samples", "0"], "--samples"),
        (["--hidden", "10,x"], "--hidden"),
        (["--hidden", ",,"], "--hidden"),
        (["--hidden", "0"], "--hidden"),
        (["--dropout", "1"], "--dropout"),
        (["--weight-decay", "-1"], "--weight-decay"),
        (["--weight-init", "big"], "--weight-init"),
        (["--seed", "-1"], "--seed"),
        (["--seed", "1.5"], "--seed"),
        (["--backend", "tpu"], "--backend"),
        (["--dtype", "float16"], "--dtype"),
        (["--optimizer", "fast"], "--optimizer"),
        (["--activation", "swish"], "--activation"),
        (["--net", "three"], "--net"),
        (["--sampling", "random"], "--sampling"),
        (["--dataset", "cifar"], "--dataset"),
        (["--momentum", "0.9"], "--momentum"),
        (["stray"], "stray"),
        (["--hidden", "5,5"], "--hidden"),
        (["--batchnorm"], "--batchnorm"),
        (["--dropout", "0.5"], "--dropout"),
        (["--weight-decay", "0.1"], "--weight-decay"),
        (["--save", "/no/such/folder/m.npz"], "--save"),
        (["--save", "/tmp"], "--save"),
        (["--plot", "/no/such/folder/c.png"], "--plot"),
        (["--plot", "/tmp"], "--plot"),
        (["--plot", "curves.npz"], "curves.npz"),
        (["--dataset", "mnist"], "train-images-idx3-ubyte.gz"),
        (["--dataset", "mnist", "--data-dir", FILE], FILE),
        (["--dataset", "mnist", "--data-dir", "/no/such/folder"], "/no/such/folder"),
    ],
    "gradcheck": [
        (["--samples", "0"], "--samples"),
        (["--tol", "0"], "--tol"),
        (["--tol", "tiny"], "--tol"),
        (["--dataset", "spiral"], "--dataset"),
        (["--hidden", "3,3"], "--hidden"),
        (["--weight-decay", "0.1"], "--weight-decay"),
        (["--backend", "gpu"], "--backend"),
        (["--bogus", "1"], "--bogus"),
        (["--dataset", "mnist"], "train-images-idx3-ubyte.gz"),
    ],
    "tune": [
        (["--trials", "0"], "--trials"),
        (["--epochs", "-1"], "--epochs"),
        (["--lr-range", "1"], "--lr-range"),
        (["--lr-range", "1e-2,1e-6"], "--lr-range"),
        (["--decay-range", "a,b"], "--decay-range"),
        (["--optimizers", "sgd,fast"], "--optimizers"),
        (["--optimizers", ","], "--optimizers"),
        (["--batch-sizes", "0"], "--batch-sizes"),
        (["--workers", "0"], "--workers"),
        (["--top", "x"], "--top"),
        (["--hidden", "-3"], "--hidden"),
        (["--dataset", "cifar"], "--dataset"),
        (["--plot", "/no/such/folder/t.png"], "--plot"),
        (["--plot", "trials.txt"], "trials.txt"),
    ],
    "info": [
        (["--verbose"], "--verbose"),
        (["extra"], "extra"),
    ],
    "bench": [
        (["--nope"], "--nope"),
        (["-k"], "-k"),
        (["--stat", "max"], "--stat"),
    ],
    "": [
        (["nope"], "nope"),
        (["--nope"], "--nope"),
    ],
}
CASES = [pytest.param(cmd, argv, names, id=f"{cmd or 'fastnet'} {' '.join(argv)}")
         for cmd, cases in BAD.items() for argv, names in cases]


@pytest.fixture(scope="module", autouse=True)
def a_file():
    with open(FILE, "w") as f:
        f.write("not a folder")
    yield
    os.unlink(FILE)


@pytest.mark.parametrize("cmd, argv, names", CASES)
def test_bad_invocation(capsys, cmd, argv, names):
    if cmd == "bench":
        pytest.importorskip("pytest_benchmark")
    if "--plot" in argv:
        pytest.importorskip("matplotlib")
        if cmd == "tune":
            pytest.importorskip("distributed")
    code = main(([cmd] if cmd else []) + argv)
    out, err = capsys.readouterr()
    check_error(code, err, names)
    assert "epoch" not in out  # refused before any training started


def test_unavailable_backend(capsys):
    status = fastnet.available_backends()["cupy"]
    if status.available:
        pytest.skip("CuPy works here")
    for cmd in ("train", "gradcheck"):
        code = main([cmd, "--backend", "cupy"])
        check_error(code, capsys.readouterr()[1], "backend 'cupy' is not available")


@pytest.mark.parametrize("cmd", ["train", "gradcheck"])
def test_bad_fastnet_backend_variable(capsys, monkeypatch, cmd):
    monkeypatch.setenv("FASTNET_BACKEND", "tpu")
    monkeypatch.setattr(fastnet.backend.registry, "_default", None)  # as if imported with it
    code = main([cmd])
    check_error(code, capsys.readouterr()[1], "FASTNET_BACKEND: 'tpu'")
    code = main(["info"])  # info still reports everything, the bad variable included
    out = capsys.readouterr()[0]
    assert code == 0 and "FASTNET_BACKEND: 'tpu'" in out


@pytest.mark.parametrize(
    "argv",
    [["train", "--dataset", "mnist"], ["gradcheck", "--dataset", "mnist"], ["train", "--save", "/tmp"]],
)
def test_debug_shows_the_traceback(capsys, argv):
    code = main([*argv, "--debug"])
    err = capsys.readouterr()[1]
    assert code == 1 and "Traceback" in err and "error:" in err.strip().splitlines()[-2]


def test_bad_variable_at_import_in_a_fresh_process(tmp_path):
    env = {**os.environ, "FASTNET_BACKEND": "tpu", "FASTNET_OFFLINE": "1", "FASTNET_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "fastnet", "train", "--epochs", "1"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    check_error(done.returncode, done.stderr, "FASTNET_BACKEND: 'tpu'")
    done = subprocess.run([sys.executable, "-m", "fastnet", "train", "--epochs", "1", "--backend", "numpy",
                           "--seed", "0"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr  # an explicit --backend wins over the bad variable
