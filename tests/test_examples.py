"""Every script in examples/ runs end to end with tiny settings (in a subprocess, as users run them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REAL_MNIST = os.environ.get("FASTNET_DATA", "")


def run_example(name, *args, tmp_path, mnist=False):
    env = {**os.environ, "MPLBACKEND": "Agg", "FASTNET_OFFLINE": "1"}
    env.pop("FASTNET_BACKEND", None)
    if not mnist:  # no MNIST anywhere: the scripts fall back to the spiral data
        (tmp_path / "empty").mkdir(exist_ok=True)
        env.update(FASTNET_DATA=str(tmp_path / "empty"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    root = str(EXAMPLES.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def is_png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:4] == b"\x89PNG"


def test_ch4_train_neuralnet(tmp_path):
    out = run_example("ch4_train_neuralnet.py", "--iters", "30", "--batch-size", "50", "--plot",
                      tmp_path / "acc.png", tmp_path=tmp_path)
    assert "using the spiral data" in out and "after 30 iterations" in out
    assert is_png(tmp_path / "acc.png") and is_png(tmp_path / "acc_loss.png")


@pytest.mark.mnist
def test_ch4_on_mnist(tmp_path):
    if not REAL_MNIST:
        pytest.skip("real MNIST not found: set FASTNET_DATA")
    out = run_example("ch4_train_neuralnet.py", "--iters", "20", "--train-size", "1000", "--no-plot",
                      tmp_path=tmp_path, mnist=True)
    assert "data: MNIST" in out


def test_ch5_gradient_check(tmp_path):
    out = run_example("ch5_gradient_check.py", "--hidden", "4", tmp_path=tmp_path)
    diffs = {line.split(":")[0]: float(line.split(":")[1]) for line in out.splitlines()
             if line.split(":")[0] in ("W1", "b1", "W2", "b2")}
    assert set(diffs) == {"W1", "b1", "W2", "b2"} and max(diffs.values()) < 1e-6


def test_gradient_descent_path(tmp_path):
    out = run_example("gradient_descent_path.py", "--steps", "20", "--plot", tmp_path / "path.png",
                      tmp_path=tmp_path)
    # the book's figures: from (-3, 4), 20 steps of lr 0.1 end near (-0.0346, 0.0461)
    assert "x = [-0.03458765  0.04611686]" in out
    assert is_png(tmp_path / "path.png")


def test_nnfs_random_search(tmp_path):
    out = run_example("nnfs_random_search.py", "--iterations", "100", "--hidden", "8",
                      "--plot", tmp_path / "rs.png", tmp_path=tmp_path)
    assert out.count("random search") == 2 and out.count("SGD (backprop)") == 2
    assert is_png(tmp_path / "rs.png")


def test_gpu_training(tmp_path):
    out = run_example("gpu_training.py", "--epochs", "2", "--hidden", "16", "--lr", "1.0",
                      "--plot", tmp_path / "gpu.png", tmp_path=tmp_path)
    assert "test acc" in out and ("backend: cupy" in out or "no GPU backend here" in out)
    assert is_png(tmp_path / "gpu.png")
