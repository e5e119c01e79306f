"""Speed of meanfield.training: SGD steps against the raw matrix products of the same shapes.

One training step of a depth-L network with a readout is, in matrix products, one forward product
per layer, and per layer one product for the weight gradient and (except the first layer) one to
backpropagate: ``3 (L + 1) - 1`` products.  The baseline does exactly those products, with
preallocated outputs, in the same dtype, in the same run; the training step adds phi and phi', the
softmax cross-entropy, the bias gradients, the (momentum) update and the mini-batch gather.

The time per step is ``(t(S2) - t(S1)) / (S2 - S1)`` for two step counts, so the one-off costs of
a run (drawing the weights, the final accuracy pass) cancel.  One BLAS thread (as each run of a
trainability grid uses).

    python benchmarks/bench_training.py
"""

from __future__ import annotations

import platform

import numpy as np
from _timing import best

from meanfield.empirical import NetworkSpec
from meanfield.training import classifier, train

CASES = [  # (width, depth, batch)
    (100, 20, 64),
    (256, 10, 128),
]


def matmul_step(Ws, B, dtype, reps):
    """``reps`` steps' worth of the products of a training step, and nothing else."""
    acts = [np.ones((B, W.shape[0]), dtype) for W in Ws]
    outs = [np.empty((B, W.shape[1]), dtype) for W in Ws]
    grads = [np.empty_like(W) for W in Ws]
    backs = [np.empty((B, W.shape[0]), dtype) for W in Ws]

    def run():
        for _ in range(reps):
            for a, W, o in zip(acts, Ws, outs, strict=True):
                np.matmul(a, W, out=o)
            for l in range(len(Ws) - 1, -1, -1):
                np.matmul(acts[l].T, outs[l], out=grads[l])
                if l > 0:
                    np.matmul(outs[l], Ws[l].T, out=backs[l])

    return run


def main():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}, "
          f"numpy {np.__version__}", flush=True)
    rng = np.random.default_rng(0)
    d_in, n_classes = 64, 10
    print("| width | depth | batch | dtype | training step | raw matmuls | ratio | momentum step | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    ctx = threadpool_limits(1) if threadpool_limits is not None else None
    if ctx is not None:
        ctx.__enter__()
    try:
        for width, depth, B in CASES:
            X = rng.standard_normal((4 * B, d_in))
            y = rng.integers(0, n_classes, 4 * B)
            for dtype in ("float32", "float64"):
                spec = NetworkSpec("tanh", sigma_w2=1.76, sigma_b2=0.05, width=width, depth=depth, dtype=dtype)
                model = classifier(spec, d_in, n_classes, 1)
                s1, s2 = 3, 23
                per = {}
                for mu in (0.0, 0.9):
                    t1, _ = best(lambda m=mu: train(model, X, y, 0, steps=s1, lr=1e-3, momentum=m, batch_size=B),
                                 repeat=2, warm=True)
                    t2, _ = best(lambda m=mu: train(model, X, y, 0, steps=s2, lr=1e-3, momentum=m, batch_size=B),
                                 repeat=2)
                    per[mu] = (t2 - t1) / (s2 - s1)
                Ws = [np.ascontiguousarray(W.T) for W in model.weights]
                reps = 20
                tm, _ = best(matmul_step(Ws, B, np.dtype(dtype), reps), repeat=3, warm=True)
                tm /= reps
                print(f"| {width} | {depth} | {B} | {dtype} | {per[0.0] * 1e3:.2f} ms | {tm * 1e3:.2f} ms | "
                      f"{per[0.0] / tm:.2f}x | {per[0.9] * 1e3:.2f} ms | {per[0.9] / tm:.2f}x |", flush=True)
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)


if __name__ == "__main__":
    main()
