"""Benchmark: 1000 x 1000 NNGP kernel at depth 10, closed forms (erf, relu) and tanh.

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


def inputs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))
    return X * np.sqrt(D) / np.linalg.norm(X, axis=1, keepdims=True)  # one shared norm


def reference(act, X, pairs):
    i, j = pairs.T
    q1 = SB + SW * np.sum(X[i] ** 2, 1) / D
    q2 = SB + SW * np.sum(X[j] ** 2, 1) / D
    k = SB + SW * np.sum(X[i] * X[j], 1) / D
    for _ in range(DEPTH):
        c = np.clip(k / np.sqrt(q1 * q2), -1, 1)
        k = SB + SW * mf.expectation(act, "cov", q1, q2, c=c, method="quadrature")
        q1 = SB + SW * mf.expectation(act, "phi2", q1)
        q2 = SB + SW * mf.expectation(act, "phi2", q2)
    return k


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
    X = rng.standard_normal((N, D)); X = X * np.sqrt(D) / np.linalg.norm(X, axis=1, keepdims=True)
    x = jnp.asarray(X)
    out = {{}}
    for name, layer in [("erf", stax.Erf()), ("relu", stax.Relu()),
                        ("tanh", stax.ElementwiseNumerical(jnp.tanh, deg=25))]:
        _, _, kfn = stax.serial(*([stax.Dense(1, W_std=SW ** 0.5, b_std=SB ** 0.5), layer] * DEPTH),
                                stax.Dense(1, W_std=SW ** 0.5, b_std=SB ** 0.5))
        kfn = jax.jit(kfn, static_argnames="get")
        np.asarray(kfn(x[:8], x[:8], get="nngp"))  # compile a small one
        t = time.perf_counter(); K = np.asarray(kfn(x, x, get="nngp")); dt = time.perf_counter() - t
        out[name] = {{"time": dt, "K": K[np.array({I}), np.array({J})].tolist()}}
    print(json.dumps(out))
""")


def main():
    X = inputs()
    rng = np.random.default_rng(1)
    pairs = np.stack([rng.integers(0, N, 30), rng.integers(0, N, 30)], axis=1)
    pairs[:3, 1] = pairs[:3, 0]  # a few diagonal entries
    nngp(X[:4], None, "tanh", depth=1, sigma_w2=SW, sigma_b2=SB)  # numba cache / first-call costs
    rows = []
    results = {}
    for act in ("erf", "relu", "tanh"):
        t = time.perf_counter()
        K = nngp(X, None, act, depth=DEPTH, sigma_w2=SW, sigma_b2=SB)
        dt = time.perf_counter() - t
        ref = reference(act, X, pairs)
        err = np.max(np.abs(K[pairs[:, 0], pairs[:, 1]] - ref) / np.abs(ref))
        results[act] = ref
        rows.append((f"meanfield {act}" + (" (closed form)" if act != "tanh" else " (tables)"), dt, err))
    t = time.perf_counter()
    Kgh = gauss_hermite_tanh(X)
    dt = time.perf_counter() - t
    err = np.max(np.abs(Kgh[pairs[:, 0], pairs[:, 1]] - results["tanh"]) / np.abs(results["tanh"]))
    rows.append((f"numpy Gauss-Hermite tanh, deg={GH_DEG}", dt, err))
    nt = os.environ.get("NT_PYTHON")
    if nt:
        script = NT_SCRIPT.format(N=N, D=D, DEPTH=DEPTH, SW=SW, SB=SB, I=pairs[:, 0].tolist(), J=pairs[:, 1].tolist())
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.run([nt, "-c", script], capture_output=True, text=True, env=env)
        if proc.returncode == 0:
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            for act in ("erf", "relu", "tanh"):
                Kp = np.array(out[act]["K"])
                err = np.max(np.abs(Kp - results[act]) / np.abs(results[act]))
                label = "neural-tangents 0.6.5 " + (act if act != "tanh" else "ElementwiseNumerical(tanh, deg=25)")
                rows.append((label, out[act]["time"], err))
        else:
            print("neural-tangents run failed:", proc.stderr[-2000:], file=sys.stderr)
    print(f"{N} x {N} NNGP, depth {DEPTH}, sigma_w2 = {SW}, sigma_b2 = {SB}, d_in = {D}, float64, "
          f"numpy {np.__version__}")
    print(f"{'method':58s} {'time [s]':>9s} {'max rel err':>12s}")
    for name, dt, err in rows:
        print(f"{name:58s} {dt:9.2f} {err:12.1e}")


if __name__ == "__main__":
    main()
