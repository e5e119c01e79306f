"""Plotting functions draw what they are given and return (fig, ax)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from meanfield import plotting
from meanfield.diagram import phase_diagram


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def diagram():
    return phase_diagram("tanh", np.linspace(0.5, 5, 30), np.linspace(0, 2, 20))


def test_plot_phase_diagram(diagram, tmp_path):
    fig, ax = plotting.plot_phase_diagram(diagram)
    lines = [ln for ln in ax.get_lines() if "critical" in str(ln.get_label())]
    assert len(lines) == 1
    x, y = lines[0].get_data()
    np.testing.assert_array_equal(x, diagram.critical_line)  # draws exactly what it is given
    np.testing.assert_array_equal(y, diagram.sigma_b2)
    assert ax.get_xlabel() and ax.get_ylabel()
    fig.savefig(tmp_path / "pd.png")
    fig2, ax2 = diagram.plot(field="chi_1", log=False)
    assert fig2 is ax2.figure


def test_plot_phase_diagram_on_given_axes(diagram):
    fig, ax = plt.subplots()
    out_fig, out_ax = plotting.plot_phase_diagram(diagram, ax=ax, colorbar=False, contours=None)
    assert out_ax is ax and out_fig is fig


def test_plot_q_and_c_maps():
    q = np.linspace(0, 3, 50)
    curves = np.vstack([0.5 * q + 0.1, 0.9 * q + 0.05])
    fig, ax = plotting.plot_q_map(q, curves, labels=["a", "b"], fixed_points=[0.2, 0.5],
                                  iterates=[np.array([3.0, 1.6, 0.9]), np.array([2.0, 1.85])])
    assert len(ax.get_lines()) >= 5  # two curves, identity, fixed points, cobwebs
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), curves[0])
    c = np.linspace(-1, 1, 30)
    fig, ax = plotting.plot_c_map(c, c**2, fixed_points=[1.0])
    assert ax.get_xlim()[1] == 1.0


def test_plot_iterates_and_depth_scales():
    layers = np.arange(10)
    fig, ax = plotting.plot_iterates(layers, np.vstack([layers * 0.1, layers * 0.2]).T, labels=["x", "y"],
                                     fixed_points=[1.0, 2.0])
    assert len(ax.get_lines()) == 4
    sw = np.linspace(1, 3, 20)
    xi = np.where(np.abs(sw - 2) < 0.05, np.inf, 1 / np.abs(sw - 2))
    fig, ax = plotting.plot_depth_scales(sw, xi_q=xi / 2, xi_c=xi, trainable_depth=6 * xi, critical=2.0)
    assert ax.get_yscale() == "log"
    assert len(ax.get_lines()) == 4
