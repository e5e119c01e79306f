"""Matplotlib figures.  Plotting functions draw what they are given and compute nothing.

Each function takes an optional ``ax`` and returns ``(fig, ax)``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PHASE_COLORS",
    "REFERENCE_INITS",
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


#: Flat colours of the phases that have no trainable depth to show: the variance diverges
#: (q* = inf) or the network is pseudo-linear (sigma_b2 = 0, q* = 0: correlations freeze).
PHASE_COLORS = {"divergent": "0.62", "pseudo-linear": "#d8c7a0"}

#: Legend entries of those phases.
PHASE_LEGEND = {
    "divergent": "divergent: $q^* = \\infty$, the variance grows without bound",
    "pseudo-linear": "pseudo-linear: $q^* = 0$, correlations freeze",
}

#: Standard initialisations as (sigma_w2, sigma_b2), in variances of the weights times fan-in:
#: He et al. (2015); Glorot & Bengio (2010), whose 2/(fan_in + fan_out) equals LeCun et al.'s
#: (1998) 1/fan_in for square layers.
REFERENCE_INITS = {
    "He ($\\sigma_w^2 = 2$, $\\sigma_b^2 = 0$)": (2.0, 0.0),
    "Xavier/Glorot = LeCun ($\\sigma_w^2 = 1$, $\\sigma_b^2 = 0$)": (1.0, 0.0),
}

_REFERENCE_MARKERS = ("^", "s", "D", "v", "P")

_FIELD_LABELS = {"trainable_depth": "trainable depth $6\\xi_c$ (layers)", "xi_c": "$\\xi_c$ (layers)",
                 "xi_q": "$\\xi_q$ (layers)", "chi_1": "$\\chi_1$", "q_star": "$q^*$", "c_star": "$c^*$"}


def _outlined(foreground="0.15", width=2.2):
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=width, foreground=foreground)]


def plot_phase_diagram(diagram, ax=None, *, field="trainable_depth", contours=(10, 20, 50, 100, 200, 500),
                       log=True, cmap="viridis", vmin=None, vmax=None,
                       critical_label="critical line $\\chi_1 = 1$", colorbar=True, title=None,
                       references=REFERENCE_INITS, phase_names=True, legend=True):
    """Draw a phase diagram: a field over (sigma_w2, sigma_b2), the critical line, depth contours.

    After Schoenholz et al. (2017), Fig. 1: sigma_w2 on the horizontal axis, sigma_b2 on the
    vertical one; the trainable depth ``6 xi_c`` as colour (log scale), labelled contour lines
    of it, and the order-to-chaos line ``chi_1 = 1``.  Where the variance diverges (phase
    "divergent") or the network is pseudo-linear, there is no depth to show: those regions are
    drawn in the flat colours of :data:`PHASE_COLORS`, with legend entries.  Phase names are
    written where a phase covers an area, and the standard initialisations
    (:data:`REFERENCE_INITS`) are marked where they fall inside the plotted range.

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
    vmin, vmax : float, optional
        Ends of the colour scale; values beyond them (and infinite values, e.g. on the critical
        line) are drawn in the end colours, and the colour bar is extended to say so.
    colorbar : bool
    title : str, optional
        Default: the activation and the phases that cover an area.
    references : mapping of label to (sigma_w2, sigma_b2), or None
        Points to mark (default :data:`REFERENCE_INITS`); those outside the plotted range are skipped.
    phase_names : bool
        Write each phase's name inside the region it covers.
    legend : bool

    Returns
    -------
    fig : matplotlib.figure.Figure
    ax : matplotlib.axes.Axes
    """
    from matplotlib import colors
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, ax = _axes(ax, (6.0, 5.2))
    sw = np.asarray(diagram.sigma_w2, dtype=float)
    sb = np.asarray(diagram.sigma_b2, dtype=float)
    phase = np.asarray(diagram.phase).astype(str)
    flat = np.isin(phase, list(PHASE_COLORS))
    values = np.array(getattr(diagram, field), dtype=float)
    values[flat] = np.nan  # no trainable depth (or other field) to show there
    finite = np.isfinite(values) & (values > 0 if log else True)
    if vmax is None:
        vmax = float(np.nanpercentile(values[finite], 99)) if finite.any() else 1.0
    if vmin is None:
        vmin = float(np.min(values[finite])) if finite.any() else (0.1 if log else 0.0)
    if log:
        vmin = max(vmin, 1e-3)
    vmax = max(vmax, vmin * 1.0001 if vmin > 0 else vmin + 1e-12)
    shown = np.where(np.isinf(values) & (values > 0), vmax, values)
    shown = np.ma.masked_invalid(np.where(shown > 0, shown, np.nan) if log else shown)
    norm = colors.LogNorm(vmin=vmin, vmax=vmax) if log else colors.Normalize(vmin=vmin, vmax=vmax)
    xe, ye = _cell_edges(sw), _cell_edges(sb)
    mesh = ax.pcolormesh(xe, ye, shown, cmap=cmap, norm=norm, shading="flat", rasterized=True)
    shown_values = values[~np.isnan(values) & (values > 0 if log else True)]
    over, under = bool(np.any(shown_values > vmax)), bool(np.any(shown_values < vmin))
    extend = {(True, True): "both", (True, False): "max", (False, True): "min"}.get((over, under), "neither")
    if colorbar:
        fig.colorbar(mesh, ax=ax, label=_FIELD_LABELS.get(field, field), extend=extend)
    handles = []
    for name, color in PHASE_COLORS.items():
        where = phase == name
        if not where.any():
            continue
        layer = np.ma.masked_where(~where, np.ones(where.shape))
        ax.pcolormesh(xe, ye, layer, cmap=colors.ListedColormap([color]), shading="flat", rasterized=True,
                      zorder=1.5)
        rows = np.flatnonzero(where.any(axis=1))
        if rows.size <= 2:  # a row or two has no area: draw it as a thick line along the row
            for i in rows:
                cols = sw[where[i]]
                ax.plot([cols.min(), cols.max()] if cols.size > 1 else cols, [sb[i]] * min(cols.size, 2),
                        "-" if cols.size > 1 else "s", color=color, lw=6, ms=6, solid_capstyle="butt",
                        clip_on=False, zorder=4, mec="0.3")
        handles.append(Patch(facecolor=color, edgecolor="0.3", lw=0.5, label=PHASE_LEGEND[name]))
    if contours and field == "trainable_depth" and sw.size > 1 and sb.size > 1:
        td = np.where(np.isfinite(values), values, np.nan)
        levels = [lv for lv in contours if np.nanmin(td) < lv < np.nanmax(td)] if np.isfinite(td).any() else []
        if levels:
            cs = ax.contour(sw, sb, td, levels=levels, colors="white", linewidths=0.9, zorder=3)
            cs.set_path_effects(_outlined())
            positions = _contour_label_positions(cs, diagram.critical_line, sw, sb)
            if positions:
                for text in ax.clabel(cs, fmt="%g", fontsize="x-small", manual=positions, colors="black"):
                    text.set_path_effects(_outlined(foreground="white", width=2.5))
            handles.append(Line2D([], [], color="white", lw=0.9, path_effects=_outlined(),
                                  label="contours of " + _FIELD_LABELS["trainable_depth"]))
    crit = np.asarray(diagram.critical_line, dtype=float)
    ok = np.isfinite(crit)
    if ok.any():
        label = critical_label
        if ok.sum() == 1:  # a single point (e.g. relu's, or a 1-D slice): say where it is
            label = critical_label.replace("critical line", "critical point") + f" at $\\sigma_w^2 = {crit[ok][0]:.4g}$"
        (line,) = ax.plot(crit[ok], sb[ok], "-" if ok.sum() > 1 else "o", color="crimson", lw=2.0, ms=7,
                          clip_on=False, label=label, zorder=6)
        handles.insert(0, line)
    _mark_references(ax, references, (sw.min(), sw.max()), (sb.min(), sb.max()), handles)
    _set_limits(ax, sw, sb)
    ax.set_xlabel("$\\sigma_w^2$")
    ax.set_ylabel("$\\sigma_b^2$")
    if phase_names:
        _write_phase_names(ax, phase, sw, sb)
    if legend and handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize="small",
                  frameon=False, ncols=1)
    if title is None:
        title = _default_title(diagram, phase)
    ax.set_title(title, fontsize="medium")
    return fig, ax


def _has_area(mask):
    """A region covers an area if it spans at least two rows and two columns of the grid."""
    return mask.sum() >= 4 and np.count_nonzero(mask.any(axis=1)) >= 2 and np.count_nonzero(mask.any(axis=0)) >= 2


def _default_title(diagram, phase):
    name = getattr(diagram, "activation", "")
    if not name:
        return ""
    order = ("ordered", "chaotic", "divergent", "pseudo-linear")
    present = [p for p in order if (phase == p).any()]
    words = ", ".join(present[:-1]) + (" and " if len(present) > 1 else "") + present[-1] if present else ""
    rho = getattr(diagram, "rho", 1.0)
    extra = f" (dropout, keep probability {rho:g})" if rho != 1 else ""
    return f"{name}{extra}: " + (f"{words} phase{'s' if len(present) > 1 else ''}" if words else "phase diagram")


def _limits(v):
    """The plotted range of a grid axis; a single value (a 1-D slice) gets a margin instead of an empty range."""
    lo, hi = float(v.min()), float(v.max())
    if hi > lo:
        return lo, hi
    pad = 0.5 * max(abs(lo), 1.0)
    return (max(lo - pad, 0.0) if lo >= 0 else lo - pad), hi + pad


def _cell_edges(v):
    """Edges of the cells centred on the grid values; one value fills the plotted range."""
    if v.size == 1:
        return np.array(_limits(v))
    mid = 0.5 * (v[1:] + v[:-1])
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def _set_limits(ax, sw, sb):
    ax.set_xlim(*_limits(sw))
    ax.set_ylim(*_limits(sb))


def _mark_references(ax, references, xrange, yrange, handles):
    if not references:
        return
    for k, (label, (x, y)) in enumerate(references.items()):
        if xrange[0] <= x <= xrange[1] and yrange[0] <= y <= yrange[1]:
            (h,) = ax.plot([x], [y], _REFERENCE_MARKERS[k % len(_REFERENCE_MARKERS)], color="white", mec="black",
                           mew=1.2, ms=8, clip_on=False, zorder=7, label=label, linestyle="none")
            handles.append(h)


def _write_phase_names(ax, phase, sw, sb):
    """Each phase's name at the point of its region farthest from other phases and the edges."""
    from scipy import ndimage

    if sw.size < 2 or sb.size < 2:
        return
    for name in ("ordered", "chaotic", "divergent", "pseudo-linear"):
        mask = phase == name
        if not _has_area(mask):
            continue
        padded = np.pad(mask, 1, constant_values=False)
        depth = ndimage.distance_transform_edt(padded, sampling=(1.0 / sb.size, 1.0 / sw.size))[1:-1, 1:-1]
        i, j = np.unravel_index(int(np.argmax(depth)), depth.shape)
        ax.text(sw[j], sb[i], name, ha="center", va="center", fontsize="small", fontweight="bold", color="black",
                path_effects=_outlined(foreground="white", width=3), zorder=8)


def _contour_label_positions(cs, critical_line, sw, sb, margin=0.07, line_dist=0.04, min_dist=0.1):
    """One label position per contour piece, off the critical line, away from the edges and each other.

    Positions are in data coordinates; distances (``margin`` from the edges, ``line_dist`` from the
    critical line, ``min_dist`` between labels) are measured in axes fractions.
    """
    x0, x1, y0, y1 = sw.min(), sw.max(), sb.min(), sb.max()
    if x1 <= x0 or y1 <= y0:
        return []

    def frac(x, y):
        return np.column_stack([(np.asarray(x) - x0) / (x1 - x0), (np.asarray(y) - y0) / (y1 - y0)])

    crit = np.asarray(critical_line, dtype=float)
    ok = np.isfinite(crit)
    line = frac(crit[ok], sb[ok]) if ok.any() else np.empty((0, 2))
    if len(line) > 1:  # densify, so the distance to the line is the distance to its segments
        t = np.linspace(0, len(line) - 1, 20 * len(line))
        line = np.column_stack([np.interp(t, np.arange(len(line)), line[:, 0]),
                                np.interp(t, np.arange(len(line)), line[:, 1])])
    placed = []
    positions = []
    for path in cs.get_paths():
        for piece in path.to_polygons(closed_only=False):
            if len(piece) < 3:
                continue
            f = frac(piece[:, 0], piece[:, 1])
            inside = np.all((f > margin) & (f < 1 - margin), axis=1)
            d_line = (np.min(np.hypot(*(f[:, None, :] - line[None, :, :]).transpose(2, 0, 1)), axis=1)
                      if len(line) else np.full(len(f), np.inf))
            d_other = (np.min(np.hypot(*(f[:, None, :] - np.array(placed)[None, :, :]).transpose(2, 0, 1)), axis=1)
                       if placed else np.full(len(f), np.inf))
            good = inside & (d_line > line_dist) & (d_other > min_dist)
            if not good.any():
                continue
            # of the acceptable points, the one nearest mid-height: labels in a readable band
            k = np.flatnonzero(good)[np.argmin(np.abs(f[good, 1] - 0.55))]
            placed.append(f[k])
            positions.append((float(piece[k, 0]), float(piece[k, 1])))
    return positions


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
                      sigma_b2=None, references=REFERENCE_INITS, logy=True, title=None):
    """Depth scales ``xi_q``, ``xi_c`` and the trainable depth against sigma_w2 (Schoenholz et al. 2017, Fig. 2).

    A slice of the phase diagram at one sigma_b2: the critical sigma_w2 there is drawn as a
    vertical line, and the standard initialisations that lie on the slice (same sigma_b2, inside
    the plotted sigma_w2 range) as vertical dotted lines.

    Parameters
    ----------
    sigma_w2 : 1-D array
    xi_q, xi_c, trainable_depth : 1-D arrays, optional
        Infinite values (on the critical line) are not drawn.
    critical : float, optional
        The critical sigma_w2, drawn as a vertical dashed line.
    sigma_b2 : float, optional
        The bias variance of the slice: named in the critical line's legend entry, and needed to
        mark the reference initialisations.
    references : mapping of label to (sigma_w2, sigma_b2), or None
        Default :data:`REFERENCE_INITS`; marked only if ``sigma_b2`` is given and matches.
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
        where = f" at $\\sigma_b^2 = {sigma_b2:g}$" if sigma_b2 is not None else ""
        ax.axvline(float(critical), color="crimson", ls="--", lw=1.2,
                   label=f"critical $\\sigma_w^2 = {float(critical):.4g}${where}")
    if references and sigma_b2 is not None:
        for k, (label, (x, y)) in enumerate(references.items()):
            if y == sigma_b2 and sw.min() <= x <= sw.max():
                ax.axvline(x, color="0.35", ls=":", lw=1.2, label=label,
                           marker=_REFERENCE_MARKERS[k % len(_REFERENCE_MARKERS)], ms=6, mfc="white", mec="black")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("$\\sigma_w^2$")
    ax.set_ylabel("depth (layers)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small", frameon=False)
    return fig, ax
