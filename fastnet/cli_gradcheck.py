"""``fastnet gradcheck``: the book's gradient check, numerical gradient against backprop."""

from __future__ import annotations

import argparse
import time
from typing import Any

from .cli_common import (
    EXIT_FAIL,
    UsageError,
    add_common,
    add_net,
    check_net_args,
    compile_note,
    fresh_seed,
    load_mnist_or_explain,
    make_net,
    offline,
    positive_float,
    positive_int,
    resolve_backend,
    say,
)

__all__ = ["add_parser", "cmd_gradcheck"]


def add_parser(sub: Any) -> None:
    """Register ``gradcheck`` on the main parser's subcommands."""
    grad = sub.add_parser("gradcheck", help="compare backprop with the numerical gradient",
                          description="The book's gradient_check.py: numerical vs backprop gradient, "
                                      "mean absolute difference per parameter.")
    add_common(grad)
    grad.add_argument("--dataset", choices=("auto", "mnist", "random"), default="auto",
                      help="auto: MNIST when present, else random inputs (default: auto)")
    add_net(grad, "hidden layer sizes (default: 50, as the book; the conv nets' own: 100 simple-conv, 50 deep-conv)")
    grad.add_argument("--samples", type=positive_int, default=3, help="batch size (default: 3, as the book)")
    grad.add_argument("--tol", type=positive_float, default=1e-6,
                      help="largest mean |difference| that passes (default: 1e-6)")
    grad.set_defaults(func=cmd_gradcheck)



def cmd_gradcheck(args: argparse.Namespace) -> int:
    import numpy

    check_net_args(args)
    if args.batchnorm and args.samples == 1:
        raise UsageError("--batchnorm with --samples 1: batch norm maps one sample to beta, which starts at 0, "
                         "exactly on ReLU's kink; give --samples 2 or more")
    backend = resolve_backend(args)
    if args.dtype is None:
        args.dtype = "float64"  # central differences in float32 have no correct digits
    seed = fresh_seed(args)
    rng = numpy.random.default_rng(seed)
    name = "random"
    if args.dataset in ("auto", "mnist"):
        from .datasets import mnist_available

        if args.dataset == "mnist" or mnist_available(args.data_dir):
            (x_all, t_all), _ = load_mnist_or_explain(args, download=args.dataset == "mnist" and not offline())
            if args.samples > x_all.shape[0]:
                raise ValueError(f"--samples {args.samples}: MNIST has only {x_all.shape[0]} training images")
            pick = rng.choice(x_all.shape[0], args.samples, replace=False) if args.seed is not None else slice(0, args.samples)
            x, t, name = x_all[pick], t_all[pick], "MNIST"
    if name == "random":
        x, t = rng.random((args.samples, 784)), rng.integers(0, 10, args.samples)
    net = make_net(args, 784, 10, args.hidden or [50], seed, backend)
    if args.dtype == "float32":
        say("note: float32 central differences (h=1e-4) are too coarse to agree closely; use float64")
    n_params = sum(int(p.size) for p in net.params.values())
    compile_note(backend)
    if set_conv_biases(net, rng):
        say("note: the conv net's biases are drawn from N(0, 0.1^2) for the check: with the book's zero "
            "biases every blank pixel puts a ReLU input exactly on its kink, where no two gradients agree")
    if dropout_off(net):
        say("note: dropout is off for the check (ratio 0): backprop draws random masks while the numerical "
            "gradient differentiates the test-mode loss, so with dropout on they measure different functions")
    say(f"net: {net!r}, {n_params} parameters; {args.samples} {name} sample(s), seed {seed}")
    xs, ts = backend.asarray(x, dtype=net.dtype), backend.asarray(t.astype(numpy.int64))
    start = time.perf_counter()
    numerical = net.numerical_gradient(xs, ts)
    mid = time.perf_counter()
    backprop = net.gradient(xs, ts)
    end = time.perf_counter()
    exact = book_loss_backprop(net, xs, ts, backprop)
    if exact is not None:
        backprop = exact
        say("note: backprop leaves out the 1e-7 the book's loss adds inside its log; each sample's gradient "
            "is scaled by y_t / (y_t + 1e-7), that term's own derivative, so both sides differentiate one loss")
    from .kinks import away_from_kinks, kink_units

    kinks = kink_units(net, xs) or {}
    failed, at_kinks, rechecked, fine = [], [], [], None
    say(f"{'param':<8}{'shape':>12}  {'mean |diff|':>12}  {'max |diff|':>12}")
    for key in net.params:
        diff = numpy.abs(backend.to_numpy(backprop[key]) - backend.to_numpy(numerical[key]))
        mean, worst = float(diff.mean()), float(diff.max())
        ok = mean <= args.tol and numpy.isfinite(mean)
        verdict = "ok"
        if not ok:
            rest = away_from_kinks(key, diff, kinks)
            if rest is not None and (rest.size == 0 or float(rest.mean()) <= args.tol):
                verdict = "ok away from kinks"  # only entries that feed a kink disagree
                at_kinks.append(key)
            elif (fine := closer_look(net, fine, xs, ts)) is not None and float(numpy.abs(
                    backend.to_numpy(backprop[key]) - backend.to_numpy(fine[key])).mean()) <= args.tol:
                verdict = f"ok at h={SMALL_H:g}"
                rechecked.append(key)
            else:
                verdict = "FAIL"
                failed.append(key)
        shape = "x".join(map(str, net.params[key].shape))
        say(f"{key:<8}{shape:>12}  {mean:12.3e}  {worst:12.3e}  {verdict}")
    say(f"numerical gradient {mid - start:.2f} s, backprop {(end - mid) * 1e3:.2f} ms on {backend.name}")
    if at_kinks:
        units = ", ".join(f"layer {i}: {len(u)} unit(s)" for i, u in kinks.items() if len(u))
        say(f"kinks: some samples put ReLU inputs within h=1e-4 of 0 ({units}). There ReLU has no slope, "
             f"so the central difference averages two slopes and differs from backprop although both are "
             f"right; {', '.join(at_kinks)} agree within --tol once those units are left out")
    if rechecked:
        say(f"kinks: {', '.join(rechecked)} differ at h=1e-4 but agree within --tol at h={SMALL_H:g}: some ReLU "
            f"input or max-pooling near-tie lies within 1e-4 of them, where the central difference averages "
            f"two slopes")
    if failed:
        say(f"FAILED: mean |diff| above {args.tol:g} for {', '.join(failed)}")
        return EXIT_FAIL
    say(f"passed: every mean |diff| <= {args.tol:g}" + (" (away from ReLU kinks)" if at_kinks else ""))
    return 0


SMALL_H = 1e-7  # float64 central differences keep ~1e-8 there; kinks within reach are 1000x rarer


def set_conv_biases(net: Any, rng: Any) -> bool:
    """Draw a conv net's biases from N(0, 0.1^2) in place; whether `net` is a conv net."""
    from .convnets import ConvNet

    if not isinstance(net, ConvNet):
        return False
    for key, p in net.params.items():
        if key.startswith("b"):
            p[...] = net.backend.asarray(rng.normal(0.0, 0.1, p.shape), dtype=p.dtype)
    return True


def closer_look(net: Any, fine: Any, x: Any, t: Any) -> Any:
    """The numerical gradient at h = SMALL_H (computed once: `fine`, if given), for a float64 net.

    A kink within h of a parameter's value bends the central difference; at a
    much smaller h almost none is within reach, while a wrong backprop stays
    wrong. None for float32 nets, whose losses cannot resolve such an h.
    """
    import numpy

    if fine is not None or net.dtype != numpy.float64:
        return fine
    return net.numerical_gradient(x, t, h=SMALL_H)


def book_loss_backprop(net: Any, x: Any, t: Any, batch: dict[str, Any]) -> Any:
    """Backprop of the book's loss -log(y_t + 1e-7) itself, from `batch` (the net's own backprop of
    the whole batch), or None for batch-norm nets (a sample's gradient depends on the others).

    Backprop drops the 1e-7, so sample n's share of the gradient should be
    scaled by c_n = y_t / (y_t + 1e-7): the batch gradient minus the mean of
    (1 - c_n) times each sample's own gradient. The whole-batch backprop is
    what gets checked; the per-sample gradients only enter that small term.
    """
    import numpy

    from .functions import softmax

    if getattr(net, "use_batchnorm", False):
        return None
    xc, tc = net.checked_batch(x, t)
    to_numpy = net.backend.to_numpy
    y = numpy.asarray(to_numpy(softmax(net.predict(xc))), dtype=numpy.float64)
    labels = to_numpy(tc) if tc.ndim == 1 else numpy.argmax(to_numpy(tc), axis=1)
    y_t = y[numpy.arange(len(y)), labels]
    share = 1e-7 / (y_t + 1e-7)  # 1 - c_n
    exact = dict(batch)
    for i in range(len(y)):
        for key, g in net.gradient(xc[i:i + 1], tc[i:i + 1]).items():
            exact[key] = exact[key] - (float(share[i]) / len(y)) * g
    return exact


def dropout_off(net: Any) -> bool:
    """Set every Dropout layer of `net` to ratio 0 (train and test mode then compute one loss);
    whether there was one to set."""
    from .layers import Dropout

    layers = [layer for layer in getattr(net, "layers", {}).values()
              if isinstance(layer, Dropout) and layer.dropout_ratio]
    for layer in layers:
        layer.dropout_ratio = 0.0
    return bool(layers)
