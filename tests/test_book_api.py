"""The book's names and habits: common/util.py, MultiLayerNetExtend, the Trainer's surface, np.random.seed."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet import MultiLayerNet, Trainer, TwoLayerNet
from fastnet.datasets import spiral_data
from fastnet.util import shuffle_dataset, smooth_curve


def _smooth_reference(x):
    """Weighted average over 11 points, ends mirrored as the book pads them (written as a loop)."""
    n, w = len(x), np.kaiser(11, 2)
    w = w / w.sum()

    def padded(p):  # index into the book's padded array
        if p < 10:
            return x[10 - p]
        if p < n + 10:
            return x[p - 10]
        return x[n - 1 - (p - n - 10)]

    return np.array([sum(w[k] * padded(i + 5 + k) for k in range(11)) for i in range(n)])


def test_smooth_curve():
    x = np.random.default_rng(0).random(50).tolist()
    out = smooth_curve(x)
    assert out.shape == (50,)
    np.testing.assert_allclose(out, _smooth_reference(x), rtol=1e-13)
    np.testing.assert_allclose(smooth_curve(np.full(30, 2.5)), 2.5, rtol=1e-13)  # weights sum to 1
    assert smooth_curve([1.0, 2.0]).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="1-D"):
        smooth_curve(np.zeros((3, 20)))


@pytest.mark.parametrize("shape", [(6, 3), (6, 1, 2, 2)])
def test_shuffle_dataset_follows_the_global_seed(shape):
    x = np.arange(np.prod(shape)).reshape(shape)
    t = np.arange(6) * 10
    np.random.seed(3)
    xs, ts = shuffle_dataset(x, t)
    order = ts // 10
    assert sorted(order.tolist()) == list(range(6)) and order.tolist() != list(range(6))
    np.testing.assert_array_equal(xs, x[order])  # samples and labels moved together
    np.random.seed(3)
    assert np.array_equal(np.random.permutation(6), order)
    with pytest.raises(ValueError, match="2-D .* or 4-D"):
        shuffle_dataset(np.zeros((6, 2, 2)), t)
    with pytest.raises(ValueError, match="one label or one-hot row per sample"):
        shuffle_dataset(x, t[:5])


def test_book_names():
    assert fastnet.MultiLayerNetExtend is MultiLayerNet
    net = fastnet.MultiLayerNetExtend(4, [5], 3, use_dropout=True, dropout_ration=0.2, use_batchnorm=True, seed=0)
    assert "gamma1" in net.params and "Dropout1" in net.layers
    assert fastnet.smooth_curve is smooth_curve and fastnet.shuffle_dataset is shuffle_dataset


def test_nets_follow_np_random_seed():
    np.random.seed(7)
    a = TwoLayerNet(4, 5, 3)
    b = MultiLayerNet(4, [5], 3, use_dropout=True)
    np.random.seed(7)
    a2 = TwoLayerNet(4, 5, 3)
    b2 = MultiLayerNet(4, [5], 3, use_dropout=True)
    for one, two in ((a, a2), (b, b2)):
        for key in one.params:
            np.testing.assert_array_equal(one.params[key], two.params[key])
    x = np.ones((8, 4))
    b.predict(x, train_flg=True)
    b2.predict(x, train_flg=True)
    np.testing.assert_array_equal(b.layers["Dropout1"].mask, b2.layers["Dropout1"].mask)
    c = TwoLayerNet(4, 5, 3)  # the global stream moved on: a different net
    assert not np.array_equal(c.params["W1"], a.params["W1"])
    # an explicit seed ignores the global stream
    np.random.seed(1)
    d = TwoLayerNet(4, 5, 3, seed=0)
    np.random.seed(2)
    np.testing.assert_array_equal(d.params["W1"], TwoLayerNet(4, 5, 3, seed=0).params["W1"])


@pytest.fixture(scope="module")
def spiral():
    x, t = spiral_data(40, 3, seed=0)
    xt, tt = spiral_data(20, 3, seed=1)
    return x, t, xt, tt


def test_book_trainer_surface_and_printing(spiral, capsys):
    x, t, xt, tt = spiral
    net = MultiLayerNet(2, [16], 3, seed=0)
    trainer = Trainer(net, x, t, xt, tt, epochs=2, mini_batch_size=40, optimizer="SGD",
                      optimizer_param={"lr": 0.1}, evaluate_sample_num_per_epoch=None, verbose=True)
    assert trainer.current_iter == 0 and trainer.current_epoch == 0
    trainer.train_step()
    assert trainer.current_iter == 1 and trainer.current_epoch == 0 and len(trainer.train_loss_list) == 1
    trainer.train()
    assert trainer.current_iter == 6 and trainer.current_epoch == 2
    assert len(trainer.train_loss_list) == 6
    assert len(trainer.train_acc_list) == 2 and len(trainer.test_acc_list) == 2
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("train loss:") for line in lines) == 6
    assert lines[3] == f"=== epoch:1, train acc:{trainer.train_acc_list[0]}, test acc:{trainer.test_acc_list[0]} ==="
    assert lines[-2] == "=============== Final Test Accuracy ==============="
    assert lines[-1] == f"test acc:{trainer.test_acc_list[-1]}"
    assert float(lines[0].split(":")[1]) == trainer.train_loss_list[0]


def test_steps_and_epochs_run_the_same_plan(spiral):
    x, t, xt, tt = spiral

    def run(by_step):
        trainer = Trainer(TwoLayerNet(2, 8, 3, seed=0), x, t, xt, tt, epochs=2, mini_batch_size=20,
                          seed=5, verbose=False)
        if by_step:
            for _ in range(12):
                trainer.train_step()
        else:
            trainer.train_step()  # then the rest of the epoch in one call
            trainer.train()
        return trainer.history

    a, b = run(True), run(False)
    assert a.step_loss == b.step_loss and a.test_acc == b.test_acc and a.epoch == [1, 2]


@pytest.mark.parametrize("sampling", ["shuffle", "replacement"])
def test_trainer_without_seed_follows_np_random_seed(spiral, sampling):
    x, t, xt, tt = spiral

    def run():
        np.random.seed(11)
        net = TwoLayerNet(2, 8, 3)
        return Trainer(net, x, t, xt, tt, epochs=2, mini_batch_size=20, sampling=sampling,
                       verbose=False).train().step_loss

    assert run() == run()


def test_replacement_batches_are_the_books(spiral, monkeypatch):
    """With no seed, batches are np.random.choice(train_size, batch_size), step after step."""
    x, t, _, _ = spiral
    seen = []
    net = TwoLayerNet(2, 8, 3, seed=0)
    real = net.train_batches

    def spy(x_, t_, batches, optimizer):
        seen.append(np.array(batches))
        return real(x_, t_, batches, optimizer)

    monkeypatch.setattr(net, "train_batches", spy)
    np.random.seed(4)
    Trainer(net, x, t, epochs=1, mini_batch_size=30, sampling="replacement", verbose=False).train()
    np.random.seed(4)
    book = [np.random.choice(120, 30) for _ in range(4)]
    np.testing.assert_array_equal(np.concatenate(seen), np.stack(book))


def test_verbose_is_checked(spiral):
    x, t, _, _ = spiral
    with pytest.raises(ValueError, match="verbose must be True, False or 'epochs'"):
        Trainer(TwoLayerNet(2, 8, 3), x, t, verbose="loud")


def test_the_book_modules_names_are_importable_from_fastnet():
    """Every public name of the modules the book's imports map to is also ``fastnet.<name>``, the same
    object (fastnet's own helpers of those modules aside)."""
    own = {"numerical_gradient_loop", "builtin", "OPTIMIZERS"}
    import fastnet.functions
    import fastnet.gradient
    import fastnet.layers
    import fastnet.optimizers
    import fastnet.util

    for module in (fastnet.functions, fastnet.gradient, fastnet.layers, fastnet.optimizers, fastnet.util):
        for name in set(module.__all__) - own:
            assert getattr(fastnet, name, None) is getattr(module, name), f"fastnet.{name} ({module.__name__})"
    x = np.arange(32.0).reshape(2, 1, 4, 4)
    assert fastnet.im2col(x, 2, 2).shape == (18, 4) and fastnet.conv_output_size(4, 2) == 3
