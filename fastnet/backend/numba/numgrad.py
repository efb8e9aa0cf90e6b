"""The numerical gradient of a whole net, computed exactly but incrementally.

For every parameter p the book's loop evaluates the loss twice, at p + h and
p - h, each time by a full forward pass. These kernels compute the very same
two losses (each the loss of the perturbed net, in float64) but only redo the
arithmetic that the perturbation changes, layer by layer from the last:

* the last layer's W[j, k] (b[k]) moves score column k by input[n, j] * dw;
  samples whose input j is exactly 0 do not change and are skipped
  (``numgrad_layers.second_layer_changes``);
* the layer before it: W[i, j] moves pre-activation j by input[n, i] * dw,
  and nothing for samples with input[n, i] == 0; the unit's change
  dh = act(a + x dw) - act(a) moves the scores by dh * W_last[j, :], and with
  relu dh is often exactly 0 (``first_layer_changes``);
* layers further back: the unit's change is replayed through every later
  layer (``numgrad_deep.deep_layer_changes``).

A changed sample's loss term is recomputed in full from its new scores (its
softmax shift provably keeps every exp finite), and the loss of the perturbed
net is the old total plus the changes of those terms, plus the change of the
weight-decay term. No Taylor expansion, no derivative: every f(p +- h) is the
true loss, within rounding (tests compare it with a plain forward pass of the
perturbed net at 1e-12).

The exp and log are ``fastmath.exp64/log64`` (vectorisable, within 1 ulp of
libm); unperturbed terms use the same functions so an unchanged sample
contributes exactly 0. Where a perturbation moves every score of a sample by
at most 1/16, the layer before the last takes e^(z + dz) as e^z (once per
sample) times ``exp_small(dz)``, a third of the arithmetic; e^0 is exactly 1,
so unchanged samples still contribute exactly 0. Hidden units run in parallel (``prange``); every entry
is summed by one thread in a fixed order, so results do not depend on the
thread count.
"""

from __future__ import annotations

import numpy as np

from .numgrad_deep import any_depth_changes, deep_layer_changes
from .numgrad_layers import first_layer_changes, second_layer_changes
from .numgrad_terms import hidden_of, sample_terms


def perturbed(p: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """(p + h, p - h) as the book's loop stores them in p's dtype, as float64.

    The loop writes ``float(p) + h`` (rounded once to p's dtype) and
    ``p - h`` (NumPy arithmetic in p's dtype); for float64 both are plain.
    """
    plus = (p.astype(np.float64) + h).astype(p.dtype).astype(np.float64)
    minus = (p - p.dtype.type(h)).astype(np.float64)
    return plus, minus


def labels_of(t: np.ndarray) -> np.ndarray:
    """Class indices as int64: t itself, or the argmax of one-hot rows (as the loss does)."""
    return (t if t.ndim == 1 else t.argmax(axis=1)).astype(np.int64)


def net_losses(
    params: dict[str, np.ndarray], depth: int, act: int, lam: float,
    x: np.ndarray, t: np.ndarray, h: float, *, any_depth: bool = False,
    part: tuple[str, int, int] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The loss at p + h and at p - h for every parameter p: two dicts like params.

    All arithmetic in float64, whatever the net's dtype. Depth 2 runs the
    vectorised kernels, other depths (or ``any_depth=True``) the general one.
    BLAS is left to the caller (hold it to one thread: the kernels use all cores).

    ``part=(name, start, stop)``: only the entries ``start:stop`` of the flat
    ``params[name]``, as two dicts of one flat array each, bit for bit equal to
    the same entries of the whole (see ``_changes_part``: only the kernel of
    the layer owning `name` runs, on the rows / units the range touches).
    """
    x64 = np.ascontiguousarray(x, dtype=np.float64)
    n = x64.shape[0]
    lab = labels_of(t)
    P = {name: np.ascontiguousarray(params[name], dtype=np.float64) for name in _names(depth)}
    pert = {name: perturbed(params[name], h) for name in _names(depth)}
    # the unperturbed net, with the kernels' own activation and exp/log
    inputs = [x64]
    pre = []
    for l in range(1, depth + 1):
        a = inputs[-1] @ P[f"W{l}"] + P[f"b{l}"]
        pre.append(a)
        if l < depth:
            hid = np.empty_like(a)
            hidden_of(a, act, hid)
            inputs.append(hid)
    Z = pre[-1]
    row_max = np.empty(n)
    terms = np.empty(n)
    sample_terms(Z, lab, row_max, terms)
    base = float(np.sum(terms))
    decay = 0.5 * lam * float(sum(np.sum(P[f"W{l}"] ** 2) for l in range(1, depth + 1))) if lam else 0.0

    if part is not None and not any_depth:
        name, start, stop = part
        start, stop, _ = slice(start, stop).indices(P[name].size)
        stop = max(start, stop)
        cp, cm = _changes_part(lab, P, pert, pre, inputs, row_max, terms, act, depth,
                               name, start, stop)
        fplus_p: dict[str, np.ndarray] = {}
        fminus_p: dict[str, np.ndarray] = {}
        for sign, chg, out in ((0, cp, fplus_p), (1, cm, fminus_p)):
            loss = (base + chg) / n + decay
            if lam and name.startswith("W"):  # the decay term of the moved weight
                old = P[name].reshape(-1)[start:stop]
                new = pert[name][sign].reshape(-1)[start:stop]
                loss = loss + 0.5 * lam * ((new - old) * (new + old))
            out[name] = loss
        return fplus_p, fminus_p
    if any_depth:  # the plain general kernel (a cross-check for the layered one)
        changes = _changes_any_depth(x64, lab, P, pert, pre, inputs, terms, act, depth)
    else:
        changes = _changes_by_layer(lab, P, pert, pre, inputs, row_max, terms, act, depth)

    fplus: dict[str, np.ndarray] = {}
    fminus: dict[str, np.ndarray] = {}
    for name in _names(depth):
        for sign, out in ((0, fplus), (1, fminus)):
            loss = (base + changes[name][sign]) / n + decay
            if lam and name.startswith("W"):  # the decay term of the moved weight
                old, new = P[name], pert[name][sign]
                loss = loss + 0.5 * lam * ((new - old) * (new + old))
            out[name] = loss
    return fplus, fminus


def _names(depth: int) -> list[str]:
    return [f"{kind}{l}" for l in range(1, depth + 1) for kind in ("W", "b")]


def _layer_inputs(inputs: np.ndarray, dplus_W, dminus_W, dplus_b, dminus_b):  # type: ignore[no-untyped-def]
    """A layer's nonzero inputs as sparse rows (its bias as one more input, value 1) and its
    perturbations as (outputs, inputs + 1) tables, as the first-layer kernels take them."""
    n, n_in = inputs.shape
    dplus = np.empty((dplus_W.shape[1], n_in + 1))
    dminus = np.empty((dplus_W.shape[1], n_in + 1))
    dplus[:, :n_in] = dplus_W.T
    dminus[:, :n_in] = dminus_W.T
    dplus[:, n_in] = dplus_b
    dminus[:, n_in] = dminus_b
    d_max = np.maximum(np.abs(dplus).max(axis=1), np.abs(dminus).max(axis=1))
    xb = np.concatenate([inputs, np.ones((n, 1))], axis=1)
    mask = xb != 0
    nz_ptr = np.zeros(n + 1, np.int64)
    np.cumsum(mask.sum(axis=1), out=nz_ptr[1:])
    nz_idx = np.nonzero(mask)[1].astype(np.int64)
    return nz_ptr, nz_idx, xb[mask], np.abs(xb).max(axis=1), dplus, dminus, d_max


def _changes_by_layer(lab, P, pert, pre, inputs, row_max, terms, act, depth):  # type: ignore[no-untyped-def]
    """Term changes of every parameter: the last layer, the one before, then the rest."""
    Z = pre[-1]
    out = {}
    # last layer: W and b as one (inputs + 1, k_out) table, the bias as input row
    W, b = P[f"W{depth}"], P[f"b{depth}"]
    dplus = np.concatenate([pert[f"W{depth}"][0] - W, (pert[f"b{depth}"][0] - b)[None]])
    dminus = np.concatenate([pert[f"W{depth}"][1] - W, (pert[f"b{depth}"][1] - b)[None]])
    cp, cm = np.empty_like(dplus), np.empty_like(dplus)
    second_layer_changes(lab, inputs[depth - 1], np.ascontiguousarray(Z.T), row_max, terms,
                         dplus, dminus, cp, cm)
    out[f"W{depth}"], out[f"b{depth}"] = (cp[:-1], cm[:-1]), (cp[-1], cm[-1])
    if depth == 1:
        return out

    sizes = np.array([inputs[0].shape[1]] + [P[f"W{l}"].shape[1] for l in range(1, depth + 1)],
                     np.int64)
    Ws = np.concatenate([P[f"W{l}"].reshape(-1) for l in range(1, depth + 1)])
    w_off = np.cumsum([0] + [P[f"W{l}"].size for l in range(1, depth)]).astype(np.int64)
    As = np.concatenate([a.reshape(-1) for a in pre])
    a_off = np.cumsum([0] + [a.size for a in pre[:-1]]).astype(np.int64)
    Hs = np.concatenate([h.reshape(-1) for h in inputs])
    h_off = np.cumsum([0] + [h.size for h in inputs[:-1]]).astype(np.int64)
    for l in range(depth - 1, 0, -1):  # 1-based layer l, whose outputs feed layer l + 1
        W, b = P[f"W{l}"], P[f"b{l}"]
        nz_ptr, nz_idx, nz_val, x_max, dplus, dminus, d_max = _layer_inputs(
            inputs[l - 1], pert[f"W{l}"][0] - W, pert[f"W{l}"][1] - W,
            pert[f"b{l}"][0] - b, pert[f"b{l}"][1] - b)
        cp, cm = np.empty_like(dplus), np.empty_like(dplus)
        if l == depth - 1:  # the next layer is the last: scores move along one row of it
            first_layer_changes(nz_ptr, nz_idx, nz_val, x_max, lab, pre[l - 1], inputs[l],
                                P[f"W{depth}"], Z, row_max, terms, act, dplus, dminus, d_max,
                                cp, cm)
        else:
            deep_layer_changes(nz_ptr, nz_idx, nz_val, x_max, lab, l - 1, sizes, pre[l - 1],
                               inputs[l], Ws, w_off, As, a_off, Hs, h_off, terms, act,
                               dplus, dminus, d_max, cp, cm, 0)
        n_in = W.shape[0]
        out[f"W{l}"] = (cp[:, :n_in].T, cm[:, :n_in].T)
        out[f"b{l}"] = (cp[:, n_in], cm[:, n_in])
    return out


def _row_span(n_rows: int, width: int, name: str, start: int, stop: int):  # type: ignore[no-untyped-def]
    """What flat entries start:stop of W (n_rows x width) or b (width) touch, as the
    first-layer tables see them: (columns c0:c1 of the (width, n_rows + 1) table, the
    bias being column n_rows; units j0:j1; offset of entry `start` in the block
    (c1 - c0, j1 - j0) flattened). A range within one row of W needs only its units."""
    if name.startswith("b"):
        return n_rows, n_rows + 1, start, stop, 0
    i0, i1 = start // width, (stop - 1) // width + 1
    j0, j1 = (start % width, (stop - 1) % width + 1) if i1 - i0 == 1 else (0, width)
    return i0, i1, j0, j1, start - (i0 * width + j0)


def _changes_part(lab, P, pert, pre, inputs, row_max, terms, act, depth, name, start, stop):  # type: ignore[no-untyped-def]
    """Summed term changes (plus, minus) of the flat entries start:stop of `name` only.

    Every entry comes out of the same kernel with the same arithmetic and the
    same order over samples as in ``_changes_by_layer``: the kernels' lanes
    are independent (no sum across lanes), so dropping lanes (inputs outside
    the touched rows) or whole parallel units (hidden units, rows of the last
    layer) leaves the other entries' bits alone. What decides whether a
    sample is skipped (x_max, d_max) stays that of the whole layer.
    Layers two or more before the last keep every lane of the units they run
    (``_deep_part``): there the lanes share matrix products, whose rounding
    may depend on how many there are.
    """
    if stop <= start:
        return np.zeros(0), np.zeros(0)
    l = int(name[1:])
    if l < depth - 1:  # all the inputs (lanes) of the units the range touches
        return _deep_part(lab, P, pert, pre, inputs, terms, act, depth, name, start, stop)
    W, b = P[f"W{l}"], P[f"b{l}"]
    n_in, width = W.shape
    Z = pre[-1]
    if l == depth:
        # last layer: rows i0:i1 of the (inputs + 1, k_out) table and its bias row;
        # the kernel's unit j = (its number of inputs) is the bias
        if name.startswith("b"):
            i0, i1 = 0, 0
        else:
            i0, i1 = start // width, (stop - 1) // width + 1
        rows = slice(i0, i1)
        dplus = np.concatenate([pert[f"W{l}"][0][rows] - W[rows], (pert[f"b{l}"][0] - b)[None]])
        dminus = np.concatenate([pert[f"W{l}"][1][rows] - W[rows], (pert[f"b{l}"][1] - b)[None]])
        cp, cm = np.empty_like(dplus), np.empty_like(dplus)
        second_layer_changes(lab, np.ascontiguousarray(inputs[l - 1][:, rows]),
                             np.ascontiguousarray(Z.T), row_max, terms, dplus, dminus, cp, cm)
        if name.startswith("b"):
            return cp[-1][start:stop], cm[-1][start:stop]
        off = start - i0 * width
        return cp[:-1].reshape(-1)[off: off + stop - start], cm[:-1].reshape(-1)[off: off + stop - start]
    # the layer before the last: columns (inputs) c0:c1 and units j0:j1 of its tables
    nz_ptr, nz_idx, nz_val, x_max, dplus, dminus, d_max = _layer_inputs(
        inputs[l - 1], pert[f"W{l}"][0] - W, pert[f"W{l}"][1] - W,
        pert[f"b{l}"][0] - b, pert[f"b{l}"][1] - b)
    c0, c1, j0, j1, off = _row_span(n_in, width, name, start, stop)
    keep = (nz_idx >= c0) & (nz_idx < c1)
    kept = np.zeros(keep.size + 1, np.int64)
    np.cumsum(keep, out=kept[1:])
    units = slice(j0, j1)
    dplus = np.ascontiguousarray(dplus[units, c0:c1])
    dminus = np.ascontiguousarray(dminus[units, c0:c1])
    cp, cm = np.empty_like(dplus), np.empty_like(dplus)
    first_layer_changes(kept[nz_ptr], nz_idx[keep] - c0, nz_val[keep], x_max, lab,
                        np.ascontiguousarray(pre[l - 1][:, units]),
                        np.ascontiguousarray(inputs[l][:, units]),
                        np.ascontiguousarray(P[f"W{depth}"][units]), Z, row_max, terms, act,
                        dplus, dminus, np.ascontiguousarray(d_max[units]), cp, cm)
    # the block (c1 - c0, j1 - j0) in W's layout: rows = inputs, columns = units
    return (np.ascontiguousarray(cp.T).reshape(-1)[off: off + stop - start],
            np.ascontiguousarray(cm.T).reshape(-1)[off: off + stop - start])


def _deep_part(lab, P, pert, pre, inputs, terms, act, depth, name, start, stop):  # type: ignore[no-untyped-def]
    """``_changes_part`` for a layer two or more before the last: the units j0:j1
    the range touches (of b: its own; of W: those of its row, or all of them when
    it spans rows), each with all its lanes, as in the whole."""
    l = int(name[1:])
    W, b = P[f"W{l}"], P[f"b{l}"]
    n_in, width = W.shape
    _, _, j0, j1, _ = _row_span(n_in, width, name, start, stop)
    sizes = np.array([inputs[0].shape[1]] + [P[f"W{m}"].shape[1] for m in range(1, depth + 1)],
                     np.int64)
    Ws = np.concatenate([P[f"W{m}"].reshape(-1) for m in range(1, depth + 1)])
    w_off = np.cumsum([0] + [P[f"W{m}"].size for m in range(1, depth)]).astype(np.int64)
    As = np.concatenate([a.reshape(-1) for a in pre])
    a_off = np.cumsum([0] + [a.size for a in pre[:-1]]).astype(np.int64)
    Hs = np.concatenate([h.reshape(-1) for h in inputs])
    h_off = np.cumsum([0] + [h.size for h in inputs[:-1]]).astype(np.int64)
    nz_ptr, nz_idx, nz_val, x_max, dplus, dminus, d_max = _layer_inputs(
        inputs[l - 1], pert[f"W{l}"][0] - W, pert[f"W{l}"][1] - W,
        pert[f"b{l}"][0] - b, pert[f"b{l}"][1] - b)
    units = slice(j0, j1)
    dplus = np.ascontiguousarray(dplus[units])
    dminus = np.ascontiguousarray(dminus[units])
    cp, cm = np.empty_like(dplus), np.empty_like(dplus)
    deep_layer_changes(nz_ptr, nz_idx, nz_val, x_max, lab, l - 1, sizes, pre[l - 1], inputs[l],
                       Ws, w_off, As, a_off, Hs, h_off, terms, act, dplus, dminus,
                       np.ascontiguousarray(d_max[units]), cp, cm, j0)
    if name.startswith("b"):
        return cp[:, n_in].copy(), cm[:, n_in].copy()
    cpw = np.ascontiguousarray(cp[:, :n_in].T).reshape(-1)
    cmw = np.ascontiguousarray(cm[:, :n_in].T).reshape(-1)
    if j1 - j0 == width:  # all units: the rows in W's own layout
        return cpw[start:stop], cmw[start:stop]
    row = start // width * (j1 - j0)  # one row, units j0:j1: the block's row start // width
    return cpw[row: row + stop - start], cmw[row: row + stop - start]


def _changes_any_depth(x64, lab, P, pert, pre, inputs, terms, act, depth):  # type: ignore[no-untyped-def]
    sizes = np.array([x64.shape[1]] + [P[f"W{l}"].shape[1] for l in range(1, depth + 1)], np.int64)

    def table(l: int, sign: int | None) -> np.ndarray:
        W, b = (P[f"W{l}"], P[f"b{l}"]) if sign is None else (
            pert[f"W{l}"][sign] - P[f"W{l}"], pert[f"b{l}"][sign] - P[f"b{l}"])
        return np.concatenate([W, b[None]]).reshape(-1)

    def flat(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.zeros(len(parts), np.int64)
        np.cumsum([p.size for p in parts[:-1]], out=offsets[1:])
        return np.concatenate([p.reshape(-1) for p in parts]), offsets

    W, w_off = flat([table(l, None) for l in range(1, depth + 1)])
    dplus, _ = flat([table(l, 0) for l in range(1, depth + 1)])
    dminus, _ = flat([table(l, 1) for l in range(1, depth + 1)])
    A, a_off = flat(pre)
    H, h_off = flat(inputs)  # H[h_off[0]] is x itself (unused: the kernel reads x)
    chg_plus = np.empty_like(W)
    chg_minus = np.empty_like(W)
    any_depth_changes(sizes, x64, lab, W, w_off, A, a_off, H, h_off, terms, act,
                      dplus, dminus, chg_plus, chg_minus)
    out = {}
    for l in range(1, depth + 1):
        rows, cols = sizes[l - 1] + 1, sizes[l]
        cp = chg_plus[w_off[l - 1]: w_off[l - 1] + rows * cols].reshape(rows, cols)
        cm = chg_minus[w_off[l - 1]: w_off[l - 1] + rows * cols].reshape(rows, cols)
        out[f"W{l}"] = (cp[:-1], cm[:-1])
        out[f"b{l}"] = (cp[-1], cm[-1])
    return out
