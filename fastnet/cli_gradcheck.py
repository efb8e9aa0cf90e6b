"""``fastnet gradcheck``: the book's gradient check, numerical gradient against backprop."""

from __future__ import annotations

import argparse
import time
from typing import Any

from .cli_common import (
    EXIT_FAIL,
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
    from .kinks import away_from_kinks, kink_units

    kinks = kink_units(net, xs) or {}
    failed, at_kinks = [], []
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
    if failed and any(p.ndim == 4 for p in net.params.values()):
        say("note: in a conv net, ReLU inputs within h=1e-4 of 0 and pooling windows whose two largest "
            "inputs are within h of each other are kinks: there the central difference averages two "
            "slopes and differs from backprop for every parameter before them, although both are right; "
            "this check locates kinks in dense nets only")
    if failed:
        say(f"FAILED: mean |diff| above {args.tol:g} for {', '.join(failed)}")
        return EXIT_FAIL
    say(f"passed: every mean |diff| <= {args.tol:g}" + (" (away from ReLU kinks)" if at_kinks else ""))
    return 0


def dropout_off(net: Any) -> bool:
    """Set every Dropout layer of `net` to ratio 0 (train and test mode then compute one loss);
    whether there was one to set."""
    from .layers import Dropout

    layers = [layer for layer in getattr(net, "layers", {}).values()
              if isinstance(layer, Dropout) and layer.dropout_ratio]
    for layer in layers:
        layer.dropout_ratio = 0.0
    return bool(layers)
