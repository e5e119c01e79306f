"""Plain-words explanations for the command line: phases, overflow, gradients, critical points.

Everything here returns text (and plain data for ``--json``); nothing prints.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .dynamics import format_factor
from .layers import Dense

#: The phase labels in display order (as :data:`meanfield.phase.PHASES`).
PHASE_ORDER = ("ordered", "chaotic", "critical", "divergent", "pseudo-linear")

#: Largest finite values: pre-activations overflow when their scale sqrt(q^l) passes these.
FLOAT_MAX = {"float32": float(np.finfo(np.float32).max), "float64": float(np.finfo(np.float64).max)}


def variance_growth(act, sigma_w2: float, rho: float = 1.0):
    """Per-layer growth factor of a diverging variance (:meth:`meanfield.layers.Dense.variance_growth`)."""
    return Dense(act, sigma_w2, 0.0, rho).variance_growth()


def overflow_layers(growth, q0: float = 1.0):
    """Layers until the pre-activation scale ``sqrt(q0 growth^l)`` passes the largest float32/float64."""
    if growth is None or not growth > 1.0 + 1e-12:
        return None
    return {name: int(math.ceil((2.0 * math.log(fmax) - math.log(q0)) / math.log(growth)))
            for name, fmax in FLOAT_MAX.items()}


def divergent_words(act, sigma_w2: float, sigma_b2: float, rho: float = 1.0) -> str:
    """What q* = inf means at one point, with the overflow depth where it can be computed."""
    g = variance_growth(act, sigma_w2, rho)
    head = "the variance grows without bound (q* = inf)"
    if g is not None and g > 1.0 + 1e-12:
        n = overflow_layers(g)
        return (f"{head}, by x{format_factor(g)} per layer: activations overflow float32 after ~{n['float32']} "
                f"layers and float64 after ~{n['float64']} (from an input variance of 1)")
    if g is not None and abs(g - 1.0) <= 1e-12:
        return (f"{head}, but not exponentially (the per-layer factor tends to 1; the bias variance "
                f"{sigma_b2:g} is added every layer): it never settles, yet does not overflow at any "
                "practical depth")
    if getattr(act, "exp_rate", 0.0) > 0:
        return f"{head}, faster than exponentially: activations overflow within a few layers"
    return f"{head}: the pre-activations blow up with depth and overflow after a finite number of layers"


def pseudo_linear_words(point, name: str) -> str:
    """What the pseudo-linear phase (sigma_b2 = 0, q* = 0, phi smooth with phi(0) = 0) means."""
    slope = float(point.q_slope)
    text = (f"pseudo-linear: with sigma_b2 = 0 and phi(0) = 0 the variance collapses to 0 (q* = 0, "
            f"shrinking x{format_factor(slope)} per layer) and on such small signals {name} acts as a linear "
            "map, phi(h) ~ phi'(0) h. ")
    cs = float(point.c_star)
    if math.isnan(cs):
        text += ("Correlations between inputs freeze at their input values instead of converging (every c "
                 "is a fixed point, chi_c = 1), so no finite xi_c describes the network and the 6 xi_c "
                 "trainable-depth rule does not apply.")
        small = float(getattr(point, "c_star_small_bias", math.nan))
        if math.isfinite(small):
            text += f" Any sigma_b2 > 0, however small, changes that: correlations then converge to c* = {small:.4g}."
    else:
        text += (f"With dropout, correlations still converge, to c* = {cs:.4g} at chi_c = {float(point.chi_c):.4g} "
                 "per layer.")
    return text


def phase_note(act, point) -> str | None:
    """A sentence for the answers whose numbers need words (divergent, pseudo-linear, zero bias), else None."""
    if point.phase == "divergent":
        return divergent_words(act, float(point.sigma_w2), float(point.sigma_b2), float(point.rho))
    if point.phase == "pseudo-linear":
        return pseudo_linear_words(point, act.name)
    small = float(getattr(point, "c_star_small_bias", math.nan))
    if math.isfinite(small) and abs(small - float(point.c_star)) > 1e-9:
        return (f"zero bias: these are the numbers of the network with sigma_b2 = 0 exactly, whose variance "
                f"collapses to q* = 0; any sigma_b2 > 0, however small, gives another network, with c* = "
                f"{small:.4g} (the answer jumps at sigma_b2 = 0)")
    return None


def reach_words(gg, factor: float) -> str:
    """When the squared gradient norm has changed by ``factor`` (> 1), in words."""
    growing = gg.factor >= 1.0
    reach = gg.depth_for(factor if growing else 1.0 / factor)
    size = f"{factor:g}"
    change = f"grown by a factor {size}" if growing else f"fallen to 1/{size} of its size"
    if math.isfinite(reach):
        return f"it has {change} after {reach} layers"
    if abs(gg.factor - 1.0) < 1e-9 and not gg.residual:
        return f"at x1 per layer it does not change by a factor {size} at any depth (in mean field)"
    if gg.residual:
        verb = f"grow by a factor {size}" if growing else f"fall to 1/{size} of its size"
        return f"it does not {verb} within the {gg.depth} layers computed"
    return f"at this rate it does not change by a factor {size}"  # pragma: no cover


def critical_value(act, sigma_b2, rho: float = 1.0):
    """The critical sigma_w2 at each sigma_b2 (NaN where there is none), without the library's warning."""
    from .phase import critical_sigma_w2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = critical_sigma_w2(act, sigma_b2, rho=rho)
    return float(out) if np.ndim(out) == 0 else np.asarray(out, dtype=float)


def _fixed_point_from(act, sigma_w2, sigma_b2, rho, q0) -> float:
    from .fixed_points import q_star

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(q_star(act, sigma_w2, sigma_b2, rho=rho, q0=q0))


def _chi_at(act, sigma_w2, q) -> float:
    return float(Dense(act, sigma_w2, 0.0).chi_1(q))


def _fate(act, sigma_w2, sigma_b2, rho, q) -> str:
    """Where the variance goes from ``q``, in words."""
    reached = _fixed_point_from(act, sigma_w2, sigma_b2, rho, q)
    if not math.isfinite(reached):
        return "diverges (q* = inf)"
    chi = _chi_at(act, sigma_w2, reached)
    kind = "ordered" if chi < 1 else "chaotic"
    side = "lower" if reached < q else "upper"
    return f"settles at the {side} fixed point q* = {reached:.4g} ({kind}, chi_1 = {chi:.3g})"


def no_critical_point_words(act, rho: float = 1.0, mention_zero: bool = True) -> str:
    """Words for a sigma_b2 without any chi_1 = 1 point, naming the critical point at sigma_b2 = 0 if any."""
    text = "no sigma_w2 gives chi_1 = 1 at a finite fixed point of the variance map"
    if mention_zero:
        at_zero = critical_value(act, 0.0, rho)
        if math.isfinite(at_zero):
            text += f" (at sigma_b2 = 0 the critical sigma_w2 is {at_zero:.4g})"
    return text


def critical_points_explained(act, sigma_b2: float, rho: float = 1.0) -> tuple[str, list[dict]]:
    """Why the critical sigma_w2 at ``sigma_b2`` is NaN: every chi_1 = 1 point, and what happens there.

    Returns the words and, for ``--json``, the critical points as dicts.
    """
    from .phase import critical_points

    points = critical_points(act, sigma_b2, rho=rho)
    rows, seen = [], set()
    for cp in points:
        key = round(cp.sigma_w2, 10)
        if key in seen:  # e.g. relu at sigma_b2 = 0: every variance is a fixed point of one sigma_w2
            continue
        seen.add(key)
        rows.append(cp)
    data = [{"sigma_w2": cp.sigma_w2, "sigma_b2": cp.sigma_b2, "q_star": cp.q_star, "q_slope": cp.q_slope,
             "stable": bool(cp.stable), "reached_from_q0_1": bool(cp.reached), "q_reached_from_q0_1": cp.q_reached}
            for cp in rows]
    where = f"at sigma_b2 = {sigma_b2:.4g}"
    if not rows:
        return f"{where}: {no_critical_point_words(act, rho, sigma_b2 > 0)}", data
    parts = []
    for cp in rows:
        sw, q = cp.sigma_w2, cp.q_star
        if cp.reached:
            parts.append(f"sigma_w2 = {sw:.4g} (q* = {q:.4g}) is critical and reached from q0 = 1")
            continue
        if cp.stable:
            parts.append(f"chi_1 = 1 at sigma_w2 = {sw:.4g} with a stable fixed point q* = {q:.4g}, but a network "
                         "started from a variance of 1 does not reach it: its variance "
                         f"{_fate(act, sw, sigma_b2, rho, 1.0)}")
            continue
        if q > 0:
            below = _fate(act, sw, sigma_b2, rho, 0.5 * q)
            above = _fate(act, sw, sigma_b2, rho, 2.0 * q)
            parts.append(f"chi_1 = 1 only at sigma_w2 = {sw:.4g}, where the variance map's fixed point q* = {q:.4g} "
                         f"is unstable (slope {cp.q_slope:.4g} > 1): a network whose variance starts below it "
                         f"{below}; one that starts above it {above}")
        else:
            parts.append(f"chi_1 = 1 at sigma_w2 = {sw:.4g} only for a vanishing variance (q* = 0, slope "
                         f"{cp.q_slope:.4g}), which does not attract: a network started from a variance of 1 "
                         f"{_fate(act, sw, sigma_b2, rho, 1.0)}")
    return f"{where}: " + "; ".join(parts), data


def leading_minus_as_values(argv: list[str]) -> list[str]:
    """``argv`` with every word that starts with a single '-' and is not ``-h`` read as a value.

    The command line has no short options but ``-h``, so ``-x``, ``-tanh(x)`` or ``-1e3`` is an
    expression or a number, not an option; argparse would take it for an unknown option (only plain
    negative numbers such as ``-3`` pass).  A leading space keeps it a value; activations and
    numbers are read with surrounding spaces ignored.  Words after ``--`` are left alone.
    """
    out = []
    seen_command = False  # words before the command are the program's own options (-h, --version)
    for k, word in enumerate(argv):
        if word == "--":
            return out + list(argv[k:])
        if not word.startswith("-"):
            seen_command = True
        elif seen_command and len(word) > 1 and word[1] != "-" and word != "-h":
            word = " " + word
        out.append(word)
    return out
