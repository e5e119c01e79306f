"""Matplotlib figures.  Plotting functions draw what they are given and compute nothing.

Each function takes an optional ``ax`` and returns ``(fig, ax)``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "plot_comparison",
    "plot_phase_diagram",
    "plot_q_map",
    "plot_c_map",
    "plot_iterates",
    "plot_depth_scales",
]


def plot_comparison(comparison, ax=None, *, nsigma=None, label=None, theory_label="theory (mean field)",
                    sim_label="simulation", color=None, logy=False, mark_failures=True):
    """Draw theory against simulation layer by layer: a theory line and a simulation band.

    The band is ``mean +- nsigma * sem``; by default ``nsigma`` is the comparison's pass/fail
    threshold, so a layer passes exactly when the theory line runs through its band (up to the
    comparison's ``atol``/``rtol``).  Layers that failed are marked with a cross.

    Parameters
    ----------
    comparison : meanfield.empirical.Comparison or similar
        Anything with array attributes ``layers``, ``theory``, ``mean``, ``sem`` and, if
        ``nsigma`` is not given, a float ``threshold``; ``layer_passed`` is used if present.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is made if omitted.
    nsigma : float, optional
        Half-width of the band in standard errors.
    label : str, optional
        Title of the axes (default: the comparison's ``label``).
    theory_label, sim_label : str
        Legend entries.
    color : optional
        Matplotlib colour for both line and band.
    logy : bool
        Logarithmic y axis (for exploding or vanishing quantities).
    mark_failures : bool
        Mark failing layers with a red cross.

    Returns
    -------
    fig : matplotlib.figure.Figure
    ax : matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    layers = np.asarray(comparison.layers)
    theory = np.asarray(comparison.theory, dtype=float)
    mean = np.asarray(comparison.mean, dtype=float)
    sem = np.asarray(comparison.sem, dtype=float)
    if nsigma is None:
        nsigma = float(getattr(comparison, "threshold", 2.0))
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.0, 3.5))
    else:
        fig = ax.figure
    (line,) = ax.plot(layers, theory, "-", color=color, lw=1.5, label=theory_label, zorder=3)
    c = line.get_color()
    ax.fill_between(layers, mean - nsigma * sem, mean + nsigma * sem, color=c, alpha=0.25, lw=0,
                    label=f"{sim_label} (mean $\\pm$ {nsigma:.2g} s.e.)")
    ax.plot(layers, mean, "o", color=c, ms=3, zorder=4)
    passed = getattr(comparison, "layer_passed", None)
    if mark_failures and passed is not None:
        bad = ~np.asarray(passed, dtype=bool)
        if bad.any():
            ax.plot(layers[bad], mean[bad], "x", color="red", ms=8, mew=2, label="outside band", zorder=5)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("layer $l$")
    title = label if label is not None else getattr(comparison, "label", "")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small", frameon=False)
    return fig, ax


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    else:
        fig = ax.figure
    return fig, ax


def plot_phase_diagram(diagram, ax=None, *, field="trainable_depth", contours=(10, 20, 50, 100, 200, 500),
                       log=True, cmap="viridis", vmax=None, critical_label="critical line $\\chi_1 = 1$",
                       colorbar=True, title=None):
    """Draw a phase diagram: a field over (sigma_w2, sigma_b2), the critical line, depth contours.

    After Schoenholz et al. (2017), Fig. 1: sigma_w2 on the horizontal axis, sigma_b2 on the
    vertical one; the trainable depth ``6 xi_c`` as colour (log scale), labelled contour lines
    of it, the order-to-chaos line ``chi_1 = 1``, and the region where the variance diverges
    hatched.

    Parameters
    ----------
    diagram : meanfield.diagram.PhaseDiagram or similar
        Anything with ``sigma_w2``, ``sigma_b2`` (1-D), ``critical_line`` (per sigma_b2),
        ``phase`` and the field named by ``field``, shaped ``(len(sigma_b2), len(sigma_w2))``.
    ax : matplotlib.axes.Axes, optional
    field : str
        The field shown as colour (default the trainable depth).
    contours : sequence of float or None
        Levels of the trainable depth drawn as labelled lines.
    log : bool
        Colour on a log scale.
    vmax : float, optional
        Upper end of the colour scale (infinite values, e.g. on the critical line, are drawn
        at the top colour).
    colorbar : bool
    title : str, optional

    Returns
    -------
    fig : matplotlib.figure.Figure
    ax : matplotlib.axes.Axes
    """
    from matplotlib import colors

    fig, ax = _axes(ax, (5.5, 4.2))
    sw = np.asarray(diagram.sigma_w2, dtype=float)
    sb = np.asarray(diagram.sigma_b2, dtype=float)
    values = np.array(getattr(diagram, field), dtype=float)
    finite = np.isfinite(values) & (values > 0 if log else True)
    if vmax is None:
        vmax = float(np.nanpercentile(values[finite], 99)) if finite.any() else 1.0
    shown = np.where(np.isinf(values) & (values > 0), vmax, values)
    shown = np.ma.masked_invalid(np.where(shown > 0, shown, np.nan) if log else shown)
    vmin = float(np.nanmin(shown)) if shown.count() else 0.1
    norm = colors.LogNorm(vmin=max(vmin, 1e-3), vmax=max(vmax, vmin * 1.0001)) if log else None
    mesh = ax.pcolormesh(sw, sb, shown, cmap=cmap, norm=norm, shading="auto", rasterized=True,
                         vmax=None if log else vmax)
    if colorbar:
        label = {"trainable_depth": "trainable depth $6\\xi_c$ (layers)", "xi_c": "$\\xi_c$ (layers)",
                 "xi_q": "$\\xi_q$ (layers)", "chi_1": "$\\chi_1$", "q_star": "$q^*$", "c_star": "$c^*$"}
        fig.colorbar(mesh, ax=ax, label=label.get(field, field))
    phase = np.asarray(diagram.phase)
    div = phase == "divergent"
    if div.any() and sw.size > 1 and sb.size > 1:
        ax.contourf(sw, sb, div.astype(float), levels=[0.5, 1.5], colors="none", hatches=["//"])
        ax.contour(sw, sb, div.astype(float), levels=[0.5], colors="0.3", linewidths=0.8)
    if contours and field == "trainable_depth" and sw.size > 1 and sb.size > 1:
        td = np.where(np.isfinite(values), values, np.nan)
        levels = [lv for lv in contours if np.nanmin(td) < lv < np.nanmax(td)] if np.isfinite(td).any() else []
        if levels:
            cs = ax.contour(sw, sb, td, levels=levels, colors="white", linewidths=0.8)
            ax.clabel(cs, fmt="%g", fontsize="x-small")
    crit = np.asarray(diagram.critical_line, dtype=float)
    ok = np.isfinite(crit)
    if ok.any():
        ax.plot(crit[ok], sb[ok], "-" if ok.sum() > 1 else "o", color="crimson", lw=2.0, ms=7, clip_on=False,
                label=critical_label, zorder=6)
        ax.legend(loc="upper left", fontsize="small", frameon=True)
    ax.set_xlim(sw[0], sw[-1])
    ax.set_ylim(sb[0], sb[-1])
    ax.set_xlabel("$\\sigma_w^2$")
    ax.set_ylabel("$\\sigma_b^2$")
    name = getattr(diagram, "activation", "")
    default = f"{name}: ordered left of the line, chaotic right" + ("; hatched: q* diverges" if div.any() else "")
    ax.set_title(title if title is not None else (default if name else ""), fontsize="medium")
    return fig, ax


def _plot_map(x, y, labels, fixed_points, iterates, ax, symbol, colors_):
    fig, ax = _axes(ax, (4.5, 4.0))
    x = np.asarray(x, dtype=float)
    ys = np.atleast_2d(np.asarray(y, dtype=float))
    labels = list(labels) if labels is not None else [None] * ys.shape[0]
    lines = []
    for i, row in enumerate(ys):
        color = colors_[i] if colors_ is not None else None
        (line,) = ax.plot(x, row, "-", lw=1.6, color=color, label=labels[i])
        lines.append(line)
    ax.plot(x, x, "--", color="0.5", lw=1.0, label="identity")
    if fixed_points is not None:
        for i, fp in enumerate(np.atleast_1d(np.asarray(fixed_points, dtype=float))):
            if np.isfinite(fp) and i < len(lines):
                ax.plot([fp], [fp], "o", color=lines[i].get_color(), ms=6, mec="k", zorder=5)
    if iterates is not None:
        for i, seq in enumerate(iterates):
            seq = np.asarray(seq, dtype=float)
            if seq.size < 2 or i >= len(lines):
                continue
            # cobweb: (x0, x0) -> (x0, x1) -> (x1, x1) -> (x1, x2) -> ...
            rep = np.repeat(seq, 2)
            cx, cy = rep[:-1], rep[1:]
            n = cx.size
            ax.plot(cx[:n], cy[:n], "-", color=lines[i].get_color(), lw=0.7, alpha=0.7)
    ax.set_xlabel(f"${symbol}^{{l-1}}$")
    ax.set_ylabel(f"${symbol}^{{l}}$")
    if any(lb is not None for lb in labels):
        ax.legend(fontsize="small", frameon=False)
    return fig, ax


def plot_q_map(q, q_next, ax=None, *, labels=None, fixed_points=None, iterates=None, colors=None):
    """The variance map ``q^{l-1} -> q^l`` with its fixed points and iterates (Poole et al. 2016, Fig. 1).

    Parameters
    ----------
    q : 1-D array
        Input variances.
    q_next : array (n_curves, len(q)) or 1-D
        ``q_map(q)`` for each set of parameters (one curve per row).
    labels : list of str, optional
        Legend entry per curve.
    fixed_points : sequence of float, optional
        q* per curve, drawn as dots on the identity line.
    iterates : sequence of 1-D arrays, optional
        ``q^0, q^1, ...`` per curve, drawn as a cobweb.
    colors : list, optional

    Returns
    -------
    fig, ax
    """
    return _plot_map(q, q_next, labels, fixed_points, iterates, ax, "q", colors)


def plot_c_map(c, c_next, ax=None, *, labels=None, fixed_points=None, iterates=None, colors=None):
    """The correlation map ``c^{l-1} -> c^l`` with fixed points and iterates (Poole et al. 2016, Fig. 2).

    Same arguments as :func:`plot_q_map`, with correlations.
    """
    fig, ax = _plot_map(c, c_next, labels, fixed_points, iterates, ax, "c", colors)
    ax.set_xlim(float(np.min(c)), 1.0)
    return fig, ax


def plot_iterates(layers, values, ax=None, *, labels=None, ylabel="$q^l$", colors=None, logy=False,
                  fixed_points=None):
    """Quantities layer by layer (e.g. ``q^l`` or ``c^l`` from :func:`meanfield.propagate`).

    Parameters
    ----------
    layers : 1-D array
    values : array (len(layers),) or (len(layers), n_curves)
    labels : list of str, optional
    ylabel : str
    fixed_points : sequence of float, optional
        Drawn as dotted horizontal lines, one per curve.
    logy : bool

    Returns
    -------
    fig, ax
    """
    fig, ax = _axes(ax, (4.5, 3.5))
    layers = np.asarray(layers)
    vals = np.asarray(values, dtype=float)
    if vals.ndim == 1:
        vals = vals[:, None]
    vals = vals.reshape(vals.shape[0], -1)
    labels = list(labels) if labels is not None else [None] * vals.shape[1]
    fps = None if fixed_points is None else np.atleast_1d(np.asarray(fixed_points, dtype=float))
    for i in range(vals.shape[1]):
        color = colors[i] if colors is not None else None
        (line,) = ax.plot(layers, vals[:, i], "o-", ms=3, lw=1.2, color=color, label=labels[i])
        if fps is not None and i < fps.size and np.isfinite(fps[i]):
            ax.axhline(fps[i], ls=":", color=line.get_color(), lw=1.0)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("layer $l$")
    ax.set_ylabel(ylabel)
    if any(lb is not None for lb in labels):
        ax.legend(fontsize="small", frameon=False)
    return fig, ax


def plot_depth_scales(sigma_w2, xi_q=None, xi_c=None, trainable_depth=None, ax=None, *, critical=None,
                      logy=True, title=None):
    """Depth scales ``xi_q``, ``xi_c`` and the trainable depth against sigma_w2 (Schoenholz et al. 2017, Fig. 2).

    Parameters
    ----------
    sigma_w2 : 1-D array
    xi_q, xi_c, trainable_depth : 1-D arrays, optional
        Infinite values (on the critical line) are not drawn.
    critical : float, optional
        The critical sigma_w2, drawn as a vertical dashed line.
    logy : bool
    title : str, optional

    Returns
    -------
    fig, ax
    """
    fig, ax = _axes(ax, (5.0, 3.6))
    sw = np.asarray(sigma_w2, dtype=float)
    for values, label, style in ((xi_q, "$\\xi_q$", "-"), (xi_c, "$\\xi_c$", "-"),
                                 (trainable_depth, "trainable depth $6\\xi_c$", "--")):
        if values is None:
            continue
        v = np.asarray(values, dtype=float)
        ax.plot(sw, np.where(np.isfinite(v), v, np.nan), style, lw=1.6, label=label)
    if critical is not None and np.isfinite(critical):
        ax.axvline(float(critical), color="0.3", ls=":", lw=1.0, label="critical $\\sigma_w^2$")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("$\\sigma_w^2$")
    ax.set_ylabel("depth (layers)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small", frameon=False)
    return fig, ax
