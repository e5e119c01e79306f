"""Benchmark: 1000 x 1000 NNGP kernel at depth 10, closed forms (erf, relu) and tanh.

Two input sets: scaled to one common norm, and raw Gaussian inputs (every input its own norm).

Run ``python benchmarks/bench_kernels.py``.  Compares meanfield with a plain-numpy fixed-order
Gauss-Hermite baseline for tanh (the method of neural-tangents' ElementwiseNumerical, deg=25), and,
if a Python with neural-tangents 0.6.5 is given in the environment variable ``NT_PYTHON``, with
neural-tangents itself (float64 on the CPU) in a subprocess.  Accuracy is the maximum relative
error against an independent per-pair recursion with adaptive quadrature
(``meanfield.expectation(..., method="quadrature")``, about 1e-12) on 30 entries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np

import meanfield as mf
from meanfield.kernels import nngp

N, D, DEPTH, SW, SB = 1000, 64, 10, 1.76, 0.05
GH_DEG = 25


def inputs(common_norm=True):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))
    if common_norm:
        X *= np.sqrt(D) / np.linalg.norm(X, axis=1, keepdims=True)  # one shared norm
    return X


def reference(act, X, pairs, want_ntk=False):
    """Per-pair recursion by adaptive quadrature: the NNGP (and with want_ntk the NTK) entries."""
    i, j = pairs.T
    q1 = SB + SW * np.sum(X[i] ** 2, 1) / D
    q2 = SB + SW * np.sum(X[j] ** 2, 1) / D
    k = SB + SW * np.sum(X[i] * X[j], 1) / D
    t, t1, t2 = k.copy(), q1.copy(), q2.copy()
    for _ in range(DEPTH):
        c = np.clip(k / np.sqrt(q1 * q2), -1, 1)
        knew = SB + SW * mf.expectation(act, "cov", q1, q2, c=c, method="quadrature")
        n1 = SB + SW * mf.expectation(act, "phi2", q1)
        n2 = SB + SW * mf.expectation(act, "phi2", q2)
        if want_ntk:
            g = mf.expectation(act, "dcov", q1, q2, c=c, method="quadrature")
            t = knew + SW * g * t
            t1 = n1 + SW * mf.expectation(act, "dphi2", q1) * t1
            t2 = n2 + SW * mf.expectation(act, "dphi2", q2) * t2
        k, q1, q2 = knew, n1, n2
    return t if want_ntk else k


def gauss_hermite_tanh(X, deg=GH_DEG, block=50):
    """Plain numpy: fixed deg x deg Gauss-Hermite rule per entry, blocked (memory block*N*deg^2)."""
    z, w = np.polynomial.hermite_e.hermegauss(deg)
    w = w / w.sum()
    K = SB + SW * X @ X.T / D
    for _ in range(DEPTH):
        d = np.sqrt(np.diag(K)).copy()
        new = np.empty_like(K)
        for r in range(0, N, block):
            sl = slice(r, r + block)
            c = np.clip(K[sl] / np.outer(d[sl], d), -1, 1)
            s = np.sqrt(1 - c * c)
            u1 = d[sl, None, None, None] * z[None, None, :, None]
            u2 = d[None, :, None, None] * (c[..., None, None] * z[None, None, :, None] + s[..., None, None] * z)
            new[sl] = SB + SW * np.einsum("ijab,a,b->ij", np.tanh(u1) * np.tanh(u2), w, w)
        K = new
    return K


NT_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from neural_tangents import stax
    N, D, DEPTH, SW, SB = {N}, {D}, {DEPTH}, {SW}, {SB}
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))
    if {COMMON}:
        X = X * np.sqrt(D) / np.linalg.norm(X, axis=1, keepdims=True)
    x = jnp.asarray(X)
    out = {{}}
    for name, layer in [("erf", stax.Erf()), ("relu", stax.Relu()),
                        ("tanh", stax.ElementwiseNumerical(jnp.tanh, deg=25))]:
        if name not in {ACTS}:
            continue
        _, _, kfn = stax.serial(*([stax.Dense(1, W_std=SW ** 0.5, b_std=SB ** 0.5), layer] * DEPTH),
                                stax.Dense(1, W_std=SW ** 0.5, b_std=SB ** 0.5))
        kfn = jax.jit(kfn, static_argnames="get")
        np.asarray(kfn(x[:8], x[:8], get="nngp"))  # compile a small one
        t = time.perf_counter(); K = np.asarray(kfn(x, x, get="nngp")); dt = time.perf_counter() - t
        out[name] = {{"time": dt, "K": K[np.array({I}), np.array({J})].tolist()}}
    print(json.dumps(out))
""")


def neural_tangents(pairs, common_norm, acts):
    nt = os.environ.get("NT_PYTHON")
    if not nt:
        return {}
    script = NT_SCRIPT.format(N=N, D=D, DEPTH=DEPTH, SW=SW, SB=SB, I=pairs[:, 0].tolist(), J=pairs[:, 1].tolist(),
                              COMMON=common_norm, ACTS=tuple(acts))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([nt, "-c", script], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print("neural-tangents run failed:", proc.stderr[-2000:], file=sys.stderr)
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rel_err(values, ref):
    return float(np.max(np.abs(np.asarray(values) - ref) / np.abs(ref)))


def main():
    rng = np.random.default_rng(1)
    pairs = np.stack([rng.integers(0, N, 30), rng.integers(0, N, 30)], axis=1)
    pairs[:3, 1] = pairs[:3, 0]  # a few diagonal entries
    for act in ("erf", "relu", "tanh"):  # first-call costs (numba cache, sympy closed forms), as jit for jax
        mf.ntk(inputs()[:4], None, act, depth=1, sigma_w2=SW, sigma_b2=SB)
    rows = []
    for common in (True, False):
        X = inputs(common)
        tag = "common norm" if common else "raw inputs"
        acts = ("erf", "relu", "tanh") if common else ("tanh",)
        refs = {}
        for act in acts:
            t = time.perf_counter()
            K = nngp(X, None, act, depth=DEPTH, sigma_w2=SW, sigma_b2=SB)
            dt = time.perf_counter() - t
            refs[act] = reference(act, X, pairs)
            kind = "closed form" if act != "tanh" else "tables"
            rows.append((f"{tag}: meanfield {act} ({kind})", dt, rel_err(K[pairs[:, 0], pairs[:, 1]], refs[act])))
        t = time.perf_counter()
        T = mf.ntk(X, None, "tanh", depth=DEPTH, sigma_w2=SW, sigma_b2=SB)
        dt = time.perf_counter() - t
        ref_ntk = reference("tanh", X, pairs, want_ntk=True)
        rows.append((f"{tag}: meanfield tanh NTK (tables)", dt, rel_err(T[pairs[:, 0], pairs[:, 1]], ref_ntk)))
        if common:
            t = time.perf_counter()
            Kgh = gauss_hermite_tanh(X)
            dt = time.perf_counter() - t
            rows.append((f"{tag}: numpy Gauss-Hermite tanh, deg={GH_DEG}", dt,
                         rel_err(Kgh[pairs[:, 0], pairs[:, 1]], refs["tanh"])))
        out = neural_tangents(pairs, common, acts)
        for act in acts:
            if act in out:
                label = "neural-tangents 0.6.5 " + (act if act != "tanh" else "ElementwiseNumerical(tanh, deg=25)")
                rows.append((f"{tag}: {label}", out[act]["time"], rel_err(out[act]["K"], refs[act])))
    print(f"{N} x {N} kernels, depth {DEPTH}, sigma_w2 = {SW}, sigma_b2 = {SB}, d_in = {D}, float64, "
          f"numpy {np.__version__}")
    print(f"{'method':70s} {'time [s]':>9s} {'max rel err':>12s}")
    for name, dt, err in rows:
        print(f"{name:70s} {dt:9.2f} {err:12.1e}")


if __name__ == "__main__":
    main()
