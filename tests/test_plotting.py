"""Plotting functions draw what they are given and return (fig, ax)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib import colors as mcolors
from matplotlib.collections import QuadMesh

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


# ---------------------------------------------------------------------------------------------
# Phases without a trainable depth, legends, labels, reference points (checked on the artists)
# ---------------------------------------------------------------------------------------------

def fake_diagram(phase, depth=None, critical=None, sw=None, sb=None, name="fake"):
    """A diagram-like object: plotting must draw exactly what it is given."""
    phase = np.asarray(phase, dtype=str)
    ny, nx = phase.shape
    sw = np.linspace(0.5, 5, nx) if sw is None else np.asarray(sw, dtype=float)
    sb = np.linspace(0, 2, ny) if sb is None else np.asarray(sb, dtype=float)
    if depth is None:
        depth = 5.0 + 10.0 * np.add.outer(np.arange(ny), np.arange(nx))
    crit = np.full(ny, np.nan) if critical is None else np.asarray(critical, dtype=float)
    return SimpleNamespace(activation=name, sigma_w2=sw, sigma_b2=sb, phase=phase, rho=1.0,
                           trainable_depth=np.asarray(depth, dtype=float), critical_line=crit)


def meshes(ax):
    return [c for c in ax.collections if isinstance(c, QuadMesh)]


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def flat_mesh(ax, color):
    """The mesh drawn in one flat colour, and the cells it covers."""
    want = mcolors.to_rgba(color)
    for m in meshes(ax)[1:]:
        if np.allclose(m.cmap(m.norm(1.0)), want):
            return m, ~np.ma.getmaskarray(m.get_array())
    return None, None


def test_divergent_region_is_grey_with_legend_entry():
    phase = np.full((6, 8), "ordered", dtype=object)
    phase[:, 5:] = "divergent"
    depth = np.full((6, 8), 20.0)
    depth[:, 5:] = np.inf  # what the theory gives there (limiting map): must not read as "deepest trainable"
    fig, ax = plotting.plot_phase_diagram(fake_diagram(phase, depth))
    field = meshes(ax)[0]
    assert np.ma.getmaskarray(field.get_array()).reshape(6, 8)[:, 5:].all()  # no colour of the depth scale
    grey, cells = flat_mesh(ax, plotting.PHASE_COLORS["divergent"])
    assert grey is not None and np.array_equal(cells.reshape(6, 8), phase == "divergent")
    assert mcolors.to_rgba(plotting.PHASE_COLORS["divergent"]) not in [tuple(field.cmap(x)) for x in (0.0, 1.0)]
    assert any(t.startswith("divergent") for t in legend_texts(ax))
    assert "chaotic" not in ax.get_title() and "divergent" in ax.get_title()
    names = [t.get_text() for t in ax.texts]
    assert "ordered" in names and "divergent" in names and "chaotic" not in names


def test_relu_diagram_title_and_colours():
    pd = phase_diagram("relu", np.linspace(0.5, 5, 12), np.linspace(0, 2, 6))
    assert "chaotic" not in set(pd.phase.ravel())
    fig, ax = pd.plot()
    assert "chaotic" not in ax.get_title()
    _, cells = flat_mesh(ax, plotting.PHASE_COLORS["divergent"])
    assert np.array_equal(cells.reshape(pd.shape), pd.phase == "divergent")


def test_pseudo_linear_row_has_its_own_colour_and_legend():
    phase = np.full((5, 6), "ordered", dtype=object)
    phase[0, :4] = "pseudo-linear"  # sigma_b2 = 0: a row, no area
    depth = np.full((5, 6), 30.0)
    depth[0, :4] = np.nan
    fig, ax = plotting.plot_phase_diagram(fake_diagram(phase, depth))
    mesh, cells = flat_mesh(ax, plotting.PHASE_COLORS["pseudo-linear"])
    assert np.array_equal(cells.reshape(5, 6), phase == "pseudo-linear")
    # a single row has no area to see: it is also drawn as a thick line along sigma_b2 = 0
    rows = [ln for ln in ax.get_lines() if mcolors.same_color(ln.get_color(), plotting.PHASE_COLORS["pseudo-linear"])]
    assert len(rows) == 1 and np.all(rows[0].get_ydata() == 0)
    assert any(t.startswith("pseudo-linear") for t in legend_texts(ax))
    assert "pseudo-linear" not in [t.get_text() for t in ax.texts]  # no area, no name written in it


def test_colorbar_extends_where_values_are_clipped():
    phase = np.full((4, 5), "ordered", dtype=object)
    depth = np.linspace(2, 60, 20).reshape(4, 5)
    for vmin, vmax, extend in ((None, 100.0, "neither"), (None, 30.0, "max"), (5.0, 30.0, "both"),
                               (5.0, 100.0, "min")):
        fig, ax = plotting.plot_phase_diagram(fake_diagram(phase, depth), vmin=vmin, vmax=vmax, contours=None)
        assert meshes(ax)[0].colorbar.extend == extend, (vmin, vmax)
    depth[0, 0] = np.inf  # drawn at the top colour: clipped too
    fig, ax = plotting.plot_phase_diagram(fake_diagram(phase, depth), vmax=100.0, contours=None)
    assert meshes(ax)[0].colorbar.extend == "max"


def test_contours_legend_and_labels_off_the_critical_line(diagram):
    fig, ax = plotting.plot_phase_diagram(diagram)
    texts = legend_texts(ax)
    assert any("critical line" in t for t in texts) and any(t.startswith("contours of") for t in texts)
    labels = [t for t in ax.texts if t.get_text() in {"10", "20", "50", "100", "200", "500"}]
    assert labels
    crit = np.asarray(diagram.critical_line)
    ok = np.isfinite(crit)
    x0, x1, y0, y1 = diagram.sigma_w2[0], diagram.sigma_w2[-1], diagram.sigma_b2[0], diagram.sigma_b2[-1]
    line_t = np.linspace(0, ok.sum() - 1, 2000)
    lx = np.interp(line_t, np.arange(ok.sum()), (crit[ok] - x0) / (x1 - x0))
    ly = np.interp(line_t, np.arange(ok.sum()), (diagram.sigma_b2[ok] - y0) / (y1 - y0))
    for t in labels:
        x, y = t.get_position()
        d = np.min(np.hypot((x - x0) / (x1 - x0) - lx, (y - y0) / (y1 - y0) - ly))
        assert d > 0.03, (t.get_text(), x, y)


def test_reference_initialisations_marked_when_in_range():
    phase = np.full((4, 6), "ordered", dtype=object)
    fig, ax = plotting.plot_phase_diagram(fake_diagram(phase))  # sigma_w2 0.5..5, sigma_b2 0..2
    marks = {ln.get_label(): (ln.get_xdata()[0], ln.get_ydata()[0]) for ln in ax.get_lines()
             if ln.get_label().startswith(("He", "Xavier"))}
    assert sorted(marks.values()) == [(1.0, 0.0), (2.0, 0.0)]
    assert any("LeCun" in k and marks[k] == (1.0, 0.0) for k in marks)
    assert sum(t.startswith(("He", "Xavier")) for t in legend_texts(ax)) == 2
    fig, ax = plotting.plot_phase_diagram(fake_diagram(phase, sw=np.linspace(2.5, 5, 6)))
    assert not [ln for ln in ax.get_lines() if ln.get_label().startswith(("He", "Xavier"))]
    fig, ax = plotting.plot_phase_diagram(fake_diagram(phase, sb=np.linspace(0.1, 2, 4)))  # sigma_b2 = 0 not shown
    assert not [ln for ln in ax.get_lines() if ln.get_label().startswith(("He", "Xavier"))]


def test_one_dimensional_slice_marks_the_critical_point():
    phase = np.array([["ordered"] * 3 + ["chaotic"] * 4])
    d = fake_diagram(phase, depth=np.array([[5.0, 10, 40, 80, 40, 10, 5]]), critical=[1.76],
                     sw=np.linspace(1, 2.5, 7), sb=[0.05])
    fig, ax = plotting.plot_phase_diagram(d)
    lo, hi = ax.get_ylim()
    assert lo < 0.05 < hi  # a visible band, not an empty range
    (point,) = [ln for ln in ax.get_lines() if "critical" in ln.get_label()]
    assert point.get_marker() == "o" and point.get_xdata()[0] == 1.76 and point.get_ydata()[0] == 0.05
    assert "1.76" in point.get_label()
    assert not np.ma.getmaskarray(meshes(ax)[0].get_array()).all()


def test_depth_scales_slice_marks_critical_and_references():
    sw = np.linspace(0.5, 3, 30)
    xi = 1 / np.abs(sw - 1.0 + 1e-3)
    fig, ax = plotting.plot_depth_scales(sw, xi_c=xi, critical=1.0, sigma_b2=0.0)
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert any("critical" in lb and "1" in lb for lb in labels)
    assert sum(lb.startswith(("He", "Xavier")) for lb in labels) == 2
    fig, ax = plotting.plot_depth_scales(sw, xi_c=xi, critical=1.76, sigma_b2=0.05)
    assert not any(ln.get_label().startswith(("He", "Xavier")) for ln in ax.get_lines())


@pytest.mark.parametrize("ext, magic", [("pdf", (b"%PDF",)), ("svg", (b"<?xml", b"<svg")),
                                        ("png", (b"\x89PNG\r\n\x1a\n",))])
def test_phase_diagram_saves_as_vector_or_png(diagram, tmp_path, ext, magic):
    fig, _ = plotting.plot_phase_diagram(diagram)
    fig.savefig(tmp_path / f"pd.{ext}")
    assert (tmp_path / f"pd.{ext}").read_bytes().startswith(magic)
