"""``meanfield gradients``: per-layer factor, GSC over depth and advice, by architecture; clear errors."""

from __future__ import annotations

import json
import math

import pytest
from scipy import integrate

from meanfield.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _gauss(f):
    g = lambda z: f(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    return integrate.quad(g, -40, 40, epsabs=0, epsrel=1e-13, limit=200, points=[0.0])[0]


def test_layer_norm_tanh_json(capsys):
    want = _gauss(lambda u: (1 - math.tanh(u) ** 2) ** 2) / _gauss(lambda u: math.tanh(u) ** 2)
    code, out, err = run(capsys, "gradients", "tanh", "--norm", "layer", "--depth", "20", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["gradient_factor_per_layer"][-1] == pytest.approx(want, rel=1e-10)
    # GSC(L, 0)^2 = E[phi'^2]/q0 * want^19 * q0/q* = want^20 at sigma_w2 = 1, sigma_b2 = 0 (q* = E[phi^2])
    assert data["gsc"][0] == pytest.approx(want ** 10, rel=1e-9)
    assert len(data["gsc"]) == 21 and data["gsc"][-1] == 1.0


def test_text_output_names_the_factor_and_advises(capsys):
    code, out, _ = run(capsys, "gradients", "relu", "--residual", "--sigma-w2", "2", "--depth", "12")
    assert code == 0
    assert "12 residual relu layers" in out and "1 + sigma_v2 chi_1" in out
    assert "dilutes" in out and "GSC(L, l)" in out
    code, out, _ = run(capsys, "gradients", "tanh", "--sigma-w2", "2.5", "--sigma-b2", "0.05", "--depth", "30")
    assert code == 0 and "chaotic phase" in out and "explode" in out


@pytest.mark.parametrize("argv, match", [
    (["--norm", "batch"], "batch_size"),
    (["--norm", "batch", "--batch-size", "3"], "batch_size > 3"),
    (["--batch-size", "8"], "batch_size"),
    (["--depth", "0"], "--depth"),
    (["--every", "0"], "--every"),
    (["--q0", "-1"], "q0"),
    (["--sigma-w2", "-1"], "sigma_w2"),
    (["--norm", "layer", "--residual"], "residual"),
])
def test_bad_input_exits_2_with_a_clear_message(capsys, argv, match):
    code, out, err = run(capsys, "gradients", "tanh", *argv)
    assert code == 2 and out == ""
    assert match in err and "Traceback" not in err


def test_point_takes_the_normalisation(capsys):
    code, out, _ = run(capsys, "point", "relu", "--norm", "batch", "--batch-size", "16", "--json")
    assert code == 0
    data = json.loads(out)
    rho = -1 / 15  # relu lambda_G in closed form (orthant probability, arc-cosine moment)
    th = math.acos(rho)
    phi12 = (math.sin(th) + (math.pi - th) * math.cos(th)) / (2 * math.pi)
    lam = (15 * 0.5 + 0.25 + math.asin(rho) / (2 * math.pi) - 0.5 + phi12) / (13 * (0.5 - phi12))
    assert data["chi_1"] == pytest.approx(lam, rel=1e-12) and data["norm"] == "batch" and data["batch_size"] == 16
    code, out, _ = run(capsys, "point", "tanh", "--norm", "layer", "--sigma-w2", "1", "--sigma-b2", "0")
    assert code == 0 and "layer norm" in out
    for argv, match in ((["--batch-size", "8"], "norm='batch'"), (["--norm", "batch"], "batch_size"),
                        (["--norm", "batch", "--batch-size", "2"], "batch_size")):
        code, out, err = run(capsys, "point", "tanh", *argv)
        assert code == 2 and match in err, err


def test_depth_width_verdict(capsys):
    # tanh at criticality: V/K^2 ~ (2/3) l, so the network-to-network spread of the layer variance is
    # about sqrt(2 l / (3 n)) (Roberts, Yaida & Hanin 2021): 36% at depth 100, width 512
    code, out, _ = run(capsys, "depth", "tanh", "--sigma-w2", "1", "--sigma-b2", "0", "--depth", "100",
                       "--width", "512", "--json")
    assert code == 0
    fw = json.loads(out)["finite_width"]
    assert fw["relative_spread_last_layer"] == pytest.approx(math.sqrt(2 * 100 / (3 * 512)), rel=0.1)
    assert 1 <= fw["holds_to_5pct_up_to_depth"] < 10
    code, out, _ = run(capsys, "depth", "tanh", "--sigma-w2", "1", "--sigma-b2", "0", "--depth", "100",
                       "--width", "512")
    assert "at width 512 and depth 100 the layer variance fluctuates" in out
    code, out, err = run(capsys, "depth", "tanh", "--width", "0")
    assert code == 2 and "--width" in err
