"""The meanfield command line: new subcommands, --json, and clear errors with non-zero exit."""

from __future__ import annotations

import json

import numpy as np
import pytest

import meanfield as mf
from meanfield.cli import build_parser, main
from meanfield.diagram import load_phase_diagram


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_phase_writes_figure_and_data(tmp_path, capsys):
    prefix = str(tmp_path / "tanh")
    code, out, err = run(capsys, "phase", "--sigma-w2", "0.5:5:25", "--sigma-b2", "0:2:9", "--output", prefix)
    assert code == 0
    assert "critical line" in out and "trainable depth" in out
    pd = load_phase_diagram(prefix + ".npz")
    assert pd.shape == (9, 25) and pd.activation == "tanh"
    assert (tmp_path / "tanh.png").stat().st_size > 1000
    assert err == ""  # no progress bar when stderr is not a terminal


def test_phase_json(tmp_path, capsys):
    code, out, _ = run(capsys, "phase", "erf", "--sigma-w2", "0.5,1,2", "--sigma-b2", "0,0.5", "--output",
                       str(tmp_path / "e"), "--no-figure", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["activation"] == "erf" and data["figure"] is None
    assert data["critical_line"]["sigma_w2"][0] == pytest.approx(np.pi / 4, rel=1e-12)


@pytest.mark.parametrize("grid, message", [
    ("--sigma-w2=-1:2:5", "negative"), ("--sigma-w2=0:nan:5", "non-finite"), ("--sigma-w2=", "empty"),
    ("--sigma-w2=1:2:0", "no points"), ("--sigma-w2=a,b", "not START:STOP:N"),
])
def test_phase_bad_grids(grid, message, tmp_path, capsys):
    code, out, err = run(capsys, "phase", grid, "--output", str(tmp_path / "x"))
    assert code != 0 and message in err and out == ""
    assert list(tmp_path.iterdir()) == []


def test_phase_too_large_grid(tmp_path, capsys):
    code, _, err = run(capsys, "phase", "--sigma-w2=0:1:100000", "--sigma-b2=0:1:100000", "--output",
                       str(tmp_path / "x"))
    assert code != 0 and "needs about" in err
    assert list(tmp_path.iterdir()) == []


def test_phase_unwritable_output(tmp_path, capsys):
    code, _, err = run(capsys, "phase", "--sigma-w2=1,2", "--sigma-b2=0.1", "--output",
                       str(tmp_path / "no" / "such" / "dir" / "x"))
    assert code != 0 and "cannot write" in err


def test_critical_table(capsys):
    code, out, _ = run(capsys, "critical", "tanh", "--sigma-b2", "0,0.05")
    assert code == 0
    rows = [ln.split() for ln in out.splitlines() if ln.strip().startswith(("0 ", "0.05"))]
    assert float(rows[0][1]) == pytest.approx(1.0, abs=1e-9)
    assert float(rows[1][1]) == pytest.approx(1.76, abs=0.01)  # Schoenholz et al. 2017
    code, out, _ = run(capsys, "critical", "relu", "--sigma-b2", "0,0.5", "--json")
    data = json.loads(out)
    assert data["sigma_w2"][0] == pytest.approx(2.0) and data["sigma_w2"][1] is None


def test_depth_words_and_json(capsys):
    code, out, _ = run(capsys, "depth", "tanh", "--sigma-w2", "2.5", "--sigma-b2", "0.05", "--depth", "70")
    assert code == 0
    # the factor is that of the squared norm, and the text says so: chi_1 = 1.134 per layer
    assert "the squared gradient norm grows x1.13 per layer: x6.5e3 over 70 layers" in out
    assert "trainable depth ~" in out
    # the advice names the critical weight variance at this bias variance
    crit = mf.critical_sigma_w2("tanh", 0.05)
    assert f"lower sigma_w2 towards the critical sigma_w2 = {crit:.4g}" in out
    assert f"{crit:.4g}" == "1.761"  # Schoenholz et al. 2017: 1.76
    assert "never" not in out and "x1000" not in out
    assert "it has grown by a factor 1000 after 56 layers" in out  # ln 1000 / ln 1.1336 = 55.2
    code, out, _ = run(capsys, "depth", "tanh", "--sigma-w2", "1.5", "--residual", "--depth", "200", "--json")
    data = json.loads(out)
    assert data["residual"] is True and data["gradient_ratio_over_depth"] > 1
    assert "sub-exponentially" in data["summary"]


def test_depth_bad_input(capsys):
    code, _, err = run(capsys, "depth", "tanh", "--sigma-w2", "-1")
    assert code != 0 and "sigma_w2" in err


def test_existing_commands_still_work(capsys):
    code, out, _ = run(capsys, "point", "tanh", "--sigma-w2", "1.76", "--sigma-b2", "0.05")
    assert code == 0 and "chi_1" in out
    code, out, _ = run(capsys, "activations")
    assert code == 0 and "tanh" in out


# ---------------------------------------------------------------------------------------------
# Phases that need words: divergent (q* = inf) and pseudo-linear (sigma_b2 = 0, q* = 0)
# ---------------------------------------------------------------------------------------------

SMALL = ("--sigma-w2", "0.5:5:10", "--sigma-b2", "0:2:5")


def overflow_layers(growth, dtype):
    """Independent: layers until sqrt(growth^l) passes the largest float of dtype."""
    return int(np.ceil(2 * np.log(np.finfo(dtype).max) / np.log(growth)))


def test_phase_relu_is_divergent_not_chaotic(tmp_path, capsys):
    code, out, _ = run(capsys, "phase", "relu", *SMALL, "--output", str(tmp_path / "r"), "--no-figure")
    assert code == 0
    assert "divergent" in out and "chaotic" not in out.split("critical line")[0]
    assert "unbounded" not in out  # the divergent side is not "deepest trainable"
    assert "5% into the chaotic phase" not in out  # relu has no chaotic phase
    # at the largest sigma_w2 = 5 relu's variance grows x2.5 per layer (sigma_w2 / 2)
    assert "x2.5 per layer" in out
    assert f"overflow float32 after ~{overflow_layers(2.5, np.float32)} layers" in out  # 194
    assert f"float64 after ~{overflow_layers(2.5, np.float64)}" in out  # 1550
    # 5% above relu's critical point (sigma_w2 = 2 at sigma_b2 = 0) the variance diverges
    assert "divergent (q* = inf)" in out


def test_phase_gelu_summary(tmp_path, capsys):
    code, out, _ = run(capsys, "phase", "gelu", *SMALL, "--output", str(tmp_path / "g"), "--no-figure", "--json")
    data = json.loads(out)
    assert code == 0 and data["phase_counts"]["chaotic"] == 0 and data["phase_counts"]["divergent"] > 0
    assert data["phase_counts"]["pseudo-linear"] > 0  # the sigma_b2 = 0 row, below the divergence
    assert "grows without bound" in data["notes"]["divergent"]
    assert "freeze" in data["notes"]["pseudo-linear"] and "linear map" in data["notes"]["pseudo-linear"]
    code, out, _ = run(capsys, "phase", "gelu", *SMALL, "--output", str(tmp_path / "g"), "--no-figure")
    assert "unbounded" not in out and "order to chaos" not in out
    assert "pseudo-linear" in out and "divergent (q* = inf)" in out


def test_depth_pseudo_linear_gelu(capsys):
    code, out, _ = run(capsys, "depth", "gelu", "--sigma-w2", "2", "--sigma-b2", "0")
    assert code == 0
    assert "trainable depth ~" not in out  # was "~9 layers": 6 xi_c does not describe this network
    assert "pseudo-linear phase" in out
    for words in ("variance collapses to 0", "acts as a linear map", "freeze", "no finite xi_c"):
        assert words in out
    # the variance shrinks by the slope of the variance map at 0, sigma_w2 phi'(0)^2 = 2/4 for gelu
    assert "shrinking x0.5 per layer" in out
    assert "advice:" in out and "sigma_b2 > 0" in out


def test_point_pseudo_linear_tanh(capsys):
    code, out, _ = run(capsys, "point", "tanh", "--sigma-w2", "0.8", "--sigma-b2", "0", "--json")
    data = json.loads(out)
    assert data["phase"] == "pseudo-linear" and data["trainable_depth"] is None
    assert "freeze" in data["note"] and "q* = 0" in data["note"]
    assert "shrinking x0.8 per layer" in data["note"]  # sigma_w2 tanh'(0)^2 = 0.8
    code, out, _ = run(capsys, "point", "tanh", "--sigma-w2", "0.8", "--sigma-b2", "0")
    assert "note: pseudo-linear" in out


def test_point_and_depth_divergent_relu(capsys):
    code, out, _ = run(capsys, "point", "relu", "--sigma-w2", "3", "--sigma-b2", "0.1")
    assert code == 0 and "divergent" in out
    assert "x1.5 per layer" in out and f"float32 after ~{overflow_layers(1.5, np.float32)} layers" in out
    code, out, _ = run(capsys, "depth", "relu", "--sigma-w2", "3", "--sigma-b2", "0.1")
    assert "unbounded" not in out and "trainable depth" not in out
    assert "grows without bound" in out
    # relu has no critical point at sigma_b2 > 0; a large variance stops growing below sigma_w2 = 2
    assert "lower it below 2," in out


# ---------------------------------------------------------------------------------------------
# Critical points on an unstable branch (gelu, swish at small sigma_b2)
# ---------------------------------------------------------------------------------------------

def q_map_slope_fd(act, q, sw, sb):
    h = 1e-5 * q
    return (mf.q_map(q + h, act, sw, sb) - mf.q_map(q - h, act, sw, sb)) / (2 * h)


@pytest.mark.parametrize("act", ["gelu", "swish"])
def test_critical_unstable_branch_explained(act, capsys):
    code, out, _ = run(capsys, "critical", act, "--sigma-b2", "0.1")
    assert code == 0
    assert "relu" not in out  # the old footnote explained the NaN with relu
    (cp,) = mf.critical_points(act, 0.1)
    # independent checks of what the text claims: chi_1 = 1 there, and the fixed point repels
    assert mf.chi_1(act, cp.sigma_w2, 0.1, q=cp.q_star) == pytest.approx(1.0, abs=1e-8)
    assert mf.q_map(cp.q_star, act, cp.sigma_w2, 0.1) == pytest.approx(cp.q_star, rel=1e-9)
    assert q_map_slope_fd(act, cp.q_star, cp.sigma_w2, 0.1) > 1
    lower = mf.q_star(act, cp.sigma_w2, 0.1, q0=0.5 * cp.q_star)
    assert lower < cp.q_star and mf.q_map(lower, act, cp.sigma_w2, 0.1) == pytest.approx(lower, rel=1e-9)
    assert mf.q_star(act, cp.sigma_w2, 0.1, q0=2 * cp.q_star) == np.inf
    assert f"chi_1 = 1 only at sigma_w2 = {cp.sigma_w2:.4g}" in out
    assert f"q* = {cp.q_star:.4g} is unstable" in out
    assert f"starts below it settles at the lower fixed point q* = {lower:.4g} (ordered" in out
    assert "starts above it diverges" in out


def test_critical_relu_without_critical_point(capsys):
    code, out, _ = run(capsys, "critical", "relu", "--sigma-b2", "0,0.5,1")
    assert code == 0
    assert out.count("nan:") == 0 and out.count("  nan at") == 1  # one line for both bias variances
    assert "at sigma_b2 = 0.5, 1: no sigma_w2 gives chi_1 = 1" in out
    assert "at sigma_b2 = 0 the critical sigma_w2 is 2" in out


def test_depth_advice_without_critical_point(capsys):
    code, out, _ = run(capsys, "depth", "gelu", "--sigma-w2", "1.5", "--sigma-b2", "0.1", "--json")
    data = json.loads(out)
    assert data["regime"] == "vanishing"
    assert "use fewer layers" in data["advice"] and "unstable" in data["advice"]


# ---------------------------------------------------------------------------------------------
# Gradient wording, residual advice
# ---------------------------------------------------------------------------------------------

def test_depth_on_critical_line_and_residual_advice(capsys):
    code, out, _ = run(capsys, "depth", "tanh", "--sigma-w2", "1.0", "--sigma-b2", "0", "--depth", "50")
    assert code == 0 and "critical phase" in out
    assert "keeps its size" in out and "never" not in out
    code, out, _ = run(capsys, "depth", "tanh", "--sigma-w2", "1.5", "--residual", "--depth", "200")
    assert "the squared gradient norm grows sub-exponentially" in out
    advice = [ln for ln in out.splitlines() if ln.strip().startswith("advice:")]
    assert len(advice) == 1 and "sigma_v2" in advice[0]


def test_depth_bad_factor(capsys):
    code, out, err = run(capsys, "depth", "tanh", "--factor", "0.5")
    assert code != 0 and "--factor" in err and out == ""


# ---------------------------------------------------------------------------------------------
# --json everywhere, name suggestions, activation parameters
# ---------------------------------------------------------------------------------------------

def test_every_subcommand_has_json():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subparsers) == {"point", "phase", "critical", "depth", "gradients", "spectrum", "trainability",
                               "kernel", "activations"}
    for name, sub in subparsers.items():
        assert any("--json" in a.option_strings for a in sub._actions), name


def test_activations_json(capsys):
    code, out, _ = run(capsys, "activations", "--json")
    data = json.loads(out)
    assert code == 0 and [row["name"] for row in data] == mf.activation_names()
    rows = {row["name"]: row for row in data}
    assert rows["leaky_relu"]["parameters"] == {"alpha": 0.01} and rows["tanh"]["parameters"] == {}


@pytest.mark.parametrize("typed, meant", [("ReLU", "relu"), ("GELU", "gelu"), ("leaky-relu", "leaky_relu"),
                                          ("LeakyReLU", "leaky_relu"), ("tanhh", "tanh")])
def test_near_miss_names(typed, meant, capsys):
    code, out, err = run(capsys, "point", typed)
    assert code == 2 and out == ""
    assert f"Did you mean {meant!r}?" in err


def test_param_for_every_activation_command(tmp_path, capsys):
    # leaky relu: q* = sigma_b2 / (1 - sigma_w2 (1 + alpha^2) / 2), critical sigma_w2 = 2 / (1 + alpha^2)
    code, out, _ = run(capsys, "point", "leaky_relu", "--param", "alpha=0.2", "--sigma-w2", "1.5",
                       "--sigma-b2", "0.1", "--json")
    data = json.loads(out)
    assert data["activation"] == "leaky_relu(alpha=0.2)"
    assert data["q_star"] == pytest.approx(0.1 / (1 - 1.5 * 1.04 / 2), rel=1e-10)
    code, out, _ = run(capsys, "critical", "leaky_relu", "--param", "alpha=0.5", "--sigma-b2", "0", "--json")
    assert json.loads(out)["sigma_w2"][0] == pytest.approx(2 / 1.25, rel=1e-10)
    code, out, _ = run(capsys, "depth", "leaky_relu", "--param", "alpha=0.5", "--sigma-w2", "1", "--sigma-b2",
                       "0.1", "--json")
    assert json.loads(out)["chi_1"] == pytest.approx(1.25 / 2, rel=1e-10)
    code, out, _ = run(capsys, "phase", "monomial", "--param", "k=1", "--sigma-w2", "0.5,2", "--sigma-b2", "0.1",
                       "--output", str(tmp_path / "m"), "--no-figure", "--json")
    assert code == 0 and json.loads(out)["activation"] == "monomial(k=1)"


@pytest.mark.parametrize("param, message", [
    ("beta=1", "takes parameters: alpha (default 0.01); got unknown beta"),
    ("alpha", "is not NAME=VALUE"),
    ("alpha=__import__('os').getcwd()", "must be a number"),
    ("alpha=nan", "finite"),
    ("alpha=1e999", "finite"),
])
def test_bad_params(param, message, tmp_path, capsys):
    code, out, err = run(capsys, "phase", "leaky_relu", "--param", param, "--output", str(tmp_path / "x"))
    assert code == 2 and message in err and out == ""
    assert list(tmp_path.iterdir()) == []  # refused before any computation


def test_param_for_activation_without_parameters(capsys):
    code, _, err = run(capsys, "point", "relu", "--param", "alpha=0.1")
    assert code == 2 and "takes parameters: none" in err


# ---------------------------------------------------------------------------------------------
# Figures: the type follows the file extension
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext, magic", [("pdf", (b"%PDF",)), ("svg", (b"<?xml", b"<svg")),
                                        ("png", (b"\x89PNG\r\n\x1a\n",))])
def test_phase_figure_type_from_extension(ext, magic, tmp_path, capsys):
    path = tmp_path / f"relu.{ext}"
    code, out, _ = run(capsys, "phase", "relu", "--sigma-w2", "0.5:5:8", "--sigma-b2", "0:2:4", "--out", str(path))
    assert code == 0
    assert path.read_bytes().startswith(magic)
    assert (tmp_path / "relu.npz").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["relu.npz",
                                                                                                 f"relu.{ext}"]


def test_phase_unknown_figure_type_fails_first(tmp_path, capsys):
    code, out, err = run(capsys, "phase", "--out", str(tmp_path / "x.jpg"))  # a 200 x 200 grid if it ran
    assert code == 2 and "unknown figure type '.jpg'" in err and ".pdf" in err
    assert list(tmp_path.iterdir()) == []
    # a numeric suffix is part of the prefix, not a figure type
    code, out, _ = run(capsys, "phase", "--sigma-w2", "1,2", "--sigma-b2", "0.1", "--output",
                       str(tmp_path / "run1.5"), "--json")
    assert code == 0 and json.loads(out)["figure"].endswith("run1.5.png")


def test_ctrl_c_exits_quietly_with_130(monkeypatch, capsys):
    import meanfield

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(meanfield, "analyze", interrupted)
    assert main(["point", "tanh", "--sigma-w2", "1.5", "--sigma-b2", "0.05"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_sigterm_leaves_no_partial_files(tmp_path):
    import pathlib
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "meanfield", "phase", "gelu", "--output", str(tmp_path / "g")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    # wait until the command has installed its SIGTERM handler (a loaded machine imports slowly), then let it work
    status = pathlib.Path(f"/proc/{proc.pid}/status")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if status.exists():
            caught = [ln for ln in status.read_text().splitlines() if ln.startswith("SigCgt:")]
            if caught and int(caught[0].split()[1], 16) & (1 << (signal.SIGTERM - 1)):
                break
        else:
            break  # not Linux: fall back to a fixed wait
        time.sleep(0.05)
    time.sleep(1.0 if status.exists() else 4.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (143, 0), err  # 0: it had already finished
    assert b"Traceback" not in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


@pytest.mark.parametrize("argv, missing, extra", [
    (["trainability", "tanh", "--depths", "2,3", "--sigma-w2", "1,2", "--steps", "5", "--no-figure"], "sklearn",
     "meanfield[train]"),
    (["kernel", "DATA", "tanh", "--out", "K.zarr"], "dask", "meanfield[distributed]"),
])
def test_missing_extra_is_a_clear_error(argv, missing, extra, tmp_path, monkeypatch, capsys):
    """Without the optional extra the command says which to install: no traceback."""
    import sys

    np.save(tmp_path / "x.npy", np.ones((4, 3)))
    monkeypatch.chdir(tmp_path)
    for name in [missing] + [m for m in sys.modules if m.startswith(missing + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it (or a submodule already loaded) now fails
    argv = [str(tmp_path / "x.npy") if a == "DATA" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert extra in err and "Traceback" not in err
    assert not list(tmp_path.glob("K.zarr*")) and not list(tmp_path.glob("*.npz"))


def test_numbers_in_messages_and_program_options(capsys):
    """A refused number is shown as typed, not as numpy's repr; a stray '-x' before the command is not a value."""
    assert main(["point", "tanh", "--sigma-w2", "-1e3"]) == 2
    err = capsys.readouterr().err
    assert "got -1000.0" in err and "np.float64" not in err
    with pytest.raises(SystemExit):
        main(["-x"])
    assert "' -x'" not in capsys.readouterr().err
