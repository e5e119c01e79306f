"""Batch-norm gradient explosion rate lambda_G(phi, B): speed and accuracy of a whole curve in B.

Run: ``python benchmarks/bench_batchnorm.py`` (``--quick``: fewer reference points).  Side by side
in one run, for tanh, gelu and hard_tanh (kinks at +-1):

1. ``meanfield.batchnorm.lambda_G(act, B)`` for every integer B in 4..1024 (1021 values) and for 60
   log-spaced values (56 distinct integers), warm (first call made before timing; the module has no
   compiled code, so nothing is compiled), best of 3;
2. the module's per-batch-size nested rule (its engine for B < 24) in a loop over B = 4..23, time per
   B extrapolated to 1021 values (what the curve would cost without the tensor grid that every
   B >= 24 shares);
3. the independent reference of the tests, nested adaptive ``scipy.integrate.quad_vec`` in the angles
   (rtol 1e-12, breakpoints at the kinks), timed on a few B and extrapolated per B.

Accuracy: the maximum relative difference to the scipy reference on those B, and to the closed
forms (linear ``(B-2)/(B-3)``, ReLU arc-cosine moments) over every B in 4..1024.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

import meanfield as mf
from meanfield import batchnorm as bn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from _timing import best  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from test_batchnorm import lam, relu_closed, scipy_reference  # noqa: E402


def per_b_loop(act, Bs):
    """lambda_G with the nested rule at every batch size (no shared grid)."""
    out = []
    for B in Bs:
        e = bn._nested(act, float(B), True)
        out.append(((B - 1) * e["dphi2"] + e["dphi12"] - e["y2dphi2"] + e["ydphi12"]) / ((B - 3) * e["half_sq_diff"]))
    return np.array(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}; "
          f"Python {platform.python_version()}, numpy {np.__version__}; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    every = np.arange(4, 1025)
    logs = np.unique(np.round(np.geomspace(4, 1024, 60)).astype(int))
    ref_bs = [4, 8, 64, 1024] if args.quick else [4, 6, 8, 16, 64, 256, 1024]
    print(f"{'activation':10s} {'curve (1021 B)':>15s} {'curve (56 B)':>13s} {'per-B loop x1021':>18s} "
          f"{'scipy per B':>12s} {'scipy x1021':>12s} {'max rel. err vs scipy':>22s}")
    for name in ("tanh", "gelu", "hard_tanh"):
        act = mf.activation(name)
        bn.lambda_G(act, every)
        t_all, curve = best(lambda: bn.lambda_G(act, every))
        t_log, _ = best(lambda: bn.lambda_G(act, logs))
        small = every[every < bn._B_TENSOR]
        t_loop, loop = best(lambda: per_b_loop(act, small))
        assert np.max(np.abs(loop / curve[:small.size] - 1)) < 1e-12
        t_loop *= every.size / small.size
        errs, times = [], []
        for B in ref_bs:
            s = time.perf_counter()
            ref = scipy_reference(name, B)
            times.append(time.perf_counter() - s)
            errs.append(abs(curve[B - 4] / lam(ref, B) - 1))
        per = float(np.mean(times))
        print(f"{name:10s} {t_all:13.3f} s {t_log:11.3f} s {t_loop:16.2f} s {per:10.2f} s {per * 1021:10.0f} s "
              f"{max(errs):22.1e}")
    lin = np.max(np.abs(bn.lambda_G("linear", every, method="quadrature") / ((every - 2) / (every - 3)) - 1))
    relu = np.max(np.abs(bn.lambda_G("relu", every, method="quadrature") / lam(relu_closed(every * 1.0), every) - 1))
    t_relu, _ = best(lambda: bn.lambda_G("relu", every))
    print(f"closed forms, B = 4..1024, quadrature path: linear max rel. err {lin:.1e}, relu {relu:.1e}; "
          f"relu exact path, 1021 B: {t_relu * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
