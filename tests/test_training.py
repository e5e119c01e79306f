"""Training sampled networks (meanfield.training), checked against finite differences and scipy.optimize."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, special

import meanfield._training_pass as engine
from meanfield.empirical import NetworkSpec, sample_network
from meanfield.training import Classifier, classifier, train


def _blobs(n=120, d=3, k=3, seed=0, spread=1.5):
    """Overlapping Gaussian classes (not separable: softmax regression has a finite optimum)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    y = rng.integers(0, k, n)
    X = centres[y] + spread * rng.standard_normal((n, d))
    return X, y


def _flat(model):
    return np.concatenate([w.ravel() for w in model.weights] + [b.ravel() for b in model.biases])


def _set(model, theta):
    """A copy of ``model`` with its parameters replaced by the flat vector ``theta``."""
    shapes = [w.shape for w in model.weights] + [b.shape for b in model.biases]
    parts, i = [], 0
    for s in shapes:
        n = int(np.prod(s))
        parts.append(theta[i:i + n].reshape(s))
        i += n
    L = len(model.weights)
    Ws = [np.ascontiguousarray(p.T) for p in parts[:L]]
    return Classifier(model.spec, model.d_in, Ws, [p.copy() for p in parts[L:]])


@pytest.mark.parametrize("act, depth", [("tanh", 3), ("relu", 2), ("x / (1 + x**2)", 2), (None, 0)])
def test_gradients_match_finite_differences(act, depth):
    X, y = _blobs(n=9, d=4, k=3, seed=1)
    spec = None if act is None else NetworkSpec(act, sigma_w2=1.7, sigma_b2=0.3, widths=[6, 5, 7][:depth])
    model = classifier(spec, 4, 3, 7)
    loss, gW, gb = model.loss_and_gradients(X, y)
    analytic = np.concatenate([g.ravel() for g in gW] + [g.ravel() for g in gb])
    theta = _flat(model)
    assert analytic.shape == theta.shape
    eps = 1e-6
    numeric = np.empty_like(theta)
    for i in range(theta.size):
        tp, tm = theta.copy(), theta.copy()
        tp[i] += eps
        tm[i] -= eps
        up, down = _set(model, tp).loss_and_gradients(X, y)[0], _set(model, tm).loss_and_gradients(X, y)[0]
        numeric[i] = (up - down) / (2 * eps)
    assert np.max(np.abs(analytic - numeric)) < 1e-7 * max(1.0, np.max(np.abs(numeric)))
    assert np.max(np.abs(numeric)) > 1e-3  # the comparison is not between zeros
    # and the loss itself is the mean cross-entropy of the logits
    z = model.logits(X)
    assert loss == pytest.approx(np.mean(special.logsumexp(z, axis=1) - z[np.arange(len(y)), y]), rel=1e-13)


def test_zero_depth_reaches_the_softmax_regression_optimum():
    X, y = _blobs(n=150, d=3, k=3, seed=2)
    n, d = X.shape
    k = 3

    def nll(theta):  # softmax regression, written independently of meanfield
        W, b = theta[:d * k].reshape(d, k), theta[d * k:]
        z = X @ W + b
        p = special.softmax(z, axis=1)
        onehot = np.eye(k)[y]
        loss = np.mean(special.logsumexp(z, axis=1) - z[np.arange(n), y])
        g = (p - onehot) / n
        return loss, np.concatenate([(X.T @ g).ravel(), g.sum(0)])

    best = optimize.minimize(nll, np.zeros(d * k + k), jac=True, method="BFGS", options={"gtol": 1e-12})
    run = train(None, X, y, 3, steps=4000, lr=1.0, batch_size=n, momentum=0.5)
    assert not run.diverged
    final, _, _ = run.classifier.loss_and_gradients(X, y)
    assert final == pytest.approx(best.fun, abs=1e-9)
    # the optimum is unique up to a constant added to every class's logit: compare probabilities
    W, b = best.x[:d * k].reshape(d, k), best.x[d * k:]
    p_opt = special.softmax(X @ W + b, axis=1)
    p_run = special.softmax(run.classifier.logits(X), axis=1)
    assert np.max(np.abs(p_run - p_opt)) < 1e-5
    assert best.fun < np.log(k) - 0.1  # a problem with something to learn


def test_initialisation_is_the_spec_and_reproducible():
    spec = NetworkSpec("tanh", sigma_w2=1.5, sigma_b2=0.05, width=30, depth=4)
    X, y = _blobs(n=40, d=8, k=4, seed=3)
    run = train(spec, X, y, 11, steps=0, lr=0.1, batch_size=10)
    net = sample_network(spec, 8, 11)
    for W, W0, b, b0 in zip(run.classifier.weights[:-1], net.weights, run.classifier.biases[:-1], net.biases,
                            strict=True):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    readout = run.classifier.weights[-1]
    assert readout.shape == (4, 30)
    # readout variance sigma_w2 / N_{L-1}: 120 entries, the sample variance within 40% of 1.5/30
    assert 0.6 < readout.var() / (1.5 / 30) < 1.4
    a = train(spec, X, y, 5, steps=30, lr=0.05, batch_size=8, momentum=0.9)
    b = train(spec, X, y, np.random.default_rng(5), steps=30, lr=0.05, batch_size=8, momentum=0.9)
    c = train(spec, X, y, 6, steps=30, lr=0.05, batch_size=8, momentum=0.9)
    np.testing.assert_array_equal(a.loss, b.loss)
    for W, V in zip(a.classifier.weights, b.classifier.weights, strict=True):
        np.testing.assert_array_equal(W, V)
    assert not np.array_equal(a.loss, c.loss)


def test_sgd_with_momentum_is_the_stated_update():
    X, y = _blobs(n=20, d=3, k=3, seed=4)
    spec = NetworkSpec("tanh", sigma_w2=1.2, sigma_b2=0.1, width=5, depth=2)
    model = classifier(spec, 3, 3, 0)
    lr, mu = 0.3, 0.8
    run = train(model, X, y, 1, steps=3, lr=lr, momentum=mu, batch_size=20)  # full batch: no sampling noise
    theta, u = _flat(model), 0.0
    for _ in range(3):
        cur = _set(model, theta)
        _, gW, gb = cur.loss_and_gradients(X, y)
        g = np.concatenate([w.ravel() for w in gW] + [b.ravel() for b in gb])
        u = mu * u + g
        theta = theta - lr * u
    np.testing.assert_allclose(_flat(run.classifier), theta, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(_flat(model), _flat(classifier(spec, 3, 3, 0)))  # the given one is unchanged


def test_float32_follows_float64():
    X, y = _blobs(n=64, d=6, k=3, seed=5)
    specs = [NetworkSpec("tanh", sigma_w2=1.8, sigma_b2=0.05, width=40, depth=6, dtype=dt)
             for dt in ("float64", "float32")]
    m64 = classifier(specs[0], 6, 3, 2)
    m32 = Classifier(specs[1], 6, [np.ascontiguousarray(W.T, dtype=np.float32) for W in m64.weights],
                     [b.astype(np.float32) for b in m64.biases])
    runs = [train(m, X, y, 2, steps=20, lr=0.05, batch_size=16, momentum=0.9) for m in (m64, m32)]
    assert runs[1].classifier.dtype == np.float32 and runs[1].classifier.weights[0].dtype == np.float32
    np.testing.assert_allclose(runs[1].loss, runs[0].loss, rtol=1e-4)
    assert runs[0].loss[-1] < 0.7 * runs[0].loss[0]
    # a float32 spec draws its weights in float32
    assert classifier(specs[1], 6, 3, 2).weights[0].dtype == np.float32


def test_divergence_is_an_outcome():
    X, y = _blobs(n=50, d=5, k=3, seed=6)
    spec = NetworkSpec("relu", sigma_w2=4.0, sigma_b2=0.0, width=50, depth=8)
    run = train(spec, X * 100, y, 0, steps=50, lr=1e3, batch_size=10, X_test=X, y_test=y)
    assert run.diverged and run.diverged_at is not None and run.diverged_at < 50
    assert np.isnan(run.test_accuracy) and np.isnan(run.train_accuracy)
    assert np.all(np.isnan(run.loss[run.diverged_at:]))
    assert np.all(np.isfinite(run.loss[:run.diverged_at]))


def test_learns_held_out_data():
    X, y = _blobs(n=400, d=5, k=4, seed=7, spread=0.3)
    spec = NetworkSpec("tanh", sigma_w2=1.5, sigma_b2=0.05, width=32, depth=3)
    run = train(spec, X[:300], y[:300], 0, steps=300, lr=0.05, batch_size=32, momentum=0.9,
                X_test=X[300:], y_test=y[300:])
    assert run.test_accuracy > 0.8 and run.train_accuracy > 0.8
    assert np.mean(run.loss[-20:]) < 0.5 * run.loss[0]


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(engine, "run", refuse)


@pytest.mark.parametrize("kwargs, match", [
    ({"y": np.array([0.0, 1.5, 2.0, 1.0])}, "integer class labels"),
    ({"y": np.array(["a", "b", "a", "b"])}, "integer class labels"),
    ({"y": np.array([0, 1, -1, 1])}, ">= 0"),
    ({"y": np.array([0, 1, 5, 1]), "n_outputs": 3}, "more than the 3 outputs"),
    ({"y": np.array([0, 1, 1])}, "one label per input"),
    ({"X": np.array([[0.0, 1.0], [np.nan, 1.0], [1.0, 1.0], [2.0, 0.0]])}, "finite"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -1.0}, "lr"),
    ({"momentum": 1.0}, "momentum"),
    ({"batch_size": 5}, "batch_size"),
    ({"steps": -1}, "steps"),
    ({"X_test": np.ones((2, 2))}, "both X_test and y_test"),
    ({"X_test": np.ones((2, 3)), "y_test": [0, 1]}, "dimension"),
    ({"X_test": np.ones((2, 2)), "y_test": [0, 9], "n_outputs": 3}, "more than the 3 outputs"),
])
def test_bad_input_is_refused_before_training(no_training, kwargs, match):
    args = {"X": np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 0.0]]), "y": np.array([0, 1, 2, 1]),
            "lr": 0.1, "steps": 10, "batch_size": 2}
    args.update(kwargs)
    spec = NetworkSpec("tanh", sigma_w2=1.0, width=3, depth=2)
    with pytest.raises(ValueError, match=match):
        train(spec, args.pop("X"), args.pop("y"), 0, **args)


def test_unsupported_networks_are_refused(no_training):
    X, y = np.ones((4, 3)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="residual"):
        train(NetworkSpec("tanh", sigma_w2=1.0, width=3, depth=2, residual=True), X, y, 0, steps=1, lr=0.1,
              batch_size=2)
    with pytest.raises(ValueError, match="rho"):
        train(NetworkSpec("tanh", sigma_w2=1.0, width=3, depth=2, rho=0.5), X, y, 0, steps=1, lr=0.1, batch_size=2)
    with pytest.raises(TypeError, match="NetworkSpec"):
        train("tanh", X, y, 0, steps=1, lr=0.1, batch_size=2)
    model = classifier(NetworkSpec("tanh", sigma_w2=1.0, width=3, depth=2), 3, 2, 0)
    with pytest.raises(ValueError, match="dimension"):
        train(model, np.ones((4, 5)), y, 0, steps=1, lr=0.1, batch_size=2)
    with pytest.raises(ValueError, match="more than the 2 outputs"):
        train(model, X, [0, 1, 2, 1], 0, steps=1, lr=0.1, batch_size=2)
    with pytest.raises(ValueError, match="dtype"):
        train(NetworkSpec("tanh", sigma_w2=1.0, width=3, depth=2), X, y, 0, steps=1, lr=0.1, batch_size=2,
              dtype="float32")
