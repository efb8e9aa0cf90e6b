"""Kernels for layers further back than the last two, and a plain cross-check.

``deep_layer_changes``: one hidden unit moves; for one sample, every input of
that unit is a lane (both signs side by side) and the rest of the net is
replayed for all lanes at once, one matrix product per later layer over the
rows that moved. ``any_depth_changes``: the same losses, one changed sample
at a time in scalar code; simple enough to serve as a check of the others.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401 - np.dot in compiled code calls BLAS through it

from .numgrad_terms import activate, OPTS, sample_term


@numba.njit(**OPTS)
def _replay(dh, n, j, layer, sizes, Ws, w_off, As, a_off, Hs, h_off, act):  # type: ignore[no-untyped-def]
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
                cur[q, p] = activate(cur[q, p], act) - old[p]
        W = Ws[w_off[m + 1]: w_off[m + 1] + w_in * w_out].reshape(w_in, w_out)
        moved = np.dot(cur, W)  # rows of lanes that changed nothing are exactly 0
        base = As[a_off[m + 1] + n * w_out: a_off[m + 1] + (n + 1) * w_out]
        for q in range(lanes):
            for p in range(w_out):
                moved[q, p] += base[p]
        cur = moved
    return cur


@numba.njit(parallel=True, **OPTS)
def deep_layer_changes(
    nz_ptr, nz_idx, nz_val, x_max, lab, layer, sizes, A_l, H_next, Ws, w_off, As, a_off, Hs, h_off,
    terms, act, dplus, dminus, d_max, chg_plus, chg_minus, j_first,
):  # type: ignore[no-untyped-def]
    """Summed term changes for every weight (and bias) of a layer two or more before the last.

    As ``first_layer_changes``, with the rest of the net replayed for all the
    lanes of one (unit, sample) at once: the lanes are the sample's nonzero
    inputs to this layer, both signs side by side, and each later layer is one
    matrix product (lanes x width) @ W of the rows that moved. A_l / H_next
    are this layer's pre-activations and outputs; Ws, As, Hs hold every
    layer's weights, pre-activations and inputs flat (at w_off, a_off, h_off,
    weights without their bias row).

    dplus, dminus, d_max and chg_plus/chg_minus may hold units j_first,
    j_first + 1, ... only (their row q is unit j_first + q); units run
    independently, so a part of them gives those units' exact bits.
    """
    depth = sizes.shape[0] - 1
    n_samples = A_l.shape[0]
    n_out, n_cols = dplus.shape
    k_out = sizes[depth]
    for q0 in numba.prange(n_out):
        j = q0 + j_first  # the unit; row q0 of the tables
        dh = np.empty(2 * n_cols)
        col_of = np.empty(n_cols, np.int64)
        for col in range(n_cols):
            chg_plus[q0, col] = 0.0
            chg_minus[q0, col] = 0.0
        for n in range(n_samples):
            a = A_l[n, j]
            h0 = H_next[n, j]
            if act == 0 and h0 == 0.0 and a + 2.0 * x_max[n] * d_max[q0] < 0.0:
                continue
            start = nz_ptr[n]
            c = nz_ptr[n + 1] - start
            for q in range(c):
                col = nz_idx[start + q]
                col_of[q] = col
                v = nz_val[start + q]
                dh[q] = activate(a + v * dplus[q0, col], act) - h0
                dh[c + q] = activate(a + v * dminus[q0, col], act) - h0
            lanes = 2 * c
            cur = _replay(dh[:lanes], n, j, layer, sizes, Ws, w_off, As, a_off, Hs, h_off, act)
            label = lab[n]
            for q in range(lanes):
                change = sample_term(cur[q, :k_out], label) - terms[n]
                if q < c:
                    chg_plus[q0, col_of[q]] += change
                else:
                    chg_minus[q0, col_of[q - c]] += change


@numba.njit(parallel=True, **OPTS)
def any_depth_changes(
    sizes, x, lab, W, w_off, A, a_off, H, h_off, terms, act, dplus, dminus, chg_plus, chg_minus,
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
                            dh = activate(cur[m], act) - H[h_off[ll + 1] + n * m_in + m]
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
                    change = sample_term(cur[: sizes[depth]], lab[n]) - terms[n]
                    if sign == 0:
                        total_p += change
                    else:
                        total_m += change
            chg_plus[pos] = total_p
            chg_minus[pos] = total_m
