"""Matplotlib figures.  Plotting functions draw what they are given and compute nothing.

Each function takes an optional ``ax`` and returns ``(fig, ax)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_comparison"]


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
