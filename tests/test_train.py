"""Trainer: epochs, sampling, evaluation, reproducibility, divergence, and the plots."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hostarrays import host

import fastnet
from fastnet import MultiLayerNet, Trainer, TrainingDivergedError, TwoLayerNet
from fastnet.datasets import spiral_data


@pytest.fixture(scope="module")
def spiral():
    x, t = spiral_data(100, 3, seed=0)
    xt, tt = spiral_data(50, 3, seed=1)
    return x, t, xt, tt


def make_trainer(data, net=None, **kwargs):
    x, t, xt, tt = data
    net = net or TwoLayerNet(2, 32, 3, weight_init_std=0.5, seed=0, dtype=np.float64)
    options = {"epochs": 5, "mini_batch_size": 30, "optimizer": "adam", "optimizer_param": {"lr": 0.05},
               "seed": 0, "progress": False, "verbose": False}
    options.update(kwargs)
    return Trainer(net, x, t, xt, tt, **options)


def test_history_and_learning(backend, spiral):
    trainer = make_trainer(spiral, epochs=30)
    history = trainer.train()
    assert history is trainer.history
    assert history.epoch == list(range(1, 31))
    assert history.steps_per_epoch == 10
    assert len(history.step_loss) == 300
    assert all(len(getattr(history, k)) == 30 for k in ("train_loss", "train_acc", "test_loss", "test_acc", "seconds"))
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.train_acc[-1] > 0.6 and history.test_acc[-1] > 0.5
    assert np.mean(history.step_loss[:10]) == pytest.approx(history.train_loss[0])
    assert set(history.as_dict()) >= {"epoch", "train_acc", "test_acc", "step_loss"}
    assert trainer.x_train.dtype == np.float64 and backend.owns(trainer.x_train)  # moved once


def test_same_seeds_same_history(cpu_backend, spiral):
    a = make_trainer(spiral).train()
    b = make_trainer(spiral).train()
    assert a.step_loss == b.step_loss and a.test_acc == b.test_acc
    c = make_trainer(spiral, seed=1).train()
    assert c.step_loss != a.step_loss


def test_backends_draw_the_same_batches(backend, spiral):
    with fastnet.use_backend("numpy"):
        ref = make_trainer(spiral).train()
    mine = make_trainer(spiral).train()
    np.testing.assert_allclose(mine.step_loss, ref.step_loss, rtol=1e-9)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batch_indices(backend, shuffle):
    idx = host(backend.batch_indices(103, 10, np.random.default_rng(0), shuffle=shuffle))
    assert idx.shape == (10, 10) and idx.min() >= 0 and idx.max() < 103
    if shuffle:
        assert len(np.unique(idx)) == 100  # a permutation: no sample twice in an epoch
    again = host(backend.batch_indices(103, 10, np.random.default_rng(0), shuffle=shuffle))
    assert np.array_equal(idx, again)


def test_replacement_sampling_like_the_book(spiral):
    history = make_trainer(spiral, sampling="replacement", epochs=3).train()
    assert len(history.step_loss) == 30
    with pytest.raises(ValueError, match="sampling"):
        make_trainer(spiral, sampling="random")


def test_layer_path_nets_train(backend, spiral):
    net = MultiLayerNet(2, [32, 32], 3, use_dropout=True, dropout_ration=0.1, use_batchnorm=True,
                        seed=0, dtype=np.float64)
    # 40 epochs: over 0.55 for every seed tried on NumPy (dropout masks differ per backend)
    history = make_trainer(spiral, net=net, epochs=40).train()
    assert history.train_acc[-1] > 0.5


def test_divergence_stops_with_a_clear_message(spiral):
    trainer = make_trainer(spiral, optimizer="sgd", optimizer_param={"lr": 1e200}, epochs=5)
    with pytest.raises(TrainingDivergedError, match=r"loss became (nan|inf) at epoch 1, step \d+.*learning rate") as info:
        trainer.train()
    assert info.value.epoch == 1 and info.value.history is trainer.history
    assert np.isfinite(info.value.history.step_loss).all()  # what came before the bad step
    assert trainer.history.epoch == []


def test_nan_in_data_is_refused(spiral):
    x, t, xt, tt = spiral
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="x_train holds 1 NaN"):
        make_trainer((bad, t, xt, tt))
    make_trainer((bad, t, xt, tt), check_finite=False)  # allowed when asked


def test_argument_errors(spiral):
    x, t, xt, tt = spiral
    with pytest.raises(ValueError, match="epochs"):
        make_trainer(spiral, epochs=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_trainer(spiral, optimizer="fast")
    with pytest.raises(ValueError, match="both x_test and t_test"):
        Trainer(TwoLayerNet(2, 4, 3), x, t, xt, None)
    with pytest.raises(ValueError, match="x_train has 300 samples but t_train has 299"):
        Trainer(TwoLayerNet(2, 4, 3), x, t[:-1])
    with pytest.raises(ValueError, match="labels"):
        Trainer(TwoLayerNet(2, 4, 2), x, t)  # label 2 with only 2 outputs
    with pytest.raises(TypeError, match="fastnet net"):
        Trainer("net", x, t)


def test_optimizer_instance_and_no_test_set(spiral):
    x, t, _, _ = spiral
    opt = fastnet.Momentum(lr=0.1)
    net = TwoLayerNet(2, 8, 3, seed=0)
    trainer = Trainer(net, x, t, epochs=2, optimizer=opt, mini_batch_size=1000, progress=False)
    history = trainer.train()
    assert trainer.optimizer is opt and opt.backend is net.backend
    assert trainer.batch_size == 300 and history.steps_per_epoch == 1  # capped at the data size
    assert history.test_acc == [] and len(history.train_acc) == 2


def test_evaluate_sample_num_and_one_hot(spiral):
    x, t, xt, tt = spiral
    eye = np.eye(3)
    trainer = Trainer(TwoLayerNet(2, 8, 3, seed=0), x, eye[t], xt, eye[tt], epochs=1,
                      evaluate_sample_num_per_epoch=50, progress=False)
    history = trainer.train()
    hits = history.train_acc[0] * 50  # accuracy over exactly 50 samples: a whole number of hits
    assert abs(hits - round(hits)) < 1e-9


def test_progress_and_verbose_output(spiral, capsys):
    make_trainer(spiral, epochs=2, progress=True, verbose="epochs").train()
    out, err = capsys.readouterr()
    assert "epoch 2/2: loss" in out
    assert err == ""  # stderr is not a terminal here: no bar drawn into it


def test_progress_bar_moves_within_an_epoch(spiral, monkeypatch):
    """On a terminal the bar is updated ~20 times an epoch, and the run is the same as without it."""
    tqdm = pytest.importorskip("tqdm")
    import io
    import sys

    updates = []

    class Tty(io.StringIO):
        def isatty(self):
            return True

    class Bar(tqdm.tqdm):
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(sys, "stderr", Tty())
    monkeypatch.setattr("fastnet.train._tqdm", lambda: Bar)
    x, t, xt, tt = spiral
    shown = make_trainer((x, t, xt, tt), epochs=2, mini_batch_size=5, progress=True).train()
    assert len(updates) == 2 * 20 and sum(updates) == 2 * 60
    assert "step" in sys.stderr.getvalue()
    monkeypatch.undo()
    plain = make_trainer((x, t, xt, tt), epochs=2, mini_batch_size=5, progress=False).train()
    assert shown.step_loss == plain.step_loss and shown.test_acc == plain.test_acc


def test_continue_training(spiral):
    trainer = make_trainer(spiral, epochs=2)
    trainer.train()
    trainer.epochs = 4
    assert trainer.train().epoch == [1, 2, 3, 4]


def test_plots(spiral, tmp_path):
    pytest.importorskip("matplotlib")
    from fastnet import plot

    history = make_trainer(spiral, epochs=3).train()
    for fn in (plot.plot_history, plot.plot_loss, plot.plot_accuracy):
        path = fn(history, tmp_path / f"{fn.__name__}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot.plot_history(history.as_dict(), tmp_path / "dict.png", title="from a dict")
    path = plot.plot_path([[-3.0, 4.0], [-2.0, 3.0], [0.0, 0.1]], tmp_path / "path.png",
                          f=lambda p: p[0] ** 2 + p[1] ** 2)
    assert path.stat().st_size > 1000


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    import builtins

    from fastnet import plot

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(plot.PlotUnavailableError, match=r"fastnet\[plot\]"):
        plot.plot_loss({"step_loss": [1.0]}, tmp_path / "x.png")


@pytest.mark.mnist
def test_one_mnist_epoch(mnist_dir):
    (x, t), (xt, tt) = fastnet.datasets.load_mnist(data_dir=mnist_dir, download=False)
    net = TwoLayerNet(784, 50, 10, seed=0)
    history = Trainer(net, x, t, xt, tt, epochs=1, optimizer_param={"lr": 0.1}, seed=0, progress=False).train()
    assert history.test_acc[0] > 0.88


def test_loss_stuck_at_the_ceiling_warns():
    """A blown-up net on the book's loss stays finite (+1e-7 caps it); the trainer says so."""
    from fastnet.train import LOSS_CEILING, TrainingWarning

    rng = np.random.default_rng(0)
    x, t = rng.random((200, 20)), rng.integers(0, 10, 200)
    net = fastnet.TwoLayerNet(20, 30, 10, seed=0, dtype=np.float64)
    trainer = fastnet.Trainer(net, x, t, epochs=3, mini_batch_size=20,
                              optimizer_param={"lr": 1e8}, progress=False, seed=0)
    with pytest.warns(TrainingWarning, match="ceiling"):
        history = trainer.train()
    assert max(history.train_loss) > 0.9 * LOSS_CEILING
    calm = fastnet.Trainer(fastnet.TwoLayerNet(20, 30, 10, seed=0, dtype=np.float64), x, t, epochs=2,
                           mini_batch_size=20, optimizer_param={"lr": 0.1}, progress=False, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        calm.train()


def test_conv_nets_evaluate_100_images_at_a_time_by_default():
    """im2col grows with the batch: the conv nets' default evaluation batch is theirs, not 10,000."""
    conv = fastnet.SimpleConvNet((1, 8, 8), {"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
                                 hidden_size=4, output_size=3, seed=0, backend="numpy")
    x, t = np.zeros((3, 1, 8, 8)), np.array([0, 1, 2])
    assert fastnet.Trainer(conv, x, t, epochs=1, verbose=False).eval_batch_size == 100
    dense = fastnet.TwoLayerNet(64, 4, 3, seed=0, backend="numpy")
    assert fastnet.Trainer(dense, x.reshape(3, -1), t, epochs=1, verbose=False).eval_batch_size == 10000
    assert conv.evaluate(x, t) == pytest.approx(conv.evaluate(x, t, batch_size=1), rel=1e-12)
