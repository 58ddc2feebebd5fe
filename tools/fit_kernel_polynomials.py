"""Fits the float32 polynomials of src/poolwise/kernels/csrc/simd.h and prints them.

    python tools/fit_kernel_polynomials.py

Each polynomial approximates a smooth quotient with no zero on its interval, so it is fitted by
least squares on Chebyshev nodes with relative weights (close to the minimax fit), its
coefficients are rounded to float32, and its maximum relative error is measured in float64 on
a dense grid:

- log2(1 + t) = t * P(t) for t in [sqrt(1/2) - 1, sqrt(2) - 1] (the mantissa range after the
  range reduction of vlog2);
- 2**r - 1 = r * Q(r) for r in [-1/2, 1/2] (after vexp2's round-to-nearest reduction);
- log2(1 + r) = r * T(r) for the r of vlog2_table (AVX-512): x's mantissa m in [1, 2) is
  reduced by a 16-entry table, r = m * inv_c[i] - 1 with c[i] the midpoint of the i-th
  sixteenth of [1, 2), inv_c[i] = 1 / c[i] rounded to float32 and log2_c[i] = -log2(inv_c[i])
  (so that log2(m) = log2_c[i] + log2(1 + r) holds for the rounded inv_c); |r| < 0.0304.
"""

from __future__ import annotations

import numpy as np


def fit(f, lo: float, hi: float, degree: int) -> tuple[np.ndarray, float]:
    k = np.arange(4096)
    nodes = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.cos(np.pi * (k + 0.5) / len(k))
    target = f(nodes)
    vander = np.vander(nodes, degree + 1, increasing=True) / target[:, None]
    coef, *_ = np.linalg.lstsq(vander, np.ones_like(target), rcond=None)
    coef = coef.astype(np.float32).astype(np.float64)
    grid = np.linspace(lo, hi, 200001)
    error = np.abs(np.polyval(coef[::-1], grid) / f(grid) - 1).max()
    return coef, float(error)


def log2_quotient(t):
    return np.where(t == 0, 1 / np.log(2), np.log2(1 + t) / np.where(t == 0, 1, t))


def exp2_quotient(r):
    return np.where(r == 0, np.log(2), np.expm1(r * np.log(2)) / np.where(r == 0, 1, r))


def log2_table() -> tuple[np.ndarray, np.ndarray, float, float]:
    """(inv_c, log2_c) as float32 values, and the interval of r they leave."""
    inv_c = (1 / (1 + (np.arange(16) + 0.5) / 16)).astype(np.float32).astype(np.float64)
    log2_c = (-np.log2(inv_c)).astype(np.float32).astype(np.float64)
    lo = min((1 + i / 16) * inv_c[i] - 1 for i in range(16))
    hi = max((1 + (i + 1) / 16) * inv_c[i] - 1 for i in range(16))
    return inv_c, log2_c, float(lo), float(hi)


def main() -> None:
    inv_c, log2_c, r_lo, r_hi = log2_table()
    print("kLog2InvC: " + ", ".join(f"{c:.9e}f" for c in inv_c))
    print("kLog2C:    " + ", ".join(f"{c:.9e}f" for c in log2_c))
    for name, f, lo, hi, degree in [
        ("log2(1 + t) / t", log2_quotient, np.sqrt(0.5) - 1, np.sqrt(2) - 1, 7),
        ("(2**r - 1) / r", exp2_quotient, -0.5, 0.5, 5),
        ("log2(1 + r) / r, table-reduced", log2_quotient, r_lo, r_hi, 2),
    ]:
        coef, error = fit(f, lo, hi, degree)
        print(f"{name} on [{lo:.6f}, {hi:.6f}], degree {degree}: max relative error {error:.2e}")
        print("  " + ", ".join(f"{c:.9e}f" for c in coef))


if __name__ == "__main__":
    main()
