"""``meanfield spectrum``: Jacobian singular values against closed forms, the verdict in words, clear errors."""

from __future__ import annotations

import json

import pytest

from meanfield.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("depth", [1, 3, 10])
def test_linear_gaussian_is_a_product_of_ginibre_matrices(capsys, depth):
    # J = W^L ... W^1, W_ij ~ N(0, 1/N): the squared singular values follow the Fuss-Catalan law,
    # mean 1, variance L, largest (L+1)^(L+1)/L^L; orthogonal weights make J orthogonal (an atom at 1)
    code, out, err = run(capsys, "spectrum", "linear", "--depth", str(depth), "--sigma-w2", "1", "--sigma-b2", "0",
                         "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["activation"] == "linear" and data["depth"] == depth and set(data["spectra"]) == {
        "gaussian", "orthogonal"}
    g, o = data["spectra"]["gaussian"], data["spectra"]["orthogonal"]
    assert g["mean"] == pytest.approx(1.0, rel=1e-12)
    assert g["variance"] == pytest.approx(depth, rel=1e-12)
    edge = (depth + 1) ** (depth + 1) / depth ** depth
    assert g["edge"] == pytest.approx(edge, rel=1e-10) and g["edge_over_mean"] == pytest.approx(edge, rel=1e-10)
    assert g["atoms"] == [] and g["chi_1"] == pytest.approx(1.0, rel=1e-14)
    assert g["moments"][1] == pytest.approx(depth + 1, rel=1e-12) and not g["near_isometry"]
    assert o["variance"] == pytest.approx(0.0, abs=1e-14) and o["atoms"] == [[1.0, 1.0]] and o["edge"] == 1.0
    assert o["near_isometry"]


@pytest.mark.parametrize("depth", [2, 16])
def test_relu_published_variances(capsys, depth):
    # at (2, 0) a fraction p = 1/2 of the units is active: variance L/p (Gaussian), L(1-p)/p (orthogonal)
    # (Pennington, Schoenholz & Ganguli 2017), half of the singular values are 0
    p = 0.5
    for weights, want in (("gaussian", depth / p), ("orthogonal", depth * (1 - p) / p)):
        code, out, _ = run(capsys, "spectrum", "relu", "--depth", str(depth), "--sigma-w2", "2", "--sigma-b2", "0",
                           "--weights", weights, "--json")
        assert code == 0
        data = json.loads(out)
        assert list(data["spectra"]) == [weights]
        s = data["spectra"][weights]
        assert s["mean"] == pytest.approx(1.0, rel=1e-13)
        assert s["variance"] == pytest.approx(want, rel=1e-12)
        assert s["normalized_variance"] == pytest.approx(want, rel=1e-12)
        assert [0.0, 0.5] in s["atoms"] and not s["near_isometry"]
        assert "cannot be isometric" in data["advice"]


def test_relu_gaussian_edge_closed_form(capsys):
    # largest squared singular value of a critical relu network with Gaussian weights: lambda(t) at
    # the larger root of t^2 - (L+1) t + L(1-p) = 0, lambda(t) = 2^L ((1+w)/w) (w t)^L with
    # w(t) = p / (t - 1) (d = phi'^2 is 0 or 1 with mass p = 1/2; Pennington et al. 2017)
    L, p = 8, 0.5
    t = ((L + 1) + ((L + 1) ** 2 - 4 * L * (1 - p)) ** 0.5) / 2
    w = p / (t - 1)
    want = 2.0 ** L * (1 + w) / w * (w * t) ** L
    code, out, _ = run(capsys, "spectrum", "relu", "--depth", str(L), "--sigma-w2", "2", "--weights", "gaussian",
                       "--json")
    assert code == 0
    assert json.loads(out)["spectra"]["gaussian"]["edge"] == pytest.approx(want, rel=1e-10)


def test_text_tanh_orthogonal_near_isometry(capsys):
    # tanh on the critical line at q* ~ 0.01: orthogonal weights keep the spectrum near isometric,
    # Gaussian weights add L to variance/mean^2
    code, out, err = run(capsys, "spectrum", "tanh", "--depth", "16", "--sigma-w2", "1.0197", "--sigma-b2", "1.26e-6")
    assert code == 0 and err == ""
    for words in ("q*", "chi_1", "mean", "variance", "edge / mean", "gaussian", "orthogonal", "atoms",
                  "orthogonal: near dynamical isometry", "gaussian: far from dynamical isometry",
                  "Gaussian weights alone add L = 16", "advice:"):
        assert words in out, words


def test_text_suggests_smaller_q_star_and_names_relu_limits(capsys):
    code, out, _ = run(capsys, "spectrum", "tanh", "--depth", "64", "--sigma-w2", "1.1775691", "--sigma-b2",
                       "8.32280425e-04", "--weights", "orthogonal")
    assert code == 0
    assert "far from dynamical isometry" in out and "smaller q* on the critical line" in out
    code, out, _ = run(capsys, "spectrum", "relu", "--depth", "10", "--sigma-w2", "2")
    assert code == 0
    assert "relu cannot be isometric" in out and "L/p" in out and "0 (0.5)" in out
    code, out, _ = run(capsys, "spectrum", "tanh", "--depth", "30", "--sigma-w2", "1.5", "--sigma-b2", "0.05",
                       "--weights", "gaussian")
    assert code == 0 and "off the critical line" in out and "vanish" in out


def test_hard_tanh_isometric_at_small_q_star(capsys):
    # hard tanh switches off a fraction 1 - p = P(|h| > 1) of its units, p = erf(1/sqrt(2 q*)) -> 1 as q* -> 0:
    # unlike relu it approaches isometry with orthogonal weights on the critical line at small q*
    code, out, _ = run(capsys, "spectrum", "hard_tanh", "--depth", "32", "--sigma-w2", "1.2", "--sigma-b2", "0.05",
                       "--json")
    assert code == 0
    data = json.loads(out)
    o = data["spectra"]["orthogonal"]
    p = 1 - o["atoms"][0][1]
    assert o["atoms"][0][0] == 0.0 and o["normalized_variance"] == pytest.approx(32 * (1 - p) / p, rel=1e-10)
    assert "cannot be isometric" not in data["advice"] and "smaller q* on the critical line" in data["advice"]


def test_edge_is_never_reported_below_the_mean(capsys):
    for act in ("selu", "tanh", "elu"):
        code, out, _ = run(capsys, "spectrum", act, "--depth", "32", "--sigma-w2", "1.2", "--sigma-b2", "0.05",
                           "--json")
        assert code == 0
        for s in json.loads(out)["spectra"].values():
            assert s["edge"] is None or s["edge"] >= s["mean"] * (1 - 1e-9)


def test_param_reaches_the_activation(capsys):
    # leaky relu at criticality sigma_w2 = 2/(1 + alpha^2): d = 1 or alpha^2 with mass 1/2, so
    # mu_2/mu_1^2 - 1 = ((1 - alpha^2)/(1 + alpha^2))^2 per layer, and orthogonal weights add nothing
    a = 0.5
    sw = 2 / (1 + a * a)
    code, out, _ = run(capsys, "spectrum", "leaky_relu", "--param", f"alpha={a}", "--depth", "5", "--sigma-w2",
                       repr(sw), "--sigma-b2", "0", "--weights", "orthogonal", "--json")
    assert code == 0
    s = json.loads(out)["spectra"]["orthogonal"]
    assert s["mean"] == pytest.approx(1.0, rel=1e-10)
    assert s["variance"] == pytest.approx(5 * ((1 - a * a) / (1 + a * a)) ** 2, rel=1e-10)


@pytest.mark.parametrize("argv, match", [
    (["--depth", "0"], "--depth"),
    (["--depth", "-4"], "--depth"),
    (["--weights", "uniform"], "--weights"),
    (["--sigma-w2", "2.5", "--sigma-b2", "0.1"], "q* = inf"),
    (["--sigma-w2", "-1"], "--sigma-w2"),
    (["--sigma-b2", "-0.5"], "--sigma-b2"),
    (["--param", "alpha"], "--param"),
])
def test_bad_input_exits_2_with_a_clear_message(capsys, argv, match):
    code, out, err = run(capsys, "spectrum", "relu", *argv)
    assert code == 2 and out == ""
    assert match in err and "Traceback" not in err


def test_divergent_point_names_the_options(capsys):
    code, out, err = run(capsys, "spectrum", "linear", "--sigma-w2", "1", "--sigma-b2", "0.1", "--json")
    assert code == 2 and out == ""
    assert "--sigma-w2" in err and "--sigma-b2" in err and "no finite fixed point" in err
