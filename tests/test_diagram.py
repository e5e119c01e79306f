"""Phase diagrams: the fast path against analyze (the slow per-point reference), closed forms,
published values, files and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special

import meanfield as mf
from meanfield import diagram
from meanfield._diagram_engine import mehler_coefficients, mehler_params
from meanfield.diagram import GridTooLargeError, load_phase_diagram, phase_diagram


def _compare(pd, act, rho=1.0, n=None, seed=0):
    """Compare a diagram with analyze on (a subsample of) its points."""
    rng = np.random.default_rng(seed)
    nb, nw = pd.shape
    if n is None:
        I, J = np.meshgrid(np.arange(nb), np.arange(nw), indexing="ij")
        I, J = I.ravel(), J.ravel()
    else:
        chaotic = np.argwhere(pd.phase == "chaotic")
        ordered = np.argwhere(pd.phase != "chaotic")
        pick = np.concatenate([chaotic[rng.choice(len(chaotic), min(n, len(chaotic)), replace=False)],
                               ordered[rng.choice(len(ordered), min(n // 2, len(ordered)), replace=False)]])
        I, J = pick[:, 0], pick[:, 1]
    ref = mf.analyze(act, pd.sigma_w2[J], pd.sigma_b2[I], rho=rho)
    return I, J, ref


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    same_inf = (a == b)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(a - b) / np.abs(b)
    return np.where(same_inf, 0.0, r)


def test_tanh_matches_analyze_to_core_accuracy():
    # 40 x 40 points over the range; every field at 1e-9 (xi_c 1e-7 off the line)
    pd = phase_diagram("tanh", np.linspace(0.5, 5, 40), np.linspace(0, 2, 40))
    assert pd.n_reference == 0
    I, J, ref = _compare(pd, "tanh", n=24, seed=1)
    assert np.all(pd.phase[I, J] == ref.phase)
    for field in ("q_star", "chi_1", "xi_q", "q_slope", "gradient_factor"):
        assert np.max(_rel(getattr(pd, field)[I, J], getattr(ref, field))) < 1e-9, field
    np.testing.assert_allclose(pd.c_star[I, J], ref.c_star, rtol=0, atol=1e-9)  # NaN where both are NaN
    assert np.max(_rel(pd.chi_c[I, J], ref.chi_c)) < 1e-9
    away = np.abs(ref.chi_1 - 1) > 1e-2
    assert np.max(_rel(pd.xi_c[I, J][away], ref.xi_c[away])) < 1e-7
    assert np.max(_rel(pd.trainable_depth[I, J][away], ref.trainable_depth[away])) < 1e-7


def test_tanh_near_critical_line_matches_analyze():
    # c* close to 1 is where the Hermite series converges slowest
    crit = float(mf.critical_sigma_w2("tanh", 0.5))
    pd = phase_diagram("tanh", crit * np.array([1.0005, 1.005, 1.05, 1.5]), [0.5])
    ref = mf.analyze("tanh", pd.sigma_w2, 0.5)
    assert np.all(pd.phase[0] == "chaotic")
    assert np.max(np.abs(pd.c_star[0] - ref.c_star)) < 1e-9
    assert np.max(_rel(pd.chi_c[0], ref.chi_c)) < 1e-9
    assert 1 - pd.c_star[0, 0] < 1e-2  # really close to the line


def test_dropout_matches_analyze():
    pd = phase_diagram("tanh", np.linspace(0.5, 4, 6), np.linspace(0, 1, 3), rho=0.9)
    I, J, ref = _compare(pd, "tanh", rho=0.9)
    for field in ("q_star", "chi_1", "xi_q", "chi_c", "gradient_factor"):
        assert np.max(_rel(getattr(pd, field)[I, J], getattr(ref, field))) < 1e-9, field
    np.testing.assert_allclose(pd.c_star[I, J], ref.c_star, rtol=0, atol=1e-9)  # NaN where both are NaN
    assert np.max(_rel(pd.xi_c[I, J], ref.xi_c)) < 1e-7
    assert np.all(pd.c_star < 1)  # dropout: c = 1 is no longer a fixed point (pseudo-linear: c* = 0)


@pytest.mark.parametrize("act", ["erf", "sin"])
def test_closed_form_activations_match_analyze(act):
    pd = phase_diagram(act, np.linspace(0.3, 3, 6), np.linspace(0, 1, 4))
    I, J, ref = _compare(pd, act)
    assert np.all(pd.phase[I, J] == ref.phase)
    for field in ("q_star", "chi_1", "chi_c", "xi_q"):
        assert np.max(_rel(getattr(pd, field)[I, J], getattr(ref, field))) < 1e-10, field
    np.testing.assert_allclose(pd.c_star[I, J], ref.c_star, rtol=0, atol=1e-10)  # NaN where both are NaN


def test_erf_closed_forms():
    # Williams (1997): E[erf(sqrt(q) z)^2] = (2/pi) asin(2q/(1+2q)), E[erf'^2] = 4/(pi sqrt(1+4q))
    pd = phase_diagram("erf", np.linspace(0.2, 3, 8), np.linspace(0.01, 1, 5))
    w, b = np.meshgrid(pd.sigma_w2, pd.sigma_b2)
    q = pd.q_star
    assert np.max(np.abs(w * 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q)) + b - q) / q) < 1e-12
    assert np.max(_rel(pd.chi_1, w * 4 / (np.pi * np.sqrt(1 + 4 * q)))) < 1e-12
    # critical line at sigma_b2 = 0 is pi/4
    assert abs(phase_diagram("erf", [1.0], [0.0]).critical_line[0] - np.pi / 4) < 1e-12


def test_relu_closed_forms_and_divergence():
    pd = phase_diagram("relu", np.array([0.5, 1.0, 1.9, 2.5, 3.0]), np.array([0.1, 0.2, 1.0]))
    w, b = np.meshgrid(pd.sigma_w2, pd.sigma_b2)
    fin = w < 2
    np.testing.assert_allclose(pd.q_star[fin], (b / (1 - w / 2))[fin], rtol=1e-13)
    np.testing.assert_allclose(pd.chi_1[fin], (w / 2)[fin], rtol=1e-13)
    assert np.all(np.isinf(pd.q_star[~fin])) and np.all(pd.phase[~fin] == "divergent")
    assert pd.q_star[1, 2] == pytest.approx(4.0, rel=1e-13)  # brain-research/nngp: w 1.9, b 0.2
    assert np.all(np.isnan(pd.critical_line))  # edge of chaos only at (sigma_b2, sigma_w2) = (0, 2)
    assert phase_diagram("relu", [1.0], [0.0]).critical_line[0] == pytest.approx(2.0, rel=1e-12)


def test_tanh_critical_line_published_values():
    sb = np.array([0.0, 0.05**2, 0.2**2, 0.05, 0.5**2, 1.0, 25.0])
    crit = phase_diagram("tanh", [1.0], sb).critical_line
    assert crit[0] == pytest.approx(1.0, abs=1e-12)  # tanh at sigma_b2 = 0
    assert crit[3] == pytest.approx(1.76, abs=0.01)  # Schoenholz et al. 2017
    # Hayou et al. 2019 Monte Carlo (std devs sigma_b, sigma_w; ~0.3% noise -> 0.7% in variance)
    hayou_w = np.array([1.1243, 1.3079, 1.5525, 1.8576, 3.3355]) ** 2
    np.testing.assert_allclose(crit[[1, 2, 4, 5, 6]], hayou_w, rtol=7e-3)
    # and the core's own critical line
    np.testing.assert_allclose(crit, mf.critical_sigma_w2("tanh", sb), rtol=1e-10)


def test_critical_line_separates_phases():
    pd = phase_diagram("tanh", np.linspace(0.5, 5, 50), np.linspace(0.1, 2, 10))
    for i, w_c in enumerate(pd.critical_line):
        assert np.all(pd.phase[i][pd.sigma_w2 < w_c * 0.999] == "ordered")
        assert np.all(pd.phase[i][pd.sigma_w2 > w_c * 1.001] == "chaotic")


def test_hermite_coefficients_against_scipy_quad():
    # b_k(q) = E[tanh(sqrt(q) z) He_k(z)] / sqrt(k!), independently by scipy quad
    q = 2.0
    K, h = mehler_params(q, 0)
    _, b_odd = mehler_coefficients(np.tanh, np.array([q]), K, h, parity=1)
    for k in (1, 3, 9, 31):
        def f(z, k=k):
            return (np.tanh(np.sqrt(q) * z) * special.eval_hermitenorm(k, z) * np.exp(-z * z / 2)
                                    / np.sqrt(2 * np.pi * math.factorial(k)))
        ref = 2 * integrate.quad(f, 0, 14, epsabs=1e-15, epsrel=1e-13, limit=400)[0]
        assert abs(b_odd[0, (k - 1) // 2] - ref) < 1e-13, k


def test_kinked_activation_falls_back_to_reference():
    # elu has a kink at 0: the Hermite series fails its sum-rule check near c = 1 and the
    # point is computed by the core instead, with the same result as analyze
    pd = phase_diagram("elu", np.array([1.5, 2.0]), np.array([0.0, 0.5]))
    I, J, ref = _compare(pd, "elu")
    assert np.all(pd.phase[I, J] == ref.phase)
    np.testing.assert_allclose(pd.c_star[I, J], ref.c_star, rtol=0, atol=1e-9)  # NaN where both are NaN
    assert np.max(_rel(pd.chi_c[I, J], ref.chi_c)) < 1e-9


def test_chunks_do_not_change_results(monkeypatch):
    sw, sb = np.linspace(0.5, 5, 13), np.linspace(0, 2, 7)
    whole = phase_diagram("tanh", sw, sb)
    monkeypatch.setattr(diagram, "_CHUNK", 10)
    calls = []
    parts = phase_diagram("tanh", sw, sb, progress=lambda d, t: calls.append((d, t)))
    # identical up to the truncation order of the Hermite series, which depends on the batch
    for field in ("q_star", "chi_1", "c_star", "chi_c"):
        np.testing.assert_allclose(getattr(whole, field), getattr(parts, field), rtol=1e-12, atol=1e-13)
    assert calls[-1] == (91, 91) and len(calls) == 10
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:], strict=False))


def test_save_load_round_trip(tmp_path):
    pd = phase_diagram("tanh", np.linspace(0.5, 3, 5), np.linspace(0, 1, 4), rho=0.95)
    path = tmp_path / "d.npz"
    pd.save(path)
    back = load_phase_diagram(path)
    assert back.activation == "tanh" and back.rho == 0.95 and back.n_reference == pd.n_reference
    for field in ("sigma_w2", "sigma_b2", "q_star", "c_star", "chi_1", "chi_c", "q_slope", "xi_q", "xi_c",
                  "trainable_depth", "gradient_factor", "critical_line"):
        np.testing.assert_array_equal(getattr(back, field), getattr(pd, field))
    np.testing.assert_array_equal(back.phase, pd.phase)
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]  # no temporary left behind


def test_save_is_atomic(tmp_path, monkeypatch):
    pd = phase_diagram("erf", [1.0, 2.0], [0.1])
    path = tmp_path / "d.npz"

    def broken(fh, **arrays):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        pd.save(path)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary


def test_save_to_unwritable_path(tmp_path):
    pd = phase_diagram("erf", [1.0], [0.1])
    with pytest.raises(OSError, match="cannot write"):
        pd.save(tmp_path / "missing" / "d.npz")


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a meanfield phase-diagram file"):
        load_phase_diagram(tmp_path / "x.npz")


@pytest.mark.parametrize("bad, match", [
    ([-1.0, 1.0], "finite and >= 0"), ([np.nan], "finite and >= 0"), ([np.inf], "finite and >= 0"),
    ([], "empty"), ([[1.0, 2.0]], "1-D"), ([2.0, 1.0], "increasing"),
])
def test_bad_grids(bad, match):
    with pytest.raises(ValueError, match=match):
        phase_diagram("tanh", bad, [0.1])
    with pytest.raises(ValueError, match=match):
        phase_diagram("tanh", [1.0], bad)


def test_too_large_grid_is_refused_with_the_size():
    with pytest.raises(GridTooLargeError, match=r"100000 x 100000 .* needs about 1\.\d+ TB"):
        phase_diagram("tanh", np.arange(1e5), np.arange(1e5))
    with pytest.raises(GridTooLargeError, match="needs about"):
        phase_diagram("tanh", np.linspace(0, 1, 10), np.linspace(0, 1, 10), memory_limit=1000)


def test_phase_labels_and_depths_consistent():
    pd = phase_diagram("tanh", np.linspace(0.5, 5, 20), np.linspace(0, 2, 6))
    assert set(np.unique(pd.phase)) <= set(diagram.PHASES)
    pseudo = pd.phase == "pseudo-linear"  # sigma_b2 = 0, sigma_w2 < 1: q* = 0, tanh acts linearly
    np.testing.assert_array_equal(pseudo, (pd.sigma_b2[:, None] == 0) & (pd.sigma_w2[None, :] < 1))
    assert np.all(np.isnan(pd.trainable_depth[pseudo]) & np.isnan(pd.c_star[pseudo]) & (pd.chi_c[pseudo] == 1))
    np.testing.assert_array_equal(pd.trainable_depth[~pseudo], 6 * pd.xi_c[~pseudo])
    assert np.all(pd.c_star[pd.phase == "ordered"] == 1.0)
    np.testing.assert_array_equal(pd.chi_c[pd.phase == "ordered"], pd.chi_1[pd.phase == "ordered"])


def test_critical_trainable_depth_interpolates_the_grid():
    pd = phase_diagram("tanh", np.linspace(1.0, 5.0, 401), [0.05, 0.5, 1.0])
    near = pd.critical_trainable_depth(0.05)
    ref = mf.analyze("tanh", 1.05 * pd.critical_line, pd.sigma_b2).trainable_depth
    np.testing.assert_allclose(near, ref, rtol=1e-2)  # linear interpolation on a 0.01 grid


# --- loading: every file save writes, and one clear ValueError for anything else ---

_ALL_FIELDS = ("sigma_w2", "sigma_b2", "q_star", "c_star", "chi_1", "chi_c", "q_slope", "xi_q", "xi_c",
               "trainable_depth", "gradient_factor", "critical_line")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real tanh diagram on a 5 x 6 grid with sigma_b2 = 0 (pseudo-linear points), and its file."""
    pd = phase_diagram("tanh", np.linspace(0.5, 3, 6), [0.0, 0.25, 0.5, 1.0, 2.0])
    path = tmp_path_factory.mktemp("saved") / "tanh.npz"
    pd.save(path)
    return pd, path


def _members(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _assert_same(back, pd):
    assert back.activation == pd.activation and back.rho == pd.rho and back.n_reference == pd.n_reference
    for field in _ALL_FIELDS:
        np.testing.assert_array_equal(getattr(back, field), getattr(pd, field), err_msg=field)  # NaN == NaN
        assert getattr(back, field).dtype == np.float64, field
    np.testing.assert_array_equal(back.phase, pd.phase)


def test_round_trip_with_every_phase_code(saved):
    pd, path = saved
    assert {"pseudo-linear", "ordered", "chaotic"} <= set(pd.phase.ravel())
    assert np.isnan(pd.c_star).any() and np.isnan(pd.trainable_depth).any() and np.isinf(pd.xi_c).any()
    _assert_same(load_phase_diagram(path), pd)
    _assert_same(diagram.PhaseDiagram.load(str(path)), pd)


def test_loads_files_written_before_the_pseudo_linear_phase(tmp_path):
    # older files store the four phase names of their time; codes index the stored names
    pd = phase_diagram("erf", np.linspace(0.5, 3, 4), [0.1, 1.0])
    pd.save(tmp_path / "new.npz")
    old = _members(tmp_path / "new.npz")
    old["phase_names"] = np.array(diagram.PHASES[:4])
    del old["n_reference"]  # optional
    np.savez(tmp_path / "old.npz", **old)
    back = load_phase_diagram(tmp_path / "old.npz")
    np.testing.assert_array_equal(back.phase, pd.phase)
    assert back.n_reference == 0


def test_codes_follow_the_stored_names(saved, tmp_path):
    pd, path = saved
    arrays = _members(path)
    order = [3, 1, 4, 0, 2]  # stored names in another order, codes renumbered to match
    arrays["phase_names"] = np.array(diagram.PHASES)[order]
    arrays["phase_code"] = np.argsort(order)[arrays["phase_code"]].astype(np.int8)
    np.savez(tmp_path / "perm.npz", **arrays)
    np.testing.assert_array_equal(load_phase_diagram(tmp_path / "perm.npz").phase, pd.phase)


_DROP = object()


@pytest.mark.parametrize("key, value, match", [
    ("phase_code", lambda a: np.full_like(a, -1), r"phase codes must be integers in 0\.\.4"),
    ("phase_code", lambda a: np.full_like(a, 5), r"phase codes must be integers in 0\.\.4"),
    ("phase_code", lambda a: a.astype(float), r"phase codes must be integers in 0\.\.4"),
    ("phase_code", lambda a: a[:, :3], r"field phase_code has shape \(5, 3\), expected \(5, 6\)"),
    ("phase_names", lambda a: np.array(diagram.PHASES[:4]), r"phase codes must be integers in 0\.\.3"),
    ("phase_names", lambda a: np.array([*a[:4], "frozen"]), "phase_names must be distinct names from meanfield"),
    ("phase_names", lambda a: np.array([*a[:4], a[0]]), "phase_names must be distinct names from meanfield"),
    ("phase_names", lambda a: np.arange(5), "phase_names must be a 1-D array of phase names"),
    ("q_star", lambda a: np.ones((2, 2)),
     r"field q_star has shape \(2, 2\), expected \(5, 6\) = \(len\(sigma_b2\), len\(sigma_w2\)\)"),
    ("q_star", lambda a: a.T, r"field q_star has shape \(6, 5\), expected \(5, 6\)"),
    ("q_star", lambda a: np.array("1.0"), "field q_star must be a float array"),
    ("c_star", lambda a: np.zeros((5, 6), dtype=int), "field c_star must be a float array"),
    ("xi_c", lambda a: a.astype(complex), "field xi_c must be a float array"),
    ("q_star", lambda a: np.where(a == a.max(), np.nan, a), "field q_star has a NaN value"),
    ("q_star", lambda a: -a, "field q_star has negative values"),
    ("chi_1", lambda a: np.where(a == a.max(), -np.inf, a), "field chi_1 has a -inf value"),
    ("c_star", lambda a: np.where(a == 1, np.inf, a), r"field c_star has a \+inf value .* allowed there: NaN"),
    ("sigma_w2", lambda a: a[::-1], "sigma_w2 must be a strictly increasing 1-D float array"),
    ("sigma_w2", lambda a: a.reshape(2, 3), "sigma_w2 must be a strictly increasing 1-D float array"),
    ("sigma_w2", lambda a: a.astype(str), "sigma_w2 must be a strictly increasing 1-D float array"),
    ("sigma_w2", lambda a: np.where(a == a.max(), np.nan, a), "sigma_w2 .* non-finite values"),
    ("sigma_b2", lambda a: np.where(a == a.max(), np.inf, a), "sigma_b2 .* non-finite values"),
    ("sigma_b2", lambda a: a - 1, "sigma_b2 .* negative values"),
    ("sigma_b2", lambda a: a[:0], "sigma_b2 must be a strictly increasing 1-D float array"),
    ("format", _DROP, "format version missing"),
    ("format", lambda a: np.array(2), "unsupported phase-diagram format version 2"),
    ("format", lambda a: np.array("1"), "format version must be an integer"),
    ("rho", lambda a: np.array(0.0), r"rho \(dropout keep probability\) must be a number in \(0, 1\]"),
    ("rho", lambda a: np.array(1.5), r"must be a number in \(0, 1\]"),
    ("rho", lambda a: np.array(np.nan), r"must be a number in \(0, 1\]"),
    ("rho", lambda a: np.array([1.0, 1.0]), r"must be a number in \(0, 1\]"),
    ("activation", lambda a: np.array(3), "activation must be a non-empty string"),
    ("activation", lambda a: np.array(["tanh", "erf"]), "activation must be a non-empty string"),
    ("activation", lambda a: np.array(""), "activation must be a non-empty string"),
    ("critical_line", lambda a: a[:3], r"critical_line has shape \(3,\), expected \(5,\) = \(len\(sigma_b2\),\)"),
    ("critical_line", lambda a: np.array("x"), "critical_line must be a float array"),
    ("critical_line", lambda a: np.full_like(a, np.inf), "critical_line must hold finite sigma_w2 values"),
    ("n_reference", lambda a: np.array(-1), "n_reference must be a non-negative integer"),
    ("n_reference", lambda a: np.array(0.5), "n_reference must be a non-negative integer"),
    ("n_reference", lambda a: np.array(31), "n_reference must be a non-negative integer"),
    ("q_star", _DROP, "not a meanfield phase-diagram file: missing q_star"),
    ("phase_names", _DROP, "not a meanfield phase-diagram file: missing phase_names"),
])
def test_load_rejects_corrupt_contents(saved, tmp_path, key, value, match):
    _, path = saved
    arrays = _members(path)
    if value is _DROP:
        del arrays[key]
    else:
        arrays[key] = value(arrays[key])
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=match) as err:
        load_phase_diagram(bad)
    assert str(bad) in str(err.value)  # the message names the file


def _truncated(path, src):
    data = src.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _random_bytes(path, src):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _zip_garbage(path, src):  # zip magic, then nothing sensible
    path.write_bytes(b"PK\x03\x04" + bytes(200))


def _pickled_member(path, src):
    arrays = _members(src)
    arrays["q_star"] = np.array([{"a": 1}], dtype=object)
    np.savez(path, **arrays)


def _not_npy_member(path, src):
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, b"garbage" if item.filename == "q_star.npy" else zin.read(item))


def _npy_content(path, src):  # an .npy array under the .npz name
    with path.open("wb") as fh:
        np.save(fh, np.zeros(3))


@pytest.mark.parametrize("make", [
    _truncated, _random_bytes, _zip_garbage, _pickled_member, _not_npy_member,
    lambda path, src: path.write_bytes(b""),
    _npy_content,
    lambda path, src: np.savez(path, a=np.zeros(2)),
], ids=["truncated", "random-bytes", "zip-garbage", "pickled-member", "not-npy-member", "empty", "npy",
        "unrelated-zip"])
def test_load_rejects_files_that_are_not_phase_diagrams(saved, tmp_path, make):
    bad = tmp_path / "bad.npz"
    make(bad, saved[1])
    assert bad.exists()
    with pytest.raises(ValueError, match="not a meanfield phase-diagram file") as err:
        load_phase_diagram(bad)
    assert str(bad) in str(err.value)


def test_load_rejects_npy_file(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((5, 6)))
    with pytest.raises(ValueError, match="not a meanfield phase-diagram file: it is a single .npy array"):
        load_phase_diagram(tmp_path / "x.npy")


def test_load_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_phase_diagram(tmp_path / "absent.npz")


def test_progress_must_be_callable():
    with pytest.raises(TypeError, match="progress must be a callable"):
        phase_diagram("tanh", [1.0, 2.0], [0.1], progress=3)
