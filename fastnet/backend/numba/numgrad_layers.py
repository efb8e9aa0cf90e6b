"""Kernels for the last two layers of a net (all of TwoLayerNet): vectorised, parallel.

See ``numgrad.py`` for what they compute. The last layer's parameters move
one score column; the layer before it moves one hidden unit, which moves the
scores along one row of the last weights. The inner loops run over samples
(last layer) or over one sample's nonzero inputs (the layer before), so they
vectorise; hidden units run in parallel.
"""

from __future__ import annotations

import numba
import numpy as np

from .fastmath import SMALL, exp64, exp_small, log64
from .numgrad_terms import CE_DELTA, OPTS, sample_term, unit_changes

# A shift more than ~700 above the new row maximum underflows every exp: then
# the lane's term is recomputed from its scores with the exact maximum.
_TINY = 1e-290


@numba.njit(parallel=True, **OPTS)
def first_layer_changes(
    nz_ptr, nz_idx, nz_val, x_max, lab, A, Hh, W2, Z, row_max, terms, act,
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
    When every score moves by at most SMALL (the usual case: h is small),
    e^(z + dz - top) = e^(z - top) e^dz with e^(z - top) computed once per
    sample and e^dz by ``exp_small``; an unmoved sample still gives exactly
    its old term (e^0 = 1).
    """
    n_samples = A.shape[0]
    n_hid, n_cols = dplus.shape
    k_out = W2.shape[1]
    E = np.empty((n_samples, k_out))  # e^(z - top) of the unperturbed scores
    for n in range(n_samples):
        for k in range(k_out):
            E[n, k] = exp64(Z[n, k] - row_max[n])
    for j in numba.prange(n_hid):
        w_hi = W2[j, 0]
        w_lo = W2[j, 0]
        for k in range(1, k_out):
            w_hi = max(w_hi, W2[j, k])
            w_lo = min(w_lo, W2[j, k])
        w_abs = max(abs(w_hi), abs(w_lo))
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
        zs = np.empty(k_out)
        for col in range(n_cols):
            chg_plus[j, col] = 0.0
            chg_minus[j, col] = 0.0
        for n in range(n_samples):
            a = A[n, j]
            h0 = Hh[n, j]
            # relu: an off unit that no perturbation can switch on changes nothing
            if act == 0 and h0 == 0.0 and a + 2.0 * x_max[n] * d_max[j] < 0.0:
                continue
            start = nz_ptr[n]
            c = nz_ptr[n + 1] - start
            for l in range(c):
                col = nz_idx[start + l]
                xv[l] = nz_val[start + l]
                dp[l] = dplus[j, col]
                dm[l] = dminus[j, col]
            unit_changes(a, h0, xv, dp, dm, hp, hm, c, act)
            label = lab[n]
            old = terms[n]
            moved = 0.0
            for l in range(c):  # a reduction: it vectorises
                moved = max(moved, max(abs(hp[l]), abs(hm[l])))
            short = moved * w_abs <= SMALL  # every |hp w|, |hm w| in exp_small's range
            top = row_max[n]
            for l in range(c):
                up = hp[l]
                um = hm[l]
                # shift >= the new row maximum, so no exp below overflows
                shp[l] = top + (up * w_hi if up > 0.0 else up * w_lo)
                shm[l] = top + (um * w_hi if um > 0.0 else um * w_lo)
                sp[l] = 0.0
                sm[l] = 0.0
            for k in range(k_out):
                z = Z[n, k]
                e0 = E[n, k]
                w = W2[j, k]
                hit = k == label
                for l in range(c):  # the hot loop: two exps per lane
                    if short:  # loop-invariant: LLVM splits the loop on it
                        up = e0 * exp_small(hp[l] * w)
                        um = e0 * exp_small(hm[l] * w)
                    else:
                        up = exp64(z + hp[l] * w - shp[l])
                        um = exp64(z + hm[l] * w - shm[l])
                    sp[l] += up
                    sm[l] += um
                    if hit:  # the true class's term, kept for the loss
                        cp[l] = up
                        cm[l] = um
            for l in range(c):
                cp[l] = -log64(cp[l] / sp[l] + CE_DELTA) - old
                cm[l] = -log64(cm[l] / sm[l] + CE_DELTA) - old
            bad = False
            for l in range(c):  # a reduction: it vectorises, the fix-up below rarely runs
                bad |= not (sp[l] > _TINY and sm[l] > _TINY)
            for l in range(c if bad else 0):
                if not (sp[l] > _TINY and sm[l] > _TINY):
                    for k in range(k_out):
                        zs[k] = Z[n, k] + hp[l] * W2[j, k]
                    cp[l] = sample_term(zs, label) - old
                    for k in range(k_out):
                        zs[k] = Z[n, k] + hm[l] * W2[j, k]
                    cm[l] = sample_term(zs, label) - old
            for l in range(c):
                col = nz_idx[start + l]
                chg_plus[j, col] += cp[l]
                chg_minus[j, col] += cm[l]


@numba.njit(parallel=True, **OPTS)
def second_layer_changes(lab, Hh, Zt, row_max, terms, dplus, dminus, chg_plus, chg_minus):  # type: ignore[no-untyped-def]
    """Summed term changes for every W2[j, k]; row j = n_hid is b2 (input 1).

    Zt is the transposed scores (k_out, n_samples). dplus[j, k], dminus[j, k]:
    the perturbations of W2[j, k] (row n_hid: b2[k]). Lanes are samples; a
    sample whose unit j is off (act) moves by exactly 0 and adds exactly 0.
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
        zs = np.empty(k_out)
        fixed = np.zeros(n_samples, np.bool_)
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
            bad = False
            for n in range(n_samples):  # a reduction: it vectorises, the fix-up below rarely runs
                bad |= not (sp[n] > _TINY and sm[n] > _TINY)
            for n in range(n_samples if bad else 0):
                fixed[n] = not (sp[n] > _TINY and sm[n] > _TINY)
                if fixed[n]:
                    for kk in range(k_out):
                        zs[kk] = Zt[kk, n]
                    zs[k] = Zt[k, n] + up[n]
                    ep[n] = sample_term(zs, lab[n])
                    zs[k] = Zt[k, n] + um[n]
                    em[n] = sample_term(zs, lab[n])
            for n in range(n_samples):
                sp[n] = -log64(ep[n] / sp[n] + CE_DELTA) - terms[n]
                sm[n] = -log64(em[n] / sm[n] + CE_DELTA) - terms[n]
            for n in range(n_samples if bad else 0):
                if fixed[n]:
                    sp[n] = ep[n] - terms[n]
                    sm[n] = em[n] - terms[n]
            for n in range(n_samples):
                total_p += sp[n]
                total_m += sm[n]
            chg_plus[j, k] = total_p
            chg_minus[j, k] = total_m
