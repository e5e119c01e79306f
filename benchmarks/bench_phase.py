"""Phase-diagram benchmark: meanfield.phase_diagram against a plain-numpy Gauss-Hermite code.

Both compute every field of a tanh phase diagram (q*, chi_1, q-map slope / xi_q, c*, chi_c / xi_c)
on the same grid; accuracy is measured against ``meanfield.analyze`` (per-point adaptive
Gauss-Kronrod quadrature and brentq, the independent slow reference) on a subsample of points.

    python benchmarks/bench_phase.py            # 200 x 200, plus the 1000 x 1000 memory run
    python benchmarks/bench_phase.py --quick    # 200 x 200 only, smaller reference sample
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
import tracemalloc

import numpy as np

import meanfield as mf
from meanfield.diagram import phase_diagram

SW = np.linspace(0.5, 5.0, 200)
SB = np.linspace(0.0, 2.0, 200)


# ----------------------------------------------------------------------------------------
# Baseline: fixed-order Gauss-Hermite, plain numpy, vectorised over the grid
# ----------------------------------------------------------------------------------------


def _illinois(F, lo, hi, iters=60, tol=1e-15):
    flo, fhi = F(lo, slice(None)), F(hi, slice(None))
    side = np.zeros(lo.size)
    for _ in range(iters):
        x = (lo * fhi - hi * flo) / (fhi - flo)
        x = np.where(np.isfinite(x), x, 0.5 * (lo + hi))
        fx = F(x, slice(None))
        left = np.sign(fx) == np.sign(flo)
        lo, flo, hi, fhi = (np.where(left, x, lo), np.where(left, fx, np.where(side == -1, 0.5 * flo, flo)),
                            np.where(left, hi, x), np.where(left, np.where(side == 1, 0.5 * fhi, fhi), fx))
        side = np.where(left, 1, -1)
        if np.all(np.abs(hi - lo) <= tol * np.abs(x)):
            break
    return x


def gauss_hermite_fields(w, b, n=64, chunk=1000):
    """Every field by an n-point Gauss-Hermite rule (n x n for the bivariate ones)."""
    z, wt = np.polynomial.hermite_e.hermegauss(n)
    wt = wt / wt.sum()

    def V(q):
        return np.tanh(np.sqrt(q)[:, None] * z) ** 2 @ wt

    # q*: tanh is bounded, so b <= q* <= w + b; at b = 0, q = 0 is a fixed point too: the
    # iteration reaches q* > 0 when the map rises above the identity near 0 (w > 1), else 0
    lo = np.maximum(b, 1e-12)
    at_zero = (w * V(lo) + b - lo) <= 0
    qs = np.zeros_like(w)
    ok = ~at_zero
    qs[ok] = _illinois(lambda q, i: w[ok] * V(q) + b[ok] - q, lo[ok], w[ok] + b[ok] + 1e-12)
    t = np.tanh(np.sqrt(qs)[:, None] * z)
    d = 1 - t * t
    chi1 = w * (d * d @ wt)
    slope = w * ((d * d - 2 * t * t * d) @ wt)
    cs = np.ones_like(w)
    chic = chi1.copy()
    ch = np.flatnonzero(chi1 > 1)
    for s in range(0, ch.size, chunk):
        idx = ch[s:s + chunk]
        q, ww = qs[idx], w[idx]
        sq = np.sqrt(q)[:, None, None]
        u1 = sq * z[None, :, None]
        t1 = np.tanh(u1)

        def D(c, sl, q=q, ww=ww, sq=sq, t1=t1):
            cc = c[:, None, None]
            u2 = sq[sl] * (cc * z[None, :, None] + np.sqrt(1 - cc * cc) * z[None, None, :])
            diff = t1[sl] - np.tanh(u2)
            return 0.5 * np.einsum("pij,i,j->p", diff * diff, wt, wt)

        def G(c, sl, q=q, ww=ww, D=D):
            return 1 - ww[sl] * D(c, sl) / (q[sl] * (1 - c))

        c = _illinois(G, np.zeros(idx.size), np.full(idx.size, 1 - 1e-9))
        cc = c[:, None, None]
        u2 = sq * (cc * z[None, :, None] + np.sqrt(1 - cc * cc) * z[None, None, :])
        dd = (1 - t1 * t1) * (1 - np.tanh(u2) ** 2)
        cs[idx] = c
        chic[idx] = ww * np.einsum("pij,i,j->p", dd, wt, wt)
    return dict(q_star=qs, chi_1=chi1, q_slope=slope, c_star=cs, chi_c=chic)


# ----------------------------------------------------------------------------------------


def _errors(values, ref, away):
    out = {}
    for f in ("q_star", "chi_1", "q_slope", "chi_c"):
        out[f] = float(np.max(np.abs(values[f] / getattr(ref, f) - 1)))
    out["c_star (abs)"] = float(np.max(np.abs(values["c_star"] - ref.c_star)))
    xi = -1 / np.log(values["chi_c"])
    out["xi_c (|chi_1-1|>1e-2)"] = float(np.max(np.abs(xi[away] / ref.xi_c[away] - 1)))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    print("## machine")
    try:
        print("\n".join(subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:20]))
    except OSError:
        print(platform.processor())
    print(f"python {platform.python_version()}, numpy {np.__version__}, meanfield {mf.__version__}")

    t = time.perf_counter()
    pd = phase_diagram("tanh", SW, SB)
    cold = time.perf_counter() - t
    warm = []
    for _ in range(3):
        t = time.perf_counter()
        pd = phase_diagram("tanh", SW, SB)
        warm.append(time.perf_counter() - t)
    print("\n## 200 x 200 tanh, every field")
    print(f"meanfield.phase_diagram: first call in the process {cold:.2f} s (tables, numba cache load); "
          f"warm {min(warm):.2f} s (best of 3; {', '.join(f'{x:.2f}' for x in warm)})")
    print(f"  chaotic points: {np.count_nonzero(pd.phase == 'chaotic')}, per-point fallbacks: {pd.n_reference}")

    W, B = np.meshgrid(SW, SB)
    w, b = W.ravel(), B.ravel()
    gh = {}
    for n in (32, 64):
        t = time.perf_counter()
        gh[n] = gauss_hermite_fields(w, b, n)
        print(f"plain numpy Gauss-Hermite, {n} nodes ({n}x{n} bivariate): {time.perf_counter() - t:.2f} s")

    # reference subsample: chaotic and ordered points, away from and near the critical line
    rng = np.random.default_rng(0)
    n_ref = 12 if args.quick else 40
    chaotic = np.flatnonzero(pd.phase.ravel() == "chaotic")
    ordered = np.flatnonzero(pd.phase.ravel() == "ordered")
    pick = np.concatenate([rng.choice(chaotic, n_ref, replace=False), rng.choice(ordered, n_ref // 2, replace=False)])
    t = time.perf_counter()
    ref = mf.analyze("tanh", w[pick], b[pick])
    t_ref = time.perf_counter() - t
    per = t_ref / pick.size
    print(f"\nreference: meanfield.analyze on {pick.size} points: {t_ref:.1f} s "
          f"({per * 1e3:.0f} ms per point; the full grid would take ~{per * w.size / 60:.0f} min)")
    away = np.abs(ref.chi_1 - 1) > 1e-2
    fast = {f: getattr(pd, f).ravel()[pick] for f in ("q_star", "chi_1", "q_slope", "c_star", "chi_c")}
    rows = {"phase_diagram": _errors(fast, ref, away)}
    for n, vals in gh.items():
        rows[f"Gauss-Hermite {n}"] = _errors({f: v[pick] for f, v in vals.items()}, ref, away)
    print("\nmax error against analyze (relative unless noted):")
    cols = list(next(iter(rows.values())))
    print(f"| method | {' | '.join(cols)} |")
    print("|---" * (len(cols) + 1) + "|")
    for name, errs in rows.items():
        print(f"| {name} | {' | '.join(f'{errs[c]:.1e}' for c in cols)} |")

    if not args.quick:
        print("\n## 1000 x 1000 tanh")
        tracemalloc.start()
        t = time.perf_counter()
        big = phase_diagram("tanh", np.linspace(0.5, 5, 1000), np.linspace(0, 2, 1000))
        elapsed = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result = sum(getattr(big, f).nbytes for f in ("q_star", "c_star", "chi_1", "chi_c", "q_slope", "xi_q",
                                                        "xi_c", "trainable_depth", "gradient_factor", "phase"))
        print(f"time {elapsed:.1f} s; peak traced memory {peak / 1e6:.0f} MB, of which the result arrays "
              f"are {result / 1e6:.0f} MB; per-point fallbacks: {big.n_reference}")


if __name__ == "__main__":
    main()
