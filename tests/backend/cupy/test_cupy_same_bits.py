"""Today's kernels give the same bits as the kernels of commit b2f66d5, on the CPU emulator.

The old kernel package is read from git history (``git show``) into a
temporary directory and imported under another name; both engines then run
the same steps on the same inputs and every parameter, state, loss and
gradient is compared bit for bit. Skipped where the history is not there
(a shallow clone).

Nesterov is left out on purpose: its rule now follows the core's corrected
order (``fastnet.optimizers.Nesterov``), not the old kernel's.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fastnet import optimizers as opt
from fastnet.activations import RELU, SIGMOID
from fastnet.backend.cupy.engine import FusedEngine
from fastnet.backend.spec import MLPSpec

from cupy_helpers import make_batch, make_params, needs_cxx

OLD = "b2f66d5"
OLD_FILES = ("__init__", "source", "source_rows", "source_numgrad", "plan", "plan_rows", "numgrad", "engine")
ROOT = Path(__file__).resolve().parents[3]

pytestmark = needs_cxx


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The old ``cupy_kernels`` package, imported as ``fastnet.backend.cupy_old``."""
    where = tmp_path_factory.mktemp("old") / "cupy_old"
    where.mkdir()
    for name in OLD_FILES:
        try:
            text = subprocess.run(["git", "show", f"{OLD}:fastnet/backend/cupy_kernels/{name}.py"], cwd=ROOT,
                                  capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"commit {OLD} not in this checkout's history ({exc})")
        (where / f"{name}.py").write_text(text)
    name = "fastnet.backend.cupy_old"
    spec = importlib.util.spec_from_file_location(name, where / "__init__.py", submodule_search_locations=[str(where)])
    package = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = package
    spec.loader.exec_module(package)  # type: ignore[union-attr]
    engine = importlib.import_module(f"{name}.engine")
    engine._no_step_hook = lambda optimizer: True  # it compared a hook the core no longer has
    yield engine
    for key in [k for k in sys.modules if k.startswith(name)]:
        del sys.modules[key]


def old_optimizer(rule: str, lr: float) -> Any:
    """A built-in optimizer as the old engine expects it: a per-step hook that advances Adam's count."""
    o = opt.OPTIMIZERS[rule](lr=lr)
    o._begin_step = o.step_scalars  # type: ignore[attr-defined]
    return o


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in b)


@dataclass(frozen=True)
class OldSpec:
    """The spec as the old engine reads it: the activation by name (today's spec holds the object)."""

    params: dict
    depth: int
    activation: str = "relu"
    weight_decay: float = 0.0

    def weight(self, i: int) -> Any:
        return self.params[f"W{i + 1}"]

    def bias(self, i: int) -> Any:
        return self.params[f"b{i + 1}"]

    def names(self) -> list[str]:
        return [f"{p}{i}" for i in range(1, self.depth + 1) for p in ("W", "b")]


def engines(emu: Any, old: Any, mode: str) -> tuple[Any, Any]:
    traffic = 2.0**26 if mode == "rows" else 0.0
    return (FusedEngine(emu, strict=True, rows_max_traffic=traffic),
            old.FusedEngine(emu, strict=True, rows_max_traffic=traffic))


STEPS = [  # sizes, rows, dtype, activation, rule, onehot, weight decay
    ((784, 50, 10), 20, np.float32, RELU, "sgd", False, 0.0),
    ((784, 50, 10), 20, np.float64, SIGMOID, "momentum", True, 0.0),
    ((784, 50, 10), 20, np.float64, RELU, "adam", False, 0.01),
    ((30, 20, 10, 5), 9, np.float64, RELU, "rmsprop", True, 0.05),
    ((30, 20, 10, 5), 9, np.float32, SIGMOID, "adagrad", False, 0.0),
]


@pytest.mark.parametrize("mode", ["rows", "tiled"])
@pytest.mark.parametrize("sizes,rows,dtype,act,rule,onehot,lam", STEPS,
                         ids=[f"{len(c[0]) - 1}layers-{c[4]}-{np.dtype(c[2]).name}" for c in STEPS])
def test_train_steps_same_bits(emu, old, mode, sizes, rows, dtype, act, rule, onehot, lam):
    new_engine, old_engine = engines(emu, old, mode)
    ours, theirs = make_params(sizes, dtype), make_params(sizes, dtype)
    o_new, o_old = opt.OPTIMIZERS[rule](lr=0.05), old_optimizer(rule, 0.05)
    for step in range(2):
        x, t = make_batch(rows, sizes, onehot, dtype, seed=step)
        a = new_engine.train_step(MLPSpec(ours, len(sizes) - 1, act, lam), x, t, o_new)
        b = old_engine.train_step(OldSpec(theirs, len(sizes) - 1, act.kernel, lam), x, t, o_old)
        assert a is not None and b is not None and a.tobytes() == b.tobytes()
    assert same(ours, theirs)
    for name in o_new.state_names:
        assert same(o_new.state[name], o_old.state[name])


@pytest.mark.parametrize("mode", ["rows", "tiled"])
def test_epoch_same_bits(emu, old, mode):
    sizes = (30, 12, 4)
    rng = np.random.default_rng(3)
    X, T = rng.random((60, 30)), rng.integers(0, 4, 60)
    batches = np.stack([rng.choice(60, 8, replace=False) for _ in range(3)])
    new_engine, old_engine = engines(emu, old, mode)
    ours, theirs = make_params(sizes), make_params(sizes)
    o_new, o_old = opt.Adam(lr=0.01), old_optimizer("adam", 0.01)
    for _ in range(2):
        a = new_engine.train_batches(MLPSpec(ours, 2, SIGMOID, 0.0), X, T, batches, o_new)
        b = old_engine.train_batches(OldSpec(theirs, 2, "sigmoid", 0.0), X, T, batches, o_old)
        assert a.tobytes() == b.tobytes()
    assert same(ours, theirs) and same(o_new.state["m"], o_old.state["m"])


@pytest.mark.parametrize("mode", ["rows", "tiled"])
def test_predict_and_gradient_same_bits(emu, old, mode):
    sizes = (784, 50, 10)
    params = make_params(sizes, np.float32)
    x, t = make_batch(20, sizes, True, np.float32)
    new_engine, old_engine = engines(emu, old, mode)
    new_spec, old_spec = MLPSpec(params, 2, SIGMOID, 0.01), OldSpec(params, 2, "sigmoid", 0.01)
    assert new_engine.predict(new_spec, x).tobytes() == old_engine.predict(old_spec, x).tobytes()
    (g1, l1), (g2, l2) = new_engine.gradient(new_spec, x, t), old_engine.gradient(old_spec, x, t)
    assert same(g1, g2) and l1.tobytes() == l2.tobytes()


def test_numerical_gradient_same_bits(emu, old):
    sizes = (9, 7, 5, 3)
    params = make_params(sizes)
    x, t = make_batch(6, sizes, True)
    new_engine, old_engine = engines(emu, old, "tiled")
    a = new_engine.numerical_gradient(MLPSpec(params, 3, SIGMOID, 0.1), x, t, 1e-4)
    b = old_engine.numerical_gradient(OldSpec(params, 3, "sigmoid", 0.1), x, t, 1e-4)
    assert same(a, b)
