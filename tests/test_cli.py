"""The meanfield command line: new subcommands, --json, and clear errors with non-zero exit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meanfield.cli import main
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
    assert "gradients grow x1.13 per layer: x6.5e3 over 70 layers" in out
    assert "trainable depth ~" in out
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
