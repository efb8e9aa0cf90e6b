"""Saving and loading parameters: round trips, other backends, and every kind of bad file."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from hostarrays import host

import fastnet
from fastnet import (
    ModelFileError,
    MultiLayerNet,
    TwoLayerNet,
    load_net,
    load_params,
    save_params,
)
from fastnet.io import HEADER_KEY, read_header


def data(n=20, d=6, k=3):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


def trained_multi(backend=None):
    net = MultiLayerNet(6, [5, 4], 3, activation="sigmoid", use_batchnorm=True, seed=0,
                        dtype=np.float64, backend=backend)
    x, t = data()
    bk = net.backend
    net.train_batches(bk.asarray(x), bk.asarray(t), bk.asarray(np.arange(20).reshape(2, 10)), fastnet.SGD(0.1))
    return net


def test_round_trip_on_every_backend(backend, tmp_path):
    net = trained_multi()
    path = save_params(tmp_path / "net.npz", net)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    twin = load_net(path)
    assert type(twin) is MultiLayerNet and twin.config() == net.config() and twin.backend is backend
    x, t = data()
    x = backend.asarray(x)
    np.testing.assert_array_equal(host(twin.predict(x)), host(net.predict(x)))  # running stats too
    header = read_header(path)
    assert header["class"] == "MultiLayerNet" and header["dtype"] == "float64"
    assert header["arrays"]["W1"]["shape"] == [6, 5]


def test_saved_on_one_backend_loads_on_another(backend, tmp_path):
    net = TwoLayerNet(6, 5, 3, seed=1, dtype=np.float64)  # on the fixture's backend
    path = save_params(tmp_path / "two.npz", net)
    for other in ("numpy", "numba"):
        if not fastnet.available_backends()[other].available:
            continue
        twin = load_net(path, backend=other)
        assert twin.backend.name == other
        for k in net.params:
            np.testing.assert_array_equal(host(twin.params[k]), host(net.params[k]))


def test_load_params_in_place_and_dtype_cast(tmp_path):
    net = TwoLayerNet(6, 5, 3, seed=1, dtype=np.float64)
    path = save_params(tmp_path / "two.npz", net)
    other = TwoLayerNet(6, 5, 3, seed=2, dtype=np.float32)
    w1 = other.params["W1"]
    assert load_params(path, other) is other
    assert other.params["W1"] is w1 and w1.dtype == np.float32  # the live array, in its own dtype
    np.testing.assert_allclose(w1, net.params["W1"], rtol=1e-7)
    assert load_net(path, dtype="float32").dtype == np.float32


def test_different_architecture_is_refused(tmp_path):
    path = save_params(tmp_path / "two.npz", TwoLayerNet(6, 5, 3, seed=1))
    with pytest.raises(ModelFileError, match=r"different architecture: saved TwoLayerNet\(.*hidden_size=5"):
        load_params(path, TwoLayerNet(6, 7, 3))
    with pytest.raises(ModelFileError, match="different architecture"):
        load_params(path, MultiLayerNet(6, [5], 3))


def test_truncated_file(tmp_path):
    path = save_params(tmp_path / "net.npz", trained_multi())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="damaged or truncated|not a readable"):
        load_net(path)
    path.write_bytes(b"")
    with pytest.raises(ModelFileError):
        load_net(path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    header = np.array(json.dumps({"format": "fastnet-params", "version": 1}))
    np.savez(path, W1=np.array([{"a": 1}], dtype=object), **{HEADER_KEY: header})
    with pytest.raises(ModelFileError, match="pickled Python objects"):
        load_net(path)


def test_edited_weights_fail_the_checksum(tmp_path):
    net = TwoLayerNet(6, 5, 3, seed=1)
    path = save_params(tmp_path / "two.npz", net)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["W1"] = arrays["W1"] + 1.0
    np.savez(path, **arrays)
    with pytest.raises(ModelFileError, match="W1 does not match its checksum"):
        load_net(path)


def test_header_and_arrays_must_agree(tmp_path):
    net = TwoLayerNet(6, 5, 3, seed=1)
    path = save_params(tmp_path / "two.npz", net)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    np.savez(tmp_path / "missing.npz", **{k: v for k, v in arrays.items() if k != "b2"})
    with pytest.raises(ModelFileError, match="inconsistent"):
        load_net(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", W1=arrays["W1"])
    with pytest.raises(ModelFileError, match="not a fastnet parameter file"):
        load_net(tmp_path / "plain.npz")
    with zipfile.ZipFile(tmp_path / "notnpz.npz", "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ModelFileError):
        load_net(tmp_path / "notnpz.npz")


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    import fastnet.io as fio

    path = save_params(tmp_path / "net.npz", TwoLayerNet(6, 5, 3, seed=1))
    before = path.read_bytes()

    def broken(_):
        raise ModelFileError("verification failed")

    monkeypatch.setattr(fio, "_read", broken)
    with pytest.raises(ModelFileError, match="verification failed"):
        save_params(path, TwoLayerNet(6, 5, 3, seed=2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["net.npz"]


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_params(tmp_path / "no" / "net.npz", TwoLayerNet(6, 5, 3))
    with pytest.raises(FileNotFoundError):
        load_net(tmp_path / "absent.npz")


def _rewrite_header(path, edit):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(str(arrays.pop(HEADER_KEY)[()]))
    edit(header)
    np.savez(path, **arrays, **{HEADER_KEY: np.array(json.dumps(header))})


def test_huge_size_in_the_header_is_refused_before_building(tmp_path, monkeypatch):
    path = save_params(tmp_path / "two.npz", TwoLayerNet(6, 5, 3, seed=1))
    _rewrite_header(path, lambda h: h["config"].update(hidden_size=10**15))
    built = []
    monkeypatch.setattr(TwoLayerNet, "__init__", lambda self, *a, **k: built.append(1))
    with pytest.raises(ModelFileError, match=r"config needs W1 of shape \[6, 1000000000000000\]"):
        load_net(path)
    assert built == []  # refused before any net was allocated


def test_huge_array_declared_in_the_header_is_refused(tmp_path):
    """An npy header (and the JSON header) declaring 10**12 rows: refused before numpy reads it."""
    import io

    path = save_params(tmp_path / "two.npz", TwoLayerNet(6, 5, 3, seed=1))
    _rewrite_header(path, lambda h: h["arrays"]["W1"].update(shape=[10**12, 5]))
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    body = io.BytesIO()
    np.lib.format.write_array_header_1_0(body, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 5)})
    body.write(arrays.pop("W1").tobytes())
    np.savez(path, **arrays)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("W1.npy", body.getvalue())
    with pytest.raises(ModelFileError, match=r"declares 400000000001\d\d bytes of arrays"):
        load_net(path)


def test_deeply_nested_header_is_refused(tmp_path):
    path = tmp_path / "deep.npz"
    np.savez(path, **{HEADER_KEY: np.array("[" * 100_000 + "]" * 100_000)})
    with pytest.raises(ModelFileError, match="nested too deeply"):
        load_net(path)


def test_header_that_is_not_an_npy_entry_is_refused(tmp_path):
    path = save_params(tmp_path / "two.npz", TwoLayerNet(6, 5, 3, seed=1))
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != HEADER_KEY}
    np.savez(path, **arrays)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(HEADER_KEY, json.dumps({"format": "fastnet-params", "version": 1}))
    with pytest.raises(ModelFileError, match="not a NumPy array"):
        load_net(path)
    np.savez(path, **arrays, **{HEADER_KEY: np.zeros(3)})  # an npy entry, but numbers
    with pytest.raises(ModelFileError, match="not a short text"):
        load_net(path)


def test_raw_pickle_is_refused(tmp_path):
    import pickle

    path = tmp_path / "net.npz"
    path.write_bytes(pickle.dumps({"W1": 1}))
    with pytest.raises(ModelFileError, match="pickle"):
        load_net(path)


def test_a_net_with_swapped_layers_does_not_load_as_another_net(tmp_path):
    from fastnet import SimpleConvNet
    from fastnet.layers import Tanh

    def net(seed):
        n = SimpleConvNet((1, 10, 10), {"filter_num": 3, "filter_size": 3}, hidden_size=5, output_size=3,
                          seed=seed, backend="numpy")
        return n

    changed = net(0)
    changed.layers["Relu1"] = Tanh(backend="numpy")
    path = save_params(tmp_path / "swap.npz", changed)
    with pytest.raises(ModelFileError, match="'Relu1: activation tanh' saved, 'Relu1: activation relu' here"):
        load_net(path)
    with pytest.raises(ModelFileError, match="layers differ from this net's"):
        load_params(path, net(1))
    same = net(1)
    same.layers["Relu1"] = Tanh(backend="numpy")
    x = np.random.default_rng(0).random((2, 1, 10, 10))
    np.testing.assert_array_equal(load_params(path, same).predict(x), changed.predict(x))


def test_a_layer_subclass_is_recorded_as_such(tmp_path):
    from fastnet import SimpleConvNet
    from fastnet.layers import Relu

    class Leaky(Relu):
        def forward(self, x):
            return np.where(x > 0, x, 0.1 * x)

    def net():
        return SimpleConvNet((1, 10, 10), {"filter_num": 3, "filter_size": 3}, hidden_size=5, output_size=3,
                             seed=0, backend="numpy")

    changed = net()
    changed.layers["Relu2"] = Leaky(backend="numpy")
    path = save_params(tmp_path / "leaky.npz", changed)
    with pytest.raises(ModelFileError, match=r"Leaky \(own methods\) activation relu"):
        load_params(path, net())
