"""Sweeps and GP prediction past one process: a Dask cluster gives the one-process numbers.

Simulations on a cluster equal the serial run bit for bit (every network draws the random
numbers it would draw in one process); phase diagrams equal it bit for bit in every field that
comes from the one-dimensional tables, and to rounding (1e-13) in the Mehler sums of c*.
"""

import numpy as np
import pytest

import meanfield as mf
from meanfield import empirical as emp
from meanfield import runner

distributed = pytest.importorskip("distributed")

_EXACT = ("q_star", "chi_1", "q_slope", "xi_q", "gradient_factor", "critical_line", "phase")
_RECORDS = ("q", "q12", "grad_sq", "grad_input_sq", "grad_w_sq", "jvp_sq")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _same_records(a, b):
    for name in _RECORDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert np.array_equal(x, y), name


@pytest.mark.parametrize("spec", [
    emp.NetworkSpec("x*tanh(x) + sin(x)", sigma_w2=1.6, sigma_b2=0.1, width=12, depth=3),
    emp.NetworkSpec("relu", sigma_w2=2.0, sigma_b2=0.05, widths=[9, 11, 7], rho=0.8),
], ids=["expression", "dropout"])
def test_simulate_on_a_cluster_is_the_serial_run(client, spec):
    X = np.random.default_rng(0).standard_normal((4, 6))
    jvp = spec.rho == 1.0
    g_serial, g_cluster = np.random.default_rng(11), np.random.default_rng(11)
    serial = emp.simulate(spec, X, 7, g_serial, jvp=jvp)
    cluster = emp.simulate(spec, X, 7, g_cluster, jvp=jvp, client=client)
    _same_records(serial, cluster)
    assert cluster.spec is spec
    # the caller's generator advanced exactly as in the serial run: the next draws agree
    assert g_serial.standard_normal() == g_cluster.standard_normal()
    # the networks are not all alike (the tasks did not repeat one stream)
    assert len(set(serial.q[:, -1, 0])) == 7


@pytest.mark.slow
def test_simulate_in_local_processes_is_the_serial_run():
    spec = emp.NetworkSpec("tanh", sigma_w2=1.5, width=10, depth=2)
    X = np.random.default_rng(1).standard_normal((3, 5))
    serial = emp.simulate(spec, X, 5, 3, gradients=False)
    _same_records(serial, emp.simulate(spec, X, 5, 3, gradients=False, workers=2))
    # the serial stream is the stream of run: network i is the i-th run of one generator
    rng = np.random.default_rng(3)
    for i in range(5):
        assert np.array_equal(emp.run(spec, X, rng, gradients=False).q, serial.q[i])


def _compare_diagrams(a, b):
    assert a.activation == b.activation and a.shape == b.shape and a.n_reference == b.n_reference
    for name in _EXACT:
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=name != "phase"), name
    for name in ("c_star", "chi_c"):
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        assert np.nanmax(np.abs(x - y)) <= 1e-13, name
    fin = np.isfinite(a.xi_c)
    assert np.array_equal(fin, np.isfinite(b.xi_c))
    assert np.allclose(a.xi_c[fin], b.xi_c[fin], rtol=1e-9, atol=0)


def test_phase_diagram_on_a_cluster_is_the_local_one(client):
    sw, sb = np.linspace(0.5, 4.0, 13), np.linspace(0.0, 1.5, 9)
    local = mf.phase_diagram("tanh", sw, sb)
    seen = []
    remote = mf.phase_diagram("tanh", sw, sb, client=client, progress=lambda d, t: seen.append((d, t)))
    _compare_diagrams(local, remote)
    assert seen[-1] == (sw.size * sb.size,) * 2 and len(seen) > 1
    assert np.array_equal(remote.sigma_b2, sb) and np.array_equal(remote.sigma_w2, sw)


@pytest.mark.slow
def test_many_activations_in_one_sweep(client):
    sw, sb = np.linspace(0.5, 4.0, 11), np.linspace(0.0, 1.0, 6)
    acts = ["relu", "x*exp(-x**2/2) + x", mf.activation("leaky_relu", alpha=0.2)]
    many = mf.phase_diagrams(acts, sw, sb, client=client)
    assert [d.activation for d in many] == ["relu", "x*exp(-x**2/2) + x", "leaky_relu(alpha=0.2)"]
    for act, d in zip(acts, many):
        _compare_diagrams(mf.phase_diagram(act, sw, sb), d)
    assert not np.array_equal(many[0].chi_1, many[2].chi_1)


def test_sweep_inputs_are_checked_before_any_work(client):
    with pytest.raises(TypeError, match="list of activations"):
        mf.phase_diagrams("tanh")
    with pytest.raises(ValueError, match="acts is empty"):
        mf.phase_diagrams([])
    with pytest.raises(ValueError, match="workers"):
        mf.phase_diagram("tanh", [1.0, 2.0], [0.0], workers=0)
    with pytest.raises(ValueError, match="sigma_w2"):
        mf.phase_diagrams(["tanh"], [2.0, 1.0], [0.0], client=client)
    with pytest.raises(TypeError, match="cannot be sent to other processes"):
        mf.phase_diagram(mf.activation(lambda x: np.tanh(x), lambda x: 1 - np.tanh(x) ** 2), [1.0, 2.0], [0.0],
                         client=client)
    spec = emp.NetworkSpec("tanh", sigma_w2=1.0, width=4, depth=1)
    with pytest.raises(ValueError, match="workers"):
        emp.simulate(spec, np.ones((2, 3)), 2, 0, workers=-1)
    with pytest.raises(TypeError, match="client"):
        emp.simulate(spec, np.ones((2, 3)), 2, 0, client=object())


def test_unreachable_scheduler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(runner, "CONNECT_TIMEOUT", 2.0)
    spec = emp.NetworkSpec("tanh", sigma_w2=1.0, width=4, depth=1)
    with pytest.raises(ValueError, match="could not reach the Dask scheduler"):
        emp.simulate(spec, np.ones((2, 3)), 2, 0, client="tcp://127.0.0.1:9")
    with pytest.raises(ValueError, match="could not reach the Dask scheduler"):
        mf.phase_diagram("tanh", [1.0, 2.0], [0.0, 0.5], client="tcp://127.0.0.1:9")


def test_command_line_phase_with_an_unreachable_scheduler_writes_nothing(monkeypatch, tmp_path, capsys):
    from meanfield.cli import main

    monkeypatch.setattr(runner, "CONNECT_TIMEOUT", 2.0)
    out = tmp_path / "ph.npz"
    code = main(["phase", "tanh", "--sigma-w2", "1:2:3", "--sigma-b2", "0:0.5:2", "--no-figure",
                 "--output", str(out), "--scheduler", "tcp://127.0.0.1:9"])
    assert code == 2 and "could not reach the Dask scheduler" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------
# GP prediction by conjugate gradients, on kernels in memory, in dask arrays and in zarr stores
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_kernels():
    """An NNGP of 600 digits-like inputs (pixel blobs of 10 classes) and its test block."""
    rng = np.random.default_rng(4)
    centres = rng.uniform(0, 16, size=(10, 64)) * (rng.random((10, 64)) < 0.4)
    labels = rng.integers(0, 10, 700)
    X = np.clip(centres[labels] + rng.normal(0, 3.0, (700, 64)), 0, 16)
    args = dict(depth=4, sigma_w2=2.0, sigma_b2=0.05)
    K = mf.nngp(X[:600], None, "relu", **args)
    Kt = mf.nngp(X[600:], X[:600], "relu", **args)
    y = np.where(labels[:600, None] == np.arange(3), 0.9, -0.1)
    return X, K, Kt, y


def _dense_mean(K, Kt, y, noise):
    return Kt @ np.linalg.solve(K + noise * np.eye(K.shape[0]), y)  # LU, independent of Cholesky and CG


@pytest.mark.parametrize("preconditioner", ["pivoted-cholesky", "block-jacobi", "jacobi", None])
def test_cg_mean_is_the_dense_solve(digits_kernels, preconditioner):
    _, K, Kt, y = digits_kernels
    ref = _dense_mean(K, Kt, y, 1e-3)
    mean, info = mf.gp.predict_from_kernel(K, y, Kt, noise=1e-3, preconditioner=preconditioner, tol=1e-12,
                                           return_info=True)
    assert np.max(np.abs(mean - ref)) <= 1e-8 * np.max(np.abs(ref))
    assert info.solver == "cg" and 0 < info.iterations <= 600 and info.residual <= 1e-12
    # one target, predicted at the training inputs
    one, _ = mf.gp.predict_from_kernel(K, y[:, 0], K, noise=1e-3, preconditioner=preconditioner, tol=1e-12,
                                       return_info=True)
    assert one.shape == (600,)
    assert np.max(np.abs(one - K @ np.linalg.solve(K + 1e-3 * np.eye(600), y[:, 0]))) <= 1e-8


def test_pivoted_cholesky_needs_fewer_iterations(digits_kernels):
    _, K, Kt, y = digits_kernels
    its = {p: mf.gp.predict_from_kernel(K, y, Kt, noise=1e-4, preconditioner=p, tol=1e-10, return_info=True)[1]
           .iterations for p in ("pivoted-cholesky", "jacobi")}
    assert its["pivoted-cholesky"] < its["jacobi"] / 2


def test_cg_on_a_zarr_store_and_a_dask_array(digits_kernels, tmp_path):
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    _, K, Kt, y = digits_kernels
    K, Kt, y = K[:300, :300], Kt[:, :300], y[:300]  # every CG iteration reads the store: keep it small
    ref = _dense_mean(K, Kt, y, 1e-2)
    root = zarr.open(str(tmp_path / "K.zarr"), mode="w", shape=K.shape, chunks=(256, 256), dtype="f8")
    root[:] = K  # ragged chunks: 300 = 256 + 44
    group = zarr.open_group(str(tmp_path / "G.zarr"), mode="w")
    make = getattr(group, "create_array", None) or group.create_dataset
    make("K", shape=Kt.shape, chunks=(64, 256), dtype="f8")[:] = Kt
    make("other", shape=(2,), dtype="f8")
    mean = mf.gp.predict_from_kernel(str(tmp_path / "K.zarr"), y, str(tmp_path / "G.zarr"), noise=1e-2, tol=1e-12)
    assert np.max(np.abs(mean - ref)) <= 1e-8 * np.max(np.abs(ref))
    mean = mf.gp.predict_from_kernel(da.from_array(K, chunks=128), y, da.from_array(Kt, chunks=50), noise=1e-2,
                                     tol=1e-12, preconditioner="jacobi")
    assert np.max(np.abs(mean - ref)) <= 1e-8 * np.max(np.abs(ref))
    with pytest.raises(FileNotFoundError, match="no zarr store"):
        mf.gp.predict_from_kernel(str(tmp_path / "missing.zarr"), y, Kt)
    two = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    make2 = getattr(two, "create_array", None) or two.create_dataset
    make2("a", shape=(2, 2), dtype="f8")
    make2("b", shape=(2, 2), dtype="f8")
    with pytest.raises(ValueError, match="one named 'K'"):
        mf.gp.predict_from_kernel(str(tmp_path / "two.zarr"), y[:2], np.eye(2))


@pytest.mark.slow
def test_cg_on_the_cluster(client, digits_kernels):
    da = pytest.importorskip("dask.array")
    _, K, Kt, y = digits_kernels
    K, Kt, y = K[:300, :300], Kt[:, :300], y[:300, 0]
    ref = _dense_mean(K, Kt, y, 1e-1)
    with client.as_current():  # the kernel lives on the workers; every product is computed there
        K_dist, Kt_dist = client.persist([da.from_array(K, chunks=150), da.from_array(Kt, chunks=150)])
        mean = mf.gp.predict_from_kernel(K_dist, y, Kt_dist, noise=1e-1, tol=1e-11, preconditioner="jacobi")
    assert np.max(np.abs(mean - ref)) <= 1e-8 * np.max(np.abs(ref))


def test_estimators_with_cg_are_the_cholesky_ones(digits_kernels):
    X, _, _, y = digits_kernels
    kw = dict(act="relu", depth=4, sigma_w2=2.0, sigma_b2=0.05, noise=1e-3)
    exact = mf.NNGPRegressor(**kw).fit(X[:300], y[:300, 0])
    iterative = mf.NNGPRegressor(**kw, solver="cg", tol=1e-12).fit(X[:300], y[:300, 0])
    assert iterative.L_ is None and iterative.solve_info_.iterations > 0 and exact.solve_info_.solver == "cholesky"
    m0, s0 = exact.predict(X[600:], return_std=True)
    m1, s1 = iterative.predict(X[600:], return_std=True)
    assert np.max(np.abs(m1 - m0)) <= 1e-8 * np.max(np.abs(m0))
    assert np.max(np.abs(s1 - s0)) <= 1e-7 * np.max(s0)
    c0, c1 = exact.predict(X[600:610], return_cov=True)[1], iterative.predict(X[600:610], return_cov=True)[1]
    assert np.max(np.abs(c1 - c0)) <= 1e-7 * np.max(np.abs(c0))
    labels = np.argmax(y[:300], axis=1)
    a = mf.NNGPClassifier(act="relu", depth=4, noise=1e-3).fit(X[:300], labels).decision_function(X[600:])
    b = mf.NNGPClassifier(act="relu", depth=4, noise=1e-3, solver="cg", tol=1e-12).fit(X[:300], labels)
    assert np.max(np.abs(b.decision_function(X[600:]) - a)) <= 1e-8 * np.max(np.abs(a))


def test_cg_that_does_not_converge_says_so(digits_kernels):
    _, K, Kt, y = digits_kernels
    with pytest.raises(np.linalg.LinAlgError, match=r"did not converge: relative residual .* after 3 iterations"):
        mf.gp.predict_from_kernel(K, y, Kt, noise=1e-6, max_iter=3, preconditioner="jacobi")
    X = digits_kernels[0]
    with pytest.raises(np.linalg.LinAlgError, match="did not converge"):
        mf.NNGPRegressor("relu", 4, solver="cg", max_iter=2, noise=1e-6, preconditioner="jacobi").fit(X[:100], y[:100])


def test_bad_kernel_input_is_refused(digits_kernels):
    _, K, Kt, y = digits_kernels
    gp = mf.gp
    with pytest.raises(ValueError, match="K_train must be square"):
        gp.predict_from_kernel(K[:, :500], y, Kt)
    with pytest.raises(ValueError, match="K_test_train must have shape"):
        gp.predict_from_kernel(K, y, Kt[:, :500])
    with pytest.raises(ValueError, match="y must have shape"):
        gp.predict_from_kernel(K, y[:500], Kt)
    bad = K.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="K_train must be finite"):
        gp.predict_from_kernel(bad, y, Kt)
    with pytest.raises(ValueError, match="noise"):
        gp.predict_from_kernel(K, y, Kt, noise=-1.0)
    with pytest.raises(ValueError, match="tol"):
        gp.predict_from_kernel(K, y, Kt, tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        gp.predict_from_kernel(K, y, Kt, max_iter=0)
    with pytest.raises(ValueError, match="preconditioner"):
        gp.predict_from_kernel(K, y, Kt, preconditioner="ilu")
    with pytest.raises(ValueError, match="solver"):
        gp.predict_from_kernel(K, y, Kt, solver="lu")
    with pytest.raises(ValueError, match="solver"):
        mf.NNGPRegressor(solver="lu").fit(np.eye(3), np.ones(3))
    with pytest.raises(TypeError, match="K_train"):
        gp.predict_from_kernel({"K": 1}, y, Kt)
    with pytest.raises(ValueError, match="matrix"):
        gp.predict_from_kernel(np.ones(4), y[:4], Kt)
    # Cholesky of the same inputs as the reference, through the same function
    ref = gp.predict_from_kernel(K, y, Kt, noise=1e-3, solver="cholesky")
    assert np.max(np.abs(ref - _dense_mean(K, Kt, y, 1e-3))) <= 1e-10 * np.max(np.abs(ref))
