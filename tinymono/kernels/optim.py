"""Adam's update as one pass over each parameter array (optim.adam_update is its NumPy twin).

NumPy's adam_update walks every array about ten times (m, v, the square, the square root, the division,
each a separate pass, some with a temporary). Here each entry is read and written once: on the SAE's
4 M parameters that is several times faster, a large share of the sparse step's time after its matmul.

The arithmetic is the twin's, in the same order and at the array's precision (the coefficients are cast
to it first, as NumPy casts a Python float beside a float32 array), so the two agree to the last bit on
the machines we measured; the tests still compare them with a tolerance of a few units in the last place.

`error_model="numpy"`: numba's default ("python") checks every division for a zero divisor so that it
can raise ZeroDivisionError, and that branch keeps the loop from vectorising (measured: 5x slower).
Here a division by zero cannot happen (sqrt(v) + eps >= eps > 0); if it could, it would give inf as in
NumPy. No fastmath: NaN in a gradient must reach the parameter, where the training loop's guard sees it.
"""
from __future__ import annotations

import numpy as np
from numba import njit


def _adam_flat(p, g, m, v, lr_over_c1, beta1, beta2, c2, eps):
    """p, g, m, v [n] (one dtype): m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
    p -= lr_over_c1 * m / (sqrt(v / c2) + eps), where c1, c2 = 1 - beta^t (the bias corrections)."""
    b1, b2 = p.dtype.type(beta1), p.dtype.type(beta2)
    a1, a2 = p.dtype.type(1.0 - beta1), p.dtype.type(1.0 - beta2)  # as NumPy: the difference in float64, then cast
    lr, c, e = p.dtype.type(lr_over_c1), p.dtype.type(c2), p.dtype.type(eps)
    for i in range(p.shape[0]):
        gi = g[i]
        mi = m[i] * b1 + a1 * gi
        vi = v[i] * b2 + a2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] -= lr * (mi / (np.sqrt(vi / c) + e))


adam_flat = njit(cache=True, nogil=True, error_model="numpy")(_adam_flat)


def fusable(p, g, m, v):
    """Whether adam_update can take these arrays: one floating dtype, one shape, all C-contiguous (a
    reshaped view of anything else would be a copy, and the update would be lost)."""
    arrays = (p, g, m, v)
    return (p.dtype in (np.float32, np.float64) and all(a.dtype == p.dtype and a.shape == p.shape
                                                        and a.flags.c_contiguous for a in arrays))


def adam_update(p, g, m, v, t, lr, beta1, beta2, eps):
    """optim.adam_update's contract, fused: one Adam step of p with gradient g, p, m, v updated in place
    (fusable(p, g, m, v) must hold); t counts steps from 1."""
    adam_flat(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), lr / (1.0 - beta1**t), beta1, beta2,
              1.0 - beta2**t, eps)
