"""The ``meanfield spectrum`` command: how far a deep network is from dynamical isometry, and what would help.

The squared singular values of the input-output Jacobian ``J = prod_l D^l W^l`` at the fixed point
``q*`` (Pennington, Schoenholz & Ganguli 2017, "Resurrecting the sigmoid in deep learning through
dynamical isometry"; 2018, "The emergence of spectral universality in deep networks"), from
:func:`meanfield.spectrum.jacobian_spectrum`.  Their normalised variance is
``variance / mean^2 = L (mu_2/mu_1^2 - 1 + v_W)``, ``mu_k = E[phi'(h)^{2k}]``: the activation's
part ``mu_2/mu_1^2 - 1`` per layer depends only on q*, the weights add ``v_W = 1`` per layer if
Gaussian and nothing if orthogonal.
"""

from __future__ import annotations

import math

import numpy as np

#: variance / mean^2 of the squared singular values below which a network counts as near isometry.
ISOMETRY_VARIANCE = 0.1
#: and its mean squared singular value within this factor of 1.
ISOMETRY_MEAN = 2.0
_KINDS = {"gaussian": ("gaussian",), "orthogonal": ("orthogonal",), "both": ("gaussian", "orthogonal")}


def _edge(spec) -> float:
    """The spectral edge, or NaN where the computed one is not a valid top of the spectrum (below the mean)."""
    edge = float(spec.edge)
    return edge if math.isfinite(edge) and edge >= spec.mean * (1 - 1e-9) else math.nan


def _near_isometry(spec) -> bool:
    nv = spec.variance / spec.mean ** 2
    return bool(nv <= ISOMETRY_VARIANCE and abs(math.log(spec.mean)) <= math.log(ISOMETRY_MEAN))


def _summary(spec) -> dict:
    nv = spec.variance / spec.mean ** 2
    return {
        "q_star": spec.q_star, "chi_1": spec.chi_1, "mean": spec.mean, "variance": spec.variance,
        "normalized_variance": nv, "edge": _edge(spec), "edge_over_mean": _edge(spec) / spec.mean,
        "atoms": [[float(loc), float(mass)] for loc, mass in spec.atoms], "moments": spec.moments.tolist(),
        "near_isometry": _near_isometry(spec),
    }


def _activation_part(act, q: float) -> float:
    """``mu_2/mu_1^2 - 1`` at ``q``: the activation's share of the normalised variance per layer."""
    from ._spectrum_law import d2_law

    mu = d2_law(act, q).moments(2)
    return float(mu[1] / mu[0] ** 2 - 1.0) if mu[0] > 0 else math.inf


def _smaller_q_star(act, depth: int, q_star: float):
    """The largest q* < the current one on the critical line with orthogonal variance/mean^2 <= the target.

    Returns ``(q, sigma_w2, sigma_b2, normalised variance)`` or None (none down to q* = 1e-6, or
    only at unrealisable sigma_b2 < 0).
    """
    from .phase import critical_line

    if not (q_star > 1e-6):
        return None
    qs = np.geomspace(q_star, 1e-6, 41)[1:]
    sw, sb = critical_line(act, qs)
    for q, w, b in zip(qs, np.atleast_1d(sw), np.atleast_1d(sb)):
        if not (np.isfinite(w) and w > 0 and b >= 0):
            continue
        nv = depth * _activation_part(act, float(q))
        if nv <= ISOMETRY_VARIANCE:
            return float(q), float(w), float(b), float(nv)
    return None


def advice(act, depth: int, spectra: dict) -> str:
    """What keeps this network from dynamical isometry and what would change it (in words)."""
    s = next(iter(spectra.values()))
    law = s.law
    dpart = float(s.mu[1] / s.mu[0] ** 2 - 1.0)
    words = []
    if abs(math.log(s.mean)) > math.log(ISOMETRY_MEAN):
        way = "explode" if s.chi_1 > 1 else "vanish"
        words.append(f"off the critical line (chi_1 = {s.chi_1:.4g}) the mean squared singular value chi_1^L = "
                     f"{s.mean:.3g}: gradients {way}; move to chi_1 = 1 ('meanfield critical') first.")
    if law.p_zero > 0:
        p = 1.0 - float(law.p_zero)
        words.append(f"phi' = 0 on a fraction {law.p_zero:.3g} of the units at q* = {s.q_star:.3g}, so that "
                     "fraction of the singular values is exactly 0.")
        if law.discrete and np.count_nonzero(law.values) == 1:  # d is 0 or a: Pennington et al. 2017's closed forms
            words.append(f"variance/mean^2 = L/p with Gaussian and L(1-p)/p with orthogonal weights (p = {p:.3g} "
                         f"the fraction of active units; here {depth / p:.4g} and {depth * (1 - p) / p:.4g}).")
    if all(_near_isometry(spec) for spec in spectra.values()):
        words.append("The spectrum stays close to isometric at this depth.")
        return " ".join(words)
    if "gaussian" in spectra:
        orth = depth * dpart
        words.append(f"Gaussian weights alone add L = {depth} to variance/mean^2; orthogonal weights remove it "
                     f"(variance/mean^2 = {orth:.3g} instead of {depth * (dpart + 1):.3g}).")
    if depth * dpart > ISOMETRY_VARIANCE:
        found = _smaller_q_star(act, depth, s.q_star)
        share = f"phi'^2 adds mu_2/mu_1^2 - 1 = {dpart:.3g} per layer at q* = {s.q_star:.3g}"
        if found is None:
            words.append(f"{share}, and no smaller q* on the critical line brings depth x that below "
                         f"{ISOMETRY_VARIANCE:g}: {act.name} cannot be isometric at depth {depth}.")
        else:
            q, w, b, nv = found
            words.append(f"{share}; a smaller q* on the critical line makes phi' more nearly constant: at q* = "
                         f"{q:.3g} (sigma_w2 = {w:.6g}, sigma_b2 = {b:.3g}) orthogonal weights give "
                         f"variance/mean^2 = {nv:.3g} at depth {depth}, with mean 1.")
    elif "gaussian" not in spectra:
        words.append(f"Orthogonal weights keep the spread small at this q* (variance/mean^2 = {depth * dpart:.3g}).")
    return " ".join(words)


def _check_point(act, sigma_w2: float, sigma_b2: float) -> None:
    from .fixed_points import q_star

    if not (math.isfinite(sigma_w2) and sigma_w2 > 0):
        raise ValueError(f"--sigma-w2 must be a positive variance, got {sigma_w2}")
    if not (math.isfinite(sigma_b2) and sigma_b2 >= 0):
        raise ValueError(f"--sigma-b2 must be a non-negative variance, got {sigma_b2}")
    if not math.isfinite(float(q_star(act, sigma_w2, sigma_b2))):
        raise ValueError(f"--sigma-w2 {sigma_w2:g} --sigma-b2 {sigma_b2:g}: the variance map of {act.name} has no "
                         "finite fixed point (q* = inf, the network diverges), so the Jacobian spectrum at q* is "
                         "undefined; lower --sigma-w2 (see 'meanfield critical')")


def _atoms_text(spec) -> str:
    if not spec.atoms:
        return "none"
    return ", ".join(f"{loc:.4g} ({mass:.3g})" for loc, mass in spec.atoms)


def cmd_spectrum(args, dump_json, activation_of) -> int:
    """Print the moments, edge and atoms of J J^T's spectrum, whether it is near isometry, and advice."""
    from .spectrum import jacobian_spectrum

    if isinstance(args.depth, bool) or args.depth < 1:
        raise ValueError(f"--depth must be a positive number of layers, got {args.depth}")
    if args.weights not in _KINDS:
        raise ValueError(f"--weights must be one of {', '.join(_KINDS)}, got {args.weights!r}")
    act = activation_of(args)
    _check_point(act, args.sigma_w2, args.sigma_b2)
    spectra = {w: jacobian_spectrum(act, args.depth, args.sigma_w2, args.sigma_b2, weights=w)
               for w in _KINDS[args.weights]}
    help_text = advice(act, args.depth, spectra)
    if args.json:
        dump_json({"activation": act.name, "depth": args.depth, "sigma_w2": args.sigma_w2,
                   "sigma_b2": args.sigma_b2, "isometry_threshold": ISOMETRY_VARIANCE,
                   "spectra": {w: _summary(s) for w, s in spectra.items()}, "advice": help_text})
        return 0
    s = next(iter(spectra.values()))
    print(f"{args.depth} {act.name} layers at sigma_w2 = {args.sigma_w2:g}, sigma_b2 = {args.sigma_b2:g}: "
          f"q* = {s.q_star:.6g}, chi_1 = {s.chi_1:.6g}")
    print("  squared singular values lambda of the input-output Jacobian (eigenvalues of J J^T; Pennington, "
          "Schoenholz & Ganguli 2017)")
    names = list(spectra)
    print("  " + " " * 24 + "".join(f"{w:>16}" for w in names))
    rows = [("mean (chi_1^L)", lambda x: f"{x.mean:.6g}"), ("variance", lambda x: f"{x.variance:.6g}"),
            ("variance / mean^2", lambda x: f"{x.variance / x.mean ** 2:.4g}"),
            ("edge (largest lambda)", lambda x: f"{_edge(x):.6g}"),
            ("edge / mean", lambda x: f"{_edge(x) / x.mean:.4g}")]
    for label, fmt in rows:
        print(f"  {label:<24}" + "".join(f"{fmt(spectra[w]):>16}" for w in names))
    for w in names:
        spec = spectra[w]
        nv = spec.variance / spec.mean ** 2
        near = _near_isometry(spec)
        verdict = "near dynamical isometry" if near else "far from dynamical isometry"
        edge = _edge(spec)
        top = (f"the largest lambda is {edge / spec.mean:.3g} x the mean" if math.isfinite(edge)
               else "the largest lambda could not be computed")
        off = ("" if abs(math.log(spec.mean)) <= math.log(ISOMETRY_MEAN)
               else f", the mean {spec.mean:.3g} is not within x{ISOMETRY_MEAN:g} of 1")
        cmp = "<=" if nv <= ISOMETRY_VARIANCE else ">"
        reason = f"variance/mean^2 = {nv:.3g} {cmp} {ISOMETRY_VARIANCE:g}, {top}{off}"
        print(f"  {w}: {verdict} ({reason}); atoms, lambda (mass): {_atoms_text(spec)}")
    print(f"  advice: {help_text}")
    return 0


def add_parser(sub, add_common, func) -> None:
    """Register ``meanfield spectrum``."""
    g = sub.add_parser(
        "spectrum", help="Jacobian singular values: how close to dynamical isometry, Gaussian or orthogonal weights",
        description="Mean, variance, largest value and atoms of the squared singular values of the input-output "
                    "Jacobian of a deep network at its fixed point q* (free probability, Pennington, Schoenholz & "
                    "Ganguli 2017, 2018), whether the network is near dynamical isometry, and what would help.")
    g.add_argument("activation", nargs="?", default="tanh", help="activation (default: tanh)")
    g.add_argument("--depth", type=int, default=50, help="number of layers L (default 50)")
    g.add_argument("--sigma-w2", type=float, default=1.0, help="weight variance (default 1)")
    g.add_argument("--sigma-b2", type=float, default=0.0, help="bias variance (default 0)")
    g.add_argument("--weights", default="both", metavar="{gaussian,orthogonal,both}",
                   help="Gaussian, scaled Haar-orthogonal, or both side by side (default both)")
    add_common(g)
    g.set_defaults(func=func)
