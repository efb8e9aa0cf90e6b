"""The ch.6 random search on dask: reproducible, failures reported in their row."""

from __future__ import annotations

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="needs the 'distributed' extra")
from fastnet import distributed as fd  # noqa: E402
from fastnet import tune  # noqa: E402
from fastnet.datasets import spiral_data  # noqa: E402

SPACE = tune.SearchSpace(lr=(1e-2, 1.0), hidden_sizes=((16,), (24, 12)), batch_sizes=(10, 30))


def _cluster(n):
    cluster = distributed.LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, env=fd.WORKER_ENV
    )
    return cluster, distributed.Client(cluster)


def _numbers(trials):
    return [(t.index, t.seed, t.config, t.val_acc, t.train_acc, t.history["test_acc"],
             t.history["step_loss"]) for t in trials]


def test_same_trials_with_one_and_two_workers():
    X, y = spiral_data(60, 3, seed=0)
    out = {}
    for n in (1, 2):
        cluster, client = _cluster(n)
        try:
            out[n] = tune.random_search(X, y, trials=6, epochs=2, space=SPACE, seed=3,
                                        client=client, progress=False)
        finally:
            client.close()
            cluster.close()
    assert _numbers(out[1]) == _numbers(out[2])
    accs = [t.val_acc for t in out[2]]
    assert accs == sorted(accs, reverse=True)  # best first
    assert sorted(t.index for t in out[2]) == list(range(6))


def test_configs_follow_the_space_and_seed():
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    a = [SPACE.draw(rng1) for _ in range(50)]
    assert a == [SPACE.draw(rng2) for _ in range(50)]
    assert all(1e-2 <= c["lr"] <= 1.0 and 1e-8 <= c["weight_decay"] <= 1e-4 for c in a)
    logs = np.log10([c["lr"] for c in a])
    assert logs.min() < -1.5 and logs.max() > -0.5  # spread over the log range
    with pytest.raises(ValueError, match="lr bounds"):
        tune.SearchSpace(lr=(1.0, 0.1))


def test_validation_split_comes_from_training_data():
    X, y = np.arange(50.0).reshape(25, 2), np.arange(25) % 3
    xt, tt, xv, tv = tune._split(X, y, 0.2, np.random.default_rng(0))
    assert len(xv) == 5 and len(xt) == 20
    assert sorted(np.concatenate([xt[:, 0], xv[:, 0]]).tolist()) == X[:, 0].tolist()


def test_a_diverging_trial_is_reported_not_fatal():
    X, y = spiral_data(40, 3, seed=1)
    space = tune.SearchSpace(lr=(1e300, 1e300), weight_decay=(1e-8, 1e-8), hidden_sizes=((8,),),
                             batch_sizes=(40,))
    cluster, client = _cluster(1)
    try:
        trials = tune.random_search(X, y, trials=2, epochs=3, space=space, client=client,
                                    progress=False, seed=0)
    finally:
        client.close()
        cluster.close()
    assert len(trials) == 2
    errors = [t.error or "" for t in trials]
    assert all("Diverged" in e for e in errors), errors
    assert "failed" in tune.format_table(trials)


def test_bad_arguments():
    X, y = spiral_data(10, 2, seed=0)
    with pytest.raises(ValueError, match="trials"):
        tune.random_search(X, y, trials=0)
    with pytest.raises(ValueError, match="validation_rate"):
        tune._split(X, y, 1.5, np.random.default_rng(0))


def _table_rows(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("rank"))
    return lines[start:]


def test_cli_on_a_real_cluster_with_a_killed_worker(monkeypatch):
    """`fastnet tune --scheduler ADDRESS` against separate scheduler/worker processes."""
    import os
    import signal
    import subprocess
    import sys

    from test_distributed import _Cluster

    X, y = spiral_data(100, 3, seed=2)
    cluster = _Cluster(2)
    try:
        client = fd.client(cluster.address, timeout=30)
        client.wait_for_workers(2, timeout=60)
        args = ["--trials", "6", "--epochs", "3", "--dataset", "spiral", "--seed", "2",
                "--hidden", "16", "--lr-range", "1e-2,1", "--batch-sizes", "10,30", "--no-progress"]
        env = {**os.environ, "FASTNET_OFFLINE": "1"}
        cli = subprocess.run([sys.executable, "-m", "fastnet", "tune", "--scheduler", cluster.address, *args],
                             capture_output=True, text=True, env=env, timeout=300)
        assert cli.returncode == 0, cli.stderr
        assert "on 2 worker(s)" in cli.stdout

        # the same search in-process, one worker killed as soon as the first trial is back
        pids = client.run(os.getpid)
        real = tune._as_completed

        def kill_after_first(futures, progress):
            for i, item in enumerate(real(futures, progress)):
                if i == 0:
                    busy = [w for w, keys in client.processing().items() if keys]
                    os.kill(pids[busy[0] if busy else next(iter(pids))], signal.SIGKILL)
                yield item

        monkeypatch.setattr(tune, "_as_completed", kill_after_first)
        space = tune.SearchSpace(lr=(1e-2, 1.0), hidden_sizes=((16,),), batch_sizes=(10, 30))
        trials = tune.random_search(X, y, trials=6, epochs=3, space=space, seed=2, client=client,
                                    progress=False)
        assert sum(p.poll() is not None for p in cluster.workers) == 1
        client.close()
    finally:
        cluster.close()
    assert len(trials) == 6 and all(t.error is None for t in trials)
    assert _table_rows(cli.stdout) == tune.format_table(trials).splitlines()


def test_plot_shows_the_spread_and_labelled_curves(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    saved = []
    real_savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, *a, **k: (saved.append(self), real_savefig(self, *a, **k))[1])
    trials = [tune.Trial(index=i, seed=i, config={"lr": 10.0 ** -i, "weight_decay": 1e-6},
                         val_acc=0.9 - 0.1 * i, history={"epoch": [1, 2, 3], "test_acc": [0.1, 0.5, 0.9 - 0.1 * i],
                                                          "train_acc": [0.1, 0.6, 0.9]})
              for i in range(3)]
    tune.plot_trials(trials, str(tmp_path / "trials.png"))
    axes = [ax for ax in saved[0].axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == 1 + 3  # the spread, then one panel per trial: no empty panels
    assert axes[0].get_xscale() == "log" and axes[0].get_xlabel() == "learning rate"
    assert all(ax.get_xlabel() == "epoch" for ax in axes[1:])


@pytest.mark.slow
@pytest.mark.mnist
def test_cli_defaults_learn_on_mnist(mnist_dir, capsys):
    """The default search (the book's: 500 samples, 50 epochs, lr 1e-6..1e-2) finds learning trials."""
    from fastnet.cli import main

    assert main(["tune", "--trials", "8", "--seed", "0", "--workers", "2", "--no-progress",
                 "--data-dir", mnist_dir]) == 0
    rows = _table_rows(capsys.readouterr().out)
    accs = [float(row.split()[1]) for row in rows[1:]]
    assert max(accs) > 0.5 and min(accs) < 0.2  # a spread over the learning rates, as in the book


def test_python_defaults_are_the_books_search():
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(tune.random_search).parameters.items()}
    assert defaults["epochs"] == 50 and defaults["train_size"] == 500 and defaults["validation_rate"] == 0.2
    space = tune.SearchSpace()
    assert space.lr == (1e-6, 1e-2) and space.weight_decay == (1e-8, 1e-4)
    assert space.hidden_sizes == ((100,) * 6,) and space.optimizers == ("sgd",)
    X, y = spiral_data(10, 2, seed=0)
    with pytest.raises(ValueError, match="train_size"):
        tune.random_search(X, y, train_size=1)


def test_train_size_keeps_the_first_samples():
    X, y = spiral_data(50, 3, seed=0)  # 150 samples, sorted by class
    with pytest.raises(ValueError, match="single class.*shuffle"):
        tune.random_search(X, y, train_size=40)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    space = tune.SearchSpace(lr=(0.1, 0.1), hidden_sizes=((8,),), batch_sizes=(8,))
    cluster, client = _cluster(1)
    try:
        trials = tune.random_search(X, y, trials=1, epochs=1, space=space, train_size=40, client=client,
                                    progress=False)
    finally:
        client.close()
        cluster.close()
    assert trials[0].error is None
    assert len(trials[0].history["step_loss"]) == 4  # 32 training samples (8 held out) in batches of 8


@pytest.mark.mnist
@pytest.mark.slow
def test_python_defaults_learn_on_mnist():
    """The book's picture: a few learning rates near 1e-2 learn, the small ones stay at chance."""
    import os

    if not os.environ.get("FASTNET_DATA"):
        pytest.skip("needs the real MNIST (set FASTNET_DATA)")
    from fastnet.datasets import load_mnist

    (x, t), _ = load_mnist(download=False)
    cluster, client = _cluster(2)
    try:
        trials = tune.random_search(x, t, trials=16, seed=0, client=client, progress=False)
    finally:
        client.close()
        cluster.close()
    accs = [tr.val_acc for tr in trials]
    assert max(accs) > 0.5 and min(accs) < 0.2  # a spread, as in the book's figure
    best = trials[0].config["lr"]
    assert best > 1e-3  # the winners sit at the top of the learning-rate range
