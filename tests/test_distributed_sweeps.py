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
