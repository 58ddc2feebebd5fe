"""Fits the float32 polynomials of src/poolwise/kernels/csrc/simd.h and prints them.

    python tools/fit_kernel_polynomials.py

Each polynomial approximates a smooth quotient with no zero on its interval, so it is fitted by
least squares on Chebyshev nodes with relative weights (close to the minimax fit), its
coefficients are rounded to float32, and its maximum relative error is measured in float64 on
a dense grid:

- log2(1 + t) = t * P(t) for t in [sqrt(1/2) - 1, sqrt(2) - 1] (the mantissa range after the
  range reduction of vlog2);
- 2**r - 1 = r * Q(r) for r in [-1/2, 1/2] (after vexp2's round-to-nearest reduction).
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


def main() -> None:
    for name, f, lo, hi, degree in [
        ("log2(1 + t) / t", log2_quotient, np.sqrt(0.5) - 1, np.sqrt(2) - 1, 7),
        ("(2**r - 1) / r", exp2_quotient, -0.5, 0.5, 5),
    ]:
        coef, error = fit(f, lo, hi, degree)
        print(f"{name} on [{lo:.6f}, {hi:.6f}], degree {degree}: max relative error {error:.2e}")
        print("  " + ", ".join(f"{c:.9e}f" for c in coef))


if __name__ == "__main__":
    main()
