"""The numerical gradient of a whole net, computed exactly but incrementally.

For every parameter p the book's loop evaluates the loss twice, at p + h and
p - h, each time by a full forward pass. These kernels compute the very same
two losses (each the loss of the perturbed net, in float64) but only redo the
arithmetic that the perturbation changes:

* W1[i, j] moves column j of the first pre-activation by x[n, i] * dw, and
  nothing at all for samples with x[n, i] == 0 (exactly: they are skipped).
  The hidden change dh[n] = act(a + x dw) - act(a) then moves the scores by
  dh[n] * W2[j, :]; with relu, dh is often exactly 0 and the sample is skipped.
* b1[j] is the same with x[n, i] replaced by 1.
* W2[j, k] and b2[k] move one score column.

A changed sample's loss term is recomputed in full from its new scores (its
softmax uses a shift that provably keeps every exp finite: the old row
maximum plus the largest increase dh * W2[j, k]), and the loss of the
perturbed net is the old total plus the changes of those terms, plus the
change of the weight-decay term. No Taylor expansion, no derivative: every
f(p +- h) is the true loss, within rounding (tests compare it with a plain
forward pass of the perturbed net at 1e-12).

The exp and log are ``fastmath.exp64/log64`` (vectorisable, within 1 ulp of
libm); unperturbed terms use the same functions so an unchanged sample
contributes exactly 0. Rows of W1 run in parallel (``prange``).

``losses_generic`` handles nets of any depth the same way but replays the
whole rest of the net for each changed sample (compiled, parallel, slower).
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (np.dot in njit uses it: load it before BLAS limits)

from .fastmath import exp64, log64

_CE_DELTA = 1e-7
_opts = dict(cache=True, error_model="numpy")


@numba.njit(inline="always", **_opts)
def _act(a, relu):  # type: ignore[no-untyped-def]
    if relu:
        return a if a > 0.0 else 0.0
    return 1.0 / (1.0 + exp64(-a))


@numba.njit(**_opts)
def sample_terms(z, lab, row_max, terms):  # type: ignore[no-untyped-def]
    """terms[n] = -log(softmax(z[n])[lab[n]] + 1e-7), row_max[n] = max z[n]."""
    n_samples, k_out = z.shape
    for n in range(n_samples):
        top = z[n, 0]
        for k in range(1, k_out):
            top = max(top, z[n, k])
        row_max[n] = top
        total = 0.0
        picked = 0.0
        for k in range(k_out):
            e = exp64(z[n, k] - top)
            total += e
            if k == lab[n]:
                picked = e
        terms[n] = -log64(picked / total + _CE_DELTA)


@numba.njit(**_opts)
def hidden_of(a, relu, out):  # type: ignore[no-untyped-def]
    """out = act(a), elementwise (the same act the kernels use)."""
    n, m = a.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = _act(a[i, j], relu)


@numba.njit(parallel=True, **_opts)
def first_layer_changes(
    nz_ptr, nz_idx, nz_val, x_max, lab, A, Hh, W2, Z, row_max, terms, relu,
    dplus, dminus, d_max, chg_plus, chg_minus,
):  # type: ignore[no-untyped-def]
    """Summed changes of the per-sample loss terms for every W1[i, j] (and b1[j]).

    Inputs are sparse rows: sample n touches inputs nz_idx[nz_ptr[n]:nz_ptr[n+1]]
    with values nz_val (the bias is the extra input D, value 1). dplus[j, i] and
    dminus[j, i] are the perturbations (p + h) - p and (p - h) - p of W1[i, j]
    (column D: b1[j]); d_max[j] bounds their size, x_max[n] the inputs'.
    chg_plus[j, i] = sum over samples of (term with W1[i, j] + h) - (old term).

    Hidden units run in parallel; for one unit and one sample, the lanes of
    the inner loops are that sample's nonzero inputs, so they vectorise.
    """
    n_samples = A.shape[0]
    n_hid, n_cols = dplus.shape
    k_out = W2.shape[1]
    for j in numba.prange(n_hid):
        w_hi = W2[j, 0]
        w_lo = W2[j, 0]
        for k in range(1, k_out):
            w_hi = max(w_hi, W2[j, k])
            w_lo = min(w_lo, W2[j, k])
        xv = np.empty(n_cols)
        dp = np.empty(n_cols)
        dm = np.empty(n_cols)
        hp = np.empty(n_cols)
        hm = np.empty(n_cols)
        shp = np.empty(n_cols)
        shm = np.empty(n_cols)
        sp = np.empty(n_cols)
        sm = np.empty(n_cols)
        cp = np.empty(n_cols)
        cm = np.empty(n_cols)
        for col in range(n_cols):
            chg_plus[j, col] = 0.0
            chg_minus[j, col] = 0.0
        for n in range(n_samples):
            a = A[n, j]
            h0 = Hh[n, j]
            # relu: an off unit that no perturbation can switch on changes nothing
            if relu and h0 == 0.0 and a + 2.0 * x_max[n] * d_max[j] < 0.0:
                continue
            start = nz_ptr[n]
            c = nz_ptr[n + 1] - start
            for l in range(c):
                col = nz_idx[start + l]
                xv[l] = nz_val[start + l]
                dp[l] = dplus[j, col]
                dm[l] = dminus[j, col]
            top = row_max[n]
            for l in range(c):
                up = _act(a + xv[l] * dp[l], relu) - h0
                um = _act(a + xv[l] * dm[l], relu) - h0
                hp[l] = up
                hm[l] = um
                # shift >= the new row maximum, so no exp below overflows
                shp[l] = top + (up * w_hi if up > 0.0 else up * w_lo)
                shm[l] = top + (um * w_hi if um > 0.0 else um * w_lo)
                sp[l] = 0.0
                sm[l] = 0.0
            label = lab[n]
            for k in range(k_out):
                z = Z[n, k]
                w = W2[j, k]
                hit = k == label
                for l in range(c):  # the hot loop: two exps per lane
                    up = exp64(z + hp[l] * w - shp[l])
                    um = exp64(z + hm[l] * w - shm[l])
                    sp[l] += up
                    sm[l] += um
                    if hit:  # the true class's term, kept for the loss
                        cp[l] = up
                        cm[l] = um
            old = terms[n]
            for l in range(c):
                cp[l] = -log64(cp[l] / sp[l] + _CE_DELTA) - old
                cm[l] = -log64(cm[l] / sm[l] + _CE_DELTA) - old
            for l in range(c):
                col = nz_idx[start + l]
                chg_plus[j, col] += cp[l]
                chg_minus[j, col] += cm[l]


@numba.njit(parallel=True, **_opts)
def second_layer_changes(lab, Hh, Zt, row_max, terms, dplus, dminus, chg_plus, chg_minus):  # type: ignore[no-untyped-def]
    """Summed term changes for every W2[j, k]; row j = n_hid is b2 (input 1).

    Zt is the transposed scores (k_out, n_samples). dplus[j, k], dminus[j, k]:
    the perturbations of W2[j, k] (row n_hid: b2[k]). Lanes are samples; a
    sample whose unit j is off (relu) moves by exactly 0 and adds exactly 0.
    """
    n_samples, n_hid = Hh.shape
    k_out = Zt.shape[0]
    for j in numba.prange(n_hid + 1):
        up = np.empty(n_samples)
        um = np.empty(n_samples)
        shp = np.empty(n_samples)
        shm = np.empty(n_samples)
        sp = np.empty(n_samples)
        sm = np.empty(n_samples)
        ep = np.empty(n_samples)
        em = np.empty(n_samples)
        for k in range(k_out):
            for n in range(n_samples):
                hv = 1.0 if j == n_hid else Hh[n, j]
                a = hv * dplus[j, k]
                b = hv * dminus[j, k]
                up[n] = a
                um[n] = b
                shp[n] = row_max[n] + max(a, 0.0)  # only score k moves
                shm[n] = row_max[n] + max(b, 0.0)
                sp[n] = 0.0
                sm[n] = 0.0
                ep[n] = 0.0
                em[n] = 0.0
            for kk in range(k_out):
                for n in range(n_samples):
                    z = Zt[kk, n]
                    zp = z + up[n] if kk == k else z
                    zm = z + um[n] if kk == k else z
                    vp = exp64(zp - shp[n])
                    vm = exp64(zm - shm[n])
                    sp[n] += vp
                    sm[n] += vm
                    hit = lab[n] == kk
                    ep[n] = vp if hit else ep[n]
                    em[n] = vm if hit else em[n]
            total_p = 0.0
            total_m = 0.0
            for n in range(n_samples):
                sp[n] = -log64(ep[n] / sp[n] + _CE_DELTA) - terms[n]
                sm[n] = -log64(em[n] / sm[n] + _CE_DELTA) - terms[n]
            for n in range(n_samples):
                total_p += sp[n]
                total_m += sm[n]
            chg_plus[j, k] = total_p
            chg_minus[j, k] = total_m


@numba.njit(inline="always", **_opts)
def _term(scores, label):  # type: ignore[no-untyped-def]
    """-log(softmax(scores)[label] + 1e-7), shifted by the row maximum (as ``sample_terms``)."""
    top = scores[0]
    for k in range(1, scores.shape[0]):
        top = max(top, scores[k])
    total = 0.0
    picked = 0.0
    for k in range(scores.shape[0]):
        e = exp64(scores[k] - top)
        total += e
        if k == label:
            picked = e
    return -log64(picked / total + _CE_DELTA)


@numba.njit(parallel=True, **_opts)
def any_depth_changes(
    sizes, x, lab, W, w_off, A, a_off, H, h_off, terms, relu, dplus, dminus, chg_plus, chg_minus,
):  # type: ignore[no-untyped-def]
    """Summed term changes for every parameter of a net of any depth.

    Layer l maps sizes[l] inputs to sizes[l + 1] outputs. Flat float64 arrays:
    W holds each layer's weights followed by its bias (a table of
    sizes[l] + 1 rows at w_off[l], the bias as input row sizes[l]); A the
    pre-activations (n_samples x sizes[l + 1] at a_off[l]); H the hidden
    outputs act(A) that feed layer l >= 1 (n_samples x sizes[l] at h_off[l]);
    dplus/dminus and chg_plus/chg_minus are laid out like W.

    A parameter of layer l changes one pre-activation of the samples whose
    input to it is nonzero; each such sample is replayed through the rest of
    the net, where only what changed is recomputed (relu units that stay off
    are skipped). Work units (layer, input row) run in parallel.
    """
    depth = sizes.shape[0] - 1
    n_samples = x.shape[0]
    width = 0
    for l in range(depth + 1):
        width = max(width, sizes[l])
    n_units = 0
    for l in range(depth):
        n_units += sizes[l] + 1
    for unit in numba.prange(n_units):
        l = 0
        first = 0  # the first unit of layer l
        while unit - first > sizes[l]:
            first += sizes[l] + 1
            l += 1
        i = unit - first
        n_in = sizes[l]
        n_out = sizes[l + 1]
        cur = np.empty(width)
        nxt = np.empty(width)
        for j in range(n_out):
            pos = w_off[l] + i * n_out + j
            total_p = 0.0
            total_m = 0.0
            for n in range(n_samples):
                if i == n_in:
                    v = 1.0
                elif l == 0:
                    v = x[n, i]
                else:
                    v = H[h_off[l] + n * n_in + i]
                if v == 0.0:
                    continue  # this sample does not see the parameter
                for sign in range(2):
                    delta = v * (dplus[pos] if sign == 0 else dminus[pos])
                    # the moved pre-activation, then the rest of the net
                    for m in range(n_out):
                        cur[m] = A[a_off[l] + n * n_out + m]
                    cur[j] += delta
                    ll = l
                    same = False
                    while ll < depth - 1:
                        m_in = sizes[ll + 1]
                        m_out = sizes[ll + 2]
                        for p in range(m_out):
                            nxt[p] = A[a_off[ll + 1] + n * m_out + p]
                        moved = False
                        for m in range(m_in):
                            dh = _act(cur[m], relu) - H[h_off[ll + 1] + n * m_in + m]
                            if dh != 0.0:
                                moved = True
                                row = w_off[ll + 1] + m * m_out
                                for p in range(m_out):
                                    nxt[p] += dh * W[row + p]
                        if not moved:
                            same = True
                            break
                        for p in range(m_out):
                            cur[p] = nxt[p]
                        ll += 1
                    if same:
                        continue
                    change = _term(cur[: sizes[depth]], lab[n]) - terms[n]
                    if sign == 0:
                        total_p += change
                    else:
                        total_m += change
            chg_plus[pos] = total_p
            chg_minus[pos] = total_m


@numba.njit(**_opts)
def _replay(dh, n, j, layer, sizes, Ws, w_off, As, a_off, Hs, h_off, relu):  # type: ignore[no-untyped-def]
    """Scores of sample n, one row per lane, when unit j of `layer`'s output moves by dh[lane].

    (A function of its own: inside a parallel loop Numba assumes an array
    keeps one shape, and these rows change width from layer to layer.)
    """
    depth = sizes.shape[0] - 1
    lanes = dh.shape[0]
    w1 = sizes[layer + 2]
    row = w_off[layer + 1] + j * w1  # row j of the next layer's weights
    base = As[a_off[layer + 1] + n * w1: a_off[layer + 1] + (n + 1) * w1]
    cur = np.empty((lanes, w1))
    for q in range(lanes):
        for p in range(w1):
            cur[q, p] = base[p] + dh[q] * Ws[row + p]
    for m in range(layer + 1, depth - 1):  # every later hidden layer: one matrix product
        w_in = sizes[m + 1]
        w_out = sizes[m + 2]
        old = Hs[h_off[m + 1] + n * w_in: h_off[m + 1] + (n + 1) * w_in]
        for q in range(lanes):
            for p in range(w_in):
                cur[q, p] = _act(cur[q, p], relu) - old[p]
        W = Ws[w_off[m + 1]: w_off[m + 1] + w_in * w_out].reshape(w_in, w_out)
        moved = np.dot(cur, W)  # rows of lanes that changed nothing are exactly 0
        base = As[a_off[m + 1] + n * w_out: a_off[m + 1] + (n + 1) * w_out]
        for q in range(lanes):
            for p in range(w_out):
                moved[q, p] += base[p]
        cur = moved
    return cur


@numba.njit(parallel=True, **_opts)
def deep_layer_changes(
    nz_ptr, nz_idx, nz_val, x_max, lab, layer, sizes, A_l, H_next, Ws, w_off, As, a_off, Hs, h_off,
    terms, relu, dplus, dminus, d_max, chg_plus, chg_minus,
):  # type: ignore[no-untyped-def]
    """Summed term changes for every weight (and bias) of a layer two or more before the last.

    As ``first_layer_changes``, with the rest of the net replayed for all the
    lanes of one (unit, sample) at once: the lanes are the sample's nonzero
    inputs to this layer, both signs side by side, and each later layer is one
    matrix product (lanes x width) @ W of the rows that moved. A_l / H_next
    are this layer's pre-activations and outputs; Ws, As, Hs hold every
    layer's weights, pre-activations and inputs flat (at w_off, a_off, h_off,
    weights without their bias row).
    """
    depth = sizes.shape[0] - 1
    n_samples = A_l.shape[0]
    n_out, n_cols = dplus.shape
    k_out = sizes[depth]
    for j in numba.prange(n_out):
        dh = np.empty(2 * n_cols)
        col_of = np.empty(n_cols, np.int64)
        for col in range(n_cols):
            chg_plus[j, col] = 0.0
            chg_minus[j, col] = 0.0
        for n in range(n_samples):
            a = A_l[n, j]
            h0 = H_next[n, j]
            if relu and h0 == 0.0 and a + 2.0 * x_max[n] * d_max[j] < 0.0:
                continue
            start = nz_ptr[n]
            c = nz_ptr[n + 1] - start
            for q in range(c):
                col = nz_idx[start + q]
                col_of[q] = col
                v = nz_val[start + q]
                dh[q] = _act(a + v * dplus[j, col], relu) - h0
                dh[c + q] = _act(a + v * dminus[j, col], relu) - h0
            lanes = 2 * c
            cur = _replay(dh[:lanes], n, j, layer, sizes, Ws, w_off, As, a_off, Hs, h_off, relu)
            label = lab[n]
            for q in range(lanes):
                change = _term(cur[q, :k_out], label) - terms[n]
                if q < c:
                    chg_plus[j, col_of[q]] += change
                else:
                    chg_minus[j, col_of[q - c]] += change


# ------------------------------------------------------------------ driver


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
    params: dict[str, np.ndarray], depth: int, relu: bool, lam: float,
    x: np.ndarray, t: np.ndarray, h: float, *, any_depth: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The loss at p + h and at p - h for every parameter p: two dicts like params.

    All arithmetic in float64, whatever the net's dtype. Depth 2 runs the
    vectorised kernels, other depths (or ``any_depth=True``) the general one.
    BLAS is left to the caller (hold it to one thread: the kernels use all cores).
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
            hidden_of(a, relu, hid)
            inputs.append(hid)
    Z = pre[-1]
    row_max = np.empty(n)
    terms = np.empty(n)
    sample_terms(Z, lab, row_max, terms)
    base = float(np.sum(terms))
    decay = 0.5 * lam * float(sum(np.sum(P[f"W{l}"] ** 2) for l in range(1, depth + 1))) if lam else 0.0

    if any_depth:  # the plain general kernel (a cross-check for the layered one)
        changes = _changes_any_depth(x64, lab, P, pert, pre, inputs, terms, relu, depth)
    else:
        changes = _changes_by_layer(lab, P, pert, pre, inputs, row_max, terms, relu, depth)

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


def _changes_by_layer(lab, P, pert, pre, inputs, row_max, terms, relu, depth):  # type: ignore[no-untyped-def]
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
                                P[f"W{depth}"], Z, row_max, terms, relu, dplus, dminus, d_max,
                                cp, cm)
        else:
            deep_layer_changes(nz_ptr, nz_idx, nz_val, x_max, lab, l - 1, sizes, pre[l - 1],
                               inputs[l], Ws, w_off, As, a_off, Hs, h_off, terms, relu,
                               dplus, dminus, d_max, cp, cm)
        n_in = W.shape[0]
        out[f"W{l}"] = (cp[:, :n_in].T, cm[:, :n_in].T)
        out[f"b{l}"] = (cp[:, n_in], cm[:, n_in])
    return out


def _changes_any_depth(x64, lab, P, pert, pre, inputs, terms, relu, depth):  # type: ignore[no-untyped-def]
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
    any_depth_changes(sizes, x64, lab, W, w_off, A, a_off, H, h_off, terms, relu,
                      dplus, dminus, chg_plus, chg_minus)
    out = {}
    for l in range(1, depth + 1):
        rows, cols = sizes[l - 1] + 1, sizes[l]
        cp = chg_plus[w_off[l - 1]: w_off[l - 1] + rows * cols].reshape(rows, cols)
        cm = chg_minus[w_off[l - 1]: w_off[l - 1] + rows * cols].reshape(rows, cols)
        out[f"W{l}"] = (cp[:-1], cm[:-1])
        out[f"b{l}"] = (cp[-1], cm[-1])
    return out
