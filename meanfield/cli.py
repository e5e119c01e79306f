"""The ``meanfield`` command: a thin layer over the public API."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import warnings

__all__ = ["main"]


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        if math.isnan(value):
            return "nan"
        return f"{value:.10g}"
    return str(value)


def parse_params(items) -> dict:
    """Activation parameters from repeated ``NAME=VALUE`` options; values are read as numbers, never evaluated."""
    params = {}
    for item in items or ():
        name, sep, text = str(item).partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name.isidentifier() or not text:
            raise ValueError(f"--param {item!r} is not NAME=VALUE (for example --param alpha=0.2)")
        if name in params:
            raise ValueError(f"--param {name} is given twice")
        try:
            value = int(text) if text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise ValueError(f"--param {name}={text!r}: the value must be a number") from None
        if not math.isfinite(value):
            raise ValueError(f"--param {name}={text!r}: the value must be a finite number")
        params[name] = value
    return params


def _activation(args):
    """The activation named on the command line, with its --param values (a clear error if wrong)."""
    from .activations import activation

    return activation(args.activation, **parse_params(getattr(args, "param", None)))


@contextlib.contextmanager
def _quiet_divergence():
    """A diverging variance is said in words by the command, not as numpy's overflow warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
        warnings.filterwarnings("ignore", ".*grows faster than linearly: no limiting correlation map", RuntimeWarning)
        yield


def _cmd_point(args) -> int:
    from . import analyze
    from ._cli_text import phase_note

    act = _activation(args)
    norm = None if args.norm == "none" else args.norm
    with _quiet_divergence():
        point = analyze(act, args.sigma_w2, args.sigma_b2, rho=args.rho, norm=norm, batch_size=args.batch_size)
    data = point.as_dict()
    note = phase_note(act, point) if norm is None else _norm_note(norm)
    if args.json:
        _dump_json(data | {"note": note, "nonfinite": {k: _fmt(v) for k, v in data.items()
                                                        if isinstance(v, float) and not math.isfinite(v)}})
        return 0
    labels = {
        "q_star": "q*  (fixed point of the variance map)",
        "c_star": "c*  (fixed point of the correlation map)",
        "chi_1": "chi_1 = sigma_w2 E[phi'(u)^2] at q*",
        "chi_c": "chi_c (slope of the c-map at c*)",
        "q_slope": "slope of the q-map at q*",
        "xi_q": "xi_q (variance depth scale, layers)",
        "xi_c": "xi_c (correlation depth scale, layers)",
        "trainable_depth": "trainable depth ~ 6 xi_c (layers)",
        "gradient_factor": "squared-gradient factor per layer (chi_1/rho)",
        "phase": "phase",
    }
    if norm == "layer":
        labels["chi_1"] = "chi_1 = sigma_w2 E[phi'(z)^2] / q* (layer norm)"
        labels["gradient_factor"] = "squared-gradient factor per layer"
    elif norm == "batch":
        labels["chi_1"] = "lambda_G (batch norm, Yang et al. 2019)"
        labels["gradient_factor"] = "squared-gradient factor per layer (lambda_G)"
    arch = {None: "", "layer": " with layer norm", "batch": f" with batch norm, B = {args.batch_size}"}[norm]
    print(f"{point.activation}{arch}: sigma_w2 = {_fmt(point.sigma_w2)}, sigma_b2 = {_fmt(point.sigma_b2)}, "
          f"rho = {_fmt(point.rho)}")
    for key, label in labels.items():
        print(f"  {label:<48} {_fmt(data[key])}")
    if note:
        print(f"  note: {note}")
    return 0


def _norm_note(norm: str) -> str:
    if norm == "layer":
        return ("layer norm fixes the variance after one layer (xi_q = 0); the network is the dense layer at unit "
                "variance with sigma_w2/q*, sigma_b2/q*")
    return ("batch norm reaches its symmetric fixed point after one layer and multiplies the squared gradient by "
            "lambda_G per layer whatever sigma_w2 and sigma_b2; its correlation depth scales are not computed (NaN)")


def _jsonable(obj):
    """Replace non-finite floats by None (strict JSON) and numpy values by Python ones."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _dump_json(data):
    json.dump(_jsonable(data), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def parse_grid(text: str, name: str):
    """A grid from ``START:STOP:N`` (inclusive, N points) or a comma-separated list."""
    import numpy as np

    text = str(text).strip()
    bad = f"{name} grid {text!r} is not START:STOP:N or a comma-separated list of numbers"
    if ":" in text:
        parts = text.split(":")
        try:
            start, stop, n = float(parts[0]), float(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            raise ValueError(bad) from None
        if len(parts) != 3:
            raise ValueError(bad)
        if n < 1:
            raise ValueError(f"{name} grid {text!r} has no points")
        values = np.linspace(start, stop, n)
    else:
        try:
            values = np.array([float(v) for v in text.split(",") if v.strip()])
        except ValueError:
            raise ValueError(bad) from None
    if values.size == 0:
        raise ValueError(f"{name} grid is empty")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} grid {text!r} has non-finite values")
    if np.any(values < 0):
        raise ValueError(f"{name} grid {text!r} has negative values; variances must be >= 0")
    return values


def _check_writable(path: str):
    import os

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OSError(f"cannot write {path!r}: directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise OSError(f"cannot write {path!r}: directory {directory!r} is not writable")
    if os.path.isdir(path):
        raise OSError(f"cannot write {path!r}: it is a directory")


#: Figure types ``meanfield phase`` writes, chosen by the file extension (pdf and svg are vector).
FIGURE_TYPES = ("png", "pdf", "svg")


def output_paths(output, default_prefix: str, figure: bool):
    """(data path, figure path or None, figure type) from ``--output``.

    ``--output PREFIX`` writes PREFIX.npz and PREFIX.png; ``--output NAME.pdf`` (or .svg, .png)
    picks the figure type and writes the data to NAME.npz; ``NAME.npz`` names the data file.  Any
    other extension is an error (a numeric one, as in ``run1.5``, is part of the prefix).
    """
    import os

    kind = "png"
    prefix = default_prefix if output is None else str(output)
    if output is not None:
        root, ext = os.path.splitext(prefix)
        ext = ext[1:]
        if ext.lower() in FIGURE_TYPES:
            prefix, kind = root, ext.lower()
        elif ext.lower() == "npz":
            prefix = root
        elif ext and not ext.replace("_", "").isdigit():
            raise ValueError(f"--output {output!r}: unknown figure type {'.' + ext!r}; give a name ending in "
                             f"{', '.join('.' + t for t in FIGURE_TYPES)}, or a PREFIX without an extension")
        if not os.path.basename(prefix):
            raise ValueError(f"--output {output!r} names a directory, not a file prefix")
    return prefix + ".npz", (prefix + "." + kind) if figure else None, kind


def _save_figure(fig, path: str, kind: str):
    """Save atomically: a temporary file in the same directory, then os.replace."""
    from ._io import atomic_write

    atomic_write(path, lambda fh: fig.savefig(fh, format=kind, dpi=150), prefix=".figure-")


class _ProgressBar:
    """A one-line progress bar on stderr, shown only when stderr is a terminal."""

    def __init__(self, label: str):
        self.label = label
        self.active = sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total: int):
        if not self.active:
            return
        pct = int(100 * done / max(total, 1))
        if pct == self.last:
            return
        self.last = pct
        filled = pct * 30 // 100
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {pct:3d}%")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _depth_near_line_words(act, pd, i, depth_near):
    """The table entry 'trainable depth at 1.05x' of row i, by the phase at 1.05 x the critical sigma_w2."""
    import numpy as np

    from . import analyze

    crit, sw = pd.critical_line[i], pd.sigma_w2
    if not np.isfinite(crit):
        return "no critical point"
    target = 1.05 * crit
    if not sw[0] <= target <= sw[-1]:
        return "outside grid"
    phase = analyze(act, target, pd.sigma_b2[i], rho=pd.rho).phase  # exactly there, not at a grid neighbour
    if phase == "divergent":
        return "divergent (q* = inf)"
    if phase == "pseudo-linear":
        return "pseudo-linear"
    d = depth_near[i]
    if np.isfinite(d):
        return f"~{d:.0f} layers"
    return "unbounded" if d == np.inf else "undefined"


def _phase_notes(pd, act) -> dict:
    """Words for the divergent and pseudo-linear regions of a phase diagram."""
    import numpy as np

    from ._cli_text import overflow_layers, variance_growth

    notes = {}
    div = pd.phase == "divergent"
    if div.any():
        j = int(np.max(np.flatnonzero(div.any(axis=0))))
        g = variance_growth(act, float(pd.sigma_w2[j]), pd.rho)
        n = overflow_layers(g)
        text = "q* = inf, the variance grows without bound"
        if n is not None:
            text += (f"; at sigma_w2 = {pd.sigma_w2[j]:g} it grows x{g:.3g} per layer, so activations overflow "
                     f"float32 after ~{n['float32']} layers and float64 after ~{n['float64']}")
        elif getattr(act, "exp_rate", 0.0) > 0:
            text += "; faster than exponentially: activations overflow within a few layers"
        else:
            text += "; the activations overflow after a finite number of layers"
        notes["divergent"] = text
    pseudo = pd.phase == "pseudo-linear"
    if pseudo.any():
        rows = np.unique(pd.sigma_b2[pseudo.any(axis=1)])
        notes["pseudo-linear"] = (
            f"at sigma_b2 = {', '.join(f'{b:.4g}' for b in rows)}, q* = 0: the variance collapses to 0 and the "
            "activation acts as a linear map; correlations freeze at their input values instead of converging, "
            "so no finite xi_c describes the network (trainable depth NaN there)")
    return notes


def _cmd_phase(args) -> int:
    import numpy as np

    from ._cli_text import PHASE_ORDER
    from .diagram import phase_diagram

    sw = parse_grid(args.sigma_w2, "--sigma-w2")
    sb = parse_grid(args.sigma_b2, "--sigma-b2")
    act = _activation(args)
    default = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in act.name) + "_phase"
    data_path, fig_path, kind = output_paths(args.output, default, not args.no_figure)
    for p in (data_path, fig_path):
        if p is not None:
            _check_writable(p)
    pd = phase_diagram(act, sw, sb, rho=args.rho, progress=_ProgressBar(f"{act.name} phase diagram"),
                       client=args.scheduler)
    pd.save(data_path)
    if fig_path is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, _ = pd.plot()
        _save_figure(fig, fig_path, kind)
        plt.close(fig)
    crit = pd.critical_line
    depth_near = pd.critical_trainable_depth(0.05)
    counts = {name: int(np.count_nonzero(pd.phase == name)) for name in PHASE_ORDER}
    notes = _phase_notes(pd, act)
    chaotic = counts["chaotic"] > 0
    ok = np.isfinite(crit)
    rows = np.unique(np.linspace(0, sb.size - 1, min(6, sb.size)).round().astype(int))
    words = [_depth_near_line_words(act, pd, i, depth_near) for i in rows]
    missing_lines, missing_data = explain_missing(act, [float(sb[i]) for i in rows if not ok[i]], pd.rho)
    if args.json:
        _dump_json({
            "activation": pd.activation, "rho": pd.rho, "data": data_path, "figure": fig_path,
            "figure_type": kind if fig_path else None, "shape": list(pd.shape), "phase_counts": counts,
            "notes": notes,
            "critical_line": {"sigma_b2": pd.sigma_b2, "sigma_w2": crit, "trainable_depth_at_1.05x": depth_near},
            "no_critical_point": missing_data,
            "n_reference": pd.n_reference,
        })
        return 0
    print(f"{pd.activation}: phase diagram on {sb.size} x {sw.size} points "
          f"(sigma_b2 {sb[0]:g}..{sb[-1]:g}, sigma_w2 {sw[0]:g}..{sw[-1]:g}, rho = {pd.rho:g})")
    print("  " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    shade = {"divergent": "grey", "pseudo-linear": "sand-coloured"}
    for name, text in notes.items():
        print(f"  {name}" + (f" ({shade[name]} in the figure)" if fig_path else "") + f": {text}")
    edge = "(order to chaos)" if chaotic else "(edge of the ordered phase)"
    if ok.any():
        if ok.sum() == 1:
            print(f"  critical line chi_1 = 1 {edge}: only at sigma_b2 = {sb[ok][0]:.4g}, sigma_w2 = {crit[ok][0]:.4g}")
        else:
            print(f"  critical line chi_1 = 1 {edge}: sigma_w2 = {crit[ok][0]:.4g} at sigma_b2 = {sb[ok][0]:.4g} ... "
                  f"{crit[ok][-1]:.4g} at sigma_b2 = {sb[ok][-1]:.4g}")
        print(f"    {'sigma_b2':>10} {'sigma_w2 crit':>14} {'trainable depth at 1.05x':>26}")
        for i, text in zip(rows, words, strict=True):
            print(f"    {sb[i]:>10.4g} {_fmt(float(crit[i])):>14} {text:>26}")
        if chaotic:
            print("  On the line itself the trainable depth diverges (xi_c = inf); 5% into the chaotic phase it is "
                  "the value above. Away from the line it falls fast: initialise on it.")
        elif counts["divergent"]:
            print("  There is no chaotic phase on this grid: past the critical line the variance diverges, so "
                  "initialise on the line or just below it, never above.")
        else:
            print("  There is no chaotic phase on this grid.")
    else:
        print("  no critical line (chi_1 = 1) on this grid")
    for line in missing_lines:
        print(f"  no critical point {line}")
    if pd.n_reference:
        print(f"  note: {pd.n_reference} points were computed by the slow per-point reference path")
    print(f"  data: {data_path}" + (f"   figure: {fig_path}" if fig_path else ""))
    return 0


def _cmd_critical(args) -> int:
    import numpy as np

    from . import analyze, q_star
    from ._cli_text import critical_value

    sb = parse_grid(args.sigma_b2, "--sigma-b2")
    act = _activation(args)
    sw = np.atleast_1d(critical_value(act, sb))
    qs = np.full(sb.size, np.nan)
    above = np.full(sb.size, "", dtype=object)
    ok = np.isfinite(sw)
    if ok.any():
        qs[ok] = np.atleast_1d(q_star(act, sw[ok], sb[ok]))
        above[ok] = np.atleast_1d(analyze(act, 1.05 * sw[ok], sb[ok]).phase)
    missing_lines, missing_data = explain_missing(act, [float(b) for b in sb[~ok]])
    if args.json:
        _dump_json({"activation": act.name, "sigma_b2": sb, "sigma_w2": sw, "q_star": qs,
                    "phase_at_1.05x": [a or None for a in above],
                    "no_critical_point": missing_data})
        return 0
    print(f"critical line chi_1 = 1 of {act.name} (variances; smaller sigma_w2 is ordered; the last column is "
          "the phase at 1.05 x sigma_w2)")
    print(f"  {'sigma_b2':>10} {'sigma_w2':>14} {'q*':>14}  {'at 1.05x':<12}")
    for b, w, q, a in zip(sb, sw, qs, above, strict=True):
        print(f"  {b:>10.4g} {_fmt(float(w)):>14} {_fmt(float(q)):>14}  {a or '-':<12}")
    for line in missing_lines:
        print(f"  nan {line}")
    return 0


def explain_missing(act, sigma_b2s, rho=1.0):
    """Lines (and JSON rows) saying why there is no critical sigma_w2 at these sigma_b2.

    Bias variances without any chi_1 = 1 point share one line; the others get one each.
    """
    from ._cli_text import critical_points_explained, no_critical_point_words

    explained = [critical_points_explained(act, b, rho) for b in sigma_b2s]
    data = [{"sigma_b2": b, "text": t, "critical_points": d} for b, (t, d) in zip(sigma_b2s, explained, strict=True)]
    lines = []
    none = [b for b, (_, d) in zip(sigma_b2s, explained, strict=True) if not d]
    if none:
        listed = ", ".join(f"{b:.4g}" for b in none[:4]) + (f", ... {none[-1]:.4g}" if len(none) > 4 else "")
        lines.append(f"at sigma_b2 = {listed}: {no_critical_point_words(act, rho, none[0] > 0)}")
    lines += [text for text, d in explained if d]
    return lines, data


def _advice(act, point, gg, args) -> str:
    """What to change, naming the critical sigma_w2 at this sigma_b2 where there is one."""
    from ._cli_text import critical_points_explained, critical_value, variance_growth

    sb = args.sigma_b2
    if args.residual:
        if gg.regime == "exploding":
            return ("the residual branches add sigma_v2 sigma_w2 E[phi'^2] per layer, so the squared gradient norm "
                    f"grows (sub-exponentially here); to slow it, lower sigma_v2 (now {args.sigma_v2:g}) or "
                    "sigma_w2, or use fewer layers")
        return ("the squared gradient norm keeps its size over this depth: a good initialisation for this "
                "residual network")
    crit = critical_value(act, sb, args.rho)
    target = f"the critical sigma_w2 = {crit:.4g} (chi_1 = 1 at sigma_b2 = {sb:g})" if math.isfinite(crit) else None
    if point.phase == "divergent":
        if target:
            return f"the variance diverges at this sigma_w2: lower it below {target}"
        g = variance_growth(act, 1.0, args.rho)
        if g:
            return (f"the variance diverges at this sigma_w2: lower it below {1.0 / g:.4g}, where a large variance no "
                    "longer grows from layer to layer")
        return "the variance diverges at this sigma_w2: lower it until the variance stays finite"
    if point.phase == "pseudo-linear":
        if target:
            return (f"the signal dies out layer by layer; raise sigma_w2 towards {target}, or give the biases "
                    "a variance (sigma_b2 > 0)")
        return ("the signal dies out layer by layer; give the biases a variance (sigma_b2 > 0) and pick sigma_w2 "
                f"on the critical line there (meanfield critical {act.name})")
    if gg.regime == "stable":
        near = f", next to {target}" if target and abs(args.sigma_w2 / crit - 1) < 0.05 else ""
        return f"the squared gradient norm keeps its size over this depth: a good initialisation{near}"
    verb, way = ("explodes", "lower") if gg.regime == "exploding" else ("vanishes", "raise")
    if target:
        return f"the squared gradient norm {verb}; {way} sigma_w2 towards {target}, or use fewer layers"
    why, _ = critical_points_explained(act, sb, args.rho)
    return f"the squared gradient norm {verb}; use fewer layers (there is no critical sigma_w2 to move to {why})"


def _cmd_depth(args) -> int:
    from . import analyze
    from ._cli_text import phase_note, reach_words
    from .dynamics import gradient_growth

    if not (math.isfinite(args.factor) and args.factor > 1):
        raise ValueError(f"--factor must be a number above 1 (the change of the squared gradient norm to report), "
                         f"got {args.factor:g}")
    if args.depth is not None and args.depth < 1:
        raise ValueError(f"--depth must be a positive number of layers, got {args.depth}")
    act = _activation(args)
    with _quiet_divergence():
        point = analyze(act, args.sigma_w2, args.sigma_b2, rho=args.rho)
        td = float(point.trainable_depth)
        depth = args.depth
        if depth is None:
            depth = 100 if not math.isfinite(td) else int(min(max(math.ceil(td), 1), 1000))
        gg = gradient_growth(act, depth, args.sigma_w2, args.sigma_b2, rho=args.rho,
                             residual=args.residual, sigma_v2=args.sigma_v2, sigma_a2=args.sigma_a2,
                             q0=None if not (args.residual or point.phase == "divergent") else 1.0)
    note = phase_note(act, point)
    gradient = gg.summary() + (" (residual network)" if args.residual else "")
    reach = reach_words(gg, args.factor)
    advice = _advice(act, point, gg, args)
    width_words, width_data = _width_verdict(act, depth, args) if args.width is not None else (None, None)
    if args.json:
        growing = gg.factor >= 1
        _dump_json({
            "activation": point.activation, "sigma_w2": args.sigma_w2, "sigma_b2": args.sigma_b2, "rho": args.rho,
            "phase": point.phase, "chi_1": point.chi_1, "xi_c": point.xi_c, "trainable_depth": td,
            "residual": args.residual, "depth": depth, "gradient_factor_per_layer": gg.factor,
            "gradient_ratio_over_depth": gg.overall, "regime": gg.regime,
            "depth_for_factor": {"factor": args.factor,
                                 "layers": gg.depth_for(args.factor if growing else 1.0 / args.factor)},
            "summary": gradient, "note": note, "advice": advice, "finite_width": width_data,
        })
        return 0
    print(f"{point.activation} at sigma_w2 = {args.sigma_w2:g}, sigma_b2 = {args.sigma_b2:g}"
          + (f", rho = {args.rho:g}" if args.rho != 1 else "") + f": {point.phase} phase (chi_1 = {point.chi_1:.4g})")
    if note:
        print(f"  {note}")
    if math.isfinite(td):
        plain = " of the plain (non-residual) network" if args.residual else ""
        print(f"  trainable depth{plain} ~ {td:.0f} layers (6 xi_c; correlations between inputs are lost over "
              f"xi_c = {float(point.xi_c):.3g} layers)")
    elif point.phase == "critical" or (point.phase not in ("divergent", "pseudo-linear") and td == math.inf):
        print("  trainable depth: unbounded in mean-field theory (xi_c = inf: on the critical line)")
    print(f"  {gradient}")
    print(f"  {reach}")
    if width_words:
        print(f"  {width_words}")
    print(f"  advice: {advice}")
    return 0


def _width_verdict(act, depth, args):
    """Words and data on where depth/width, not xi_c, limits the depth (Roberts, Yaida & Hanin 2021)."""
    import numpy as np

    from .finite_width import finite_width

    if args.width < 1:
        raise ValueError(f"--width must be a positive number of units, got {args.width}")
    if args.residual or args.rho != 1:
        raise ValueError("--width: the finite-width theory covers plain networks without dropout")
    fw = finite_width(act, depth, args.width, args.sigma_w2, args.sigma_b2, q0=1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.sqrt(fw.var_G) / fw.K  # network-to-network, relative
        off = np.maximum(spread, np.abs(fw.mean_q / fw.K - 1.0))
    bad = np.flatnonzero(~(off <= 0.05))
    holds = int(bad[0]) if bad.size else depth
    s_last = float(spread[-1])
    words = (f"at width {args.width} and depth {depth} the layer variance fluctuates by +-{100 * s_last:.2g}% from "
             f"network to network; the infinite-width prediction holds to 5% up to depth ~{holds}"
             + (" (all of it)" if holds == depth else " (depth/width, not xi_c, limits it there)"))
    return words, {"width": args.width, "relative_spread_last_layer": s_last, "holds_to_5pct_up_to_depth": holds,
                   "K": fw.K, "mean_q": fw.mean_q, "var_G": fw.var_G}


def _cmd_gradients(args) -> int:
    from ._cli_gradients import cmd_gradients

    return cmd_gradients(args, _dump_json, _activation)


def _cmd_spectrum(args) -> int:
    from ._cli_spectrum import cmd_spectrum

    return cmd_spectrum(args, _dump_json, _activation)


def _add_common(p, *, json_help="machine-readable output"):
    p.add_argument("--param", action="append", default=None, metavar="NAME=VALUE",
                   help="activation parameter, repeatable, e.g. --param alpha=0.2 for leaky_relu "
                        "(see 'meanfield activations')")
    p.add_argument("--json", action="store_true", help=json_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meanfield",
        description="Mean-field theory of deep random networks for any nonlinearity (variances, not std devs).",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"meanfield {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("point", help="every mean-field quantity at one (sigma_w2, sigma_b2)",
                       description="q*, c*, chi_1, chi_c, depth scales, trainable depth and phase at one point.")
    p.add_argument("activation", nargs="?", default="tanh",
                   help="table name (see 'meanfield activations') or an expression in x (default: tanh)")
    p.add_argument("--sigma-w2", type=float, default=1.76, help="weight variance (default 1.76)")
    p.add_argument("--sigma-b2", type=float, default=0.05, help="bias variance (default 0.05)")
    p.add_argument("--rho", type=float, default=1.0, help="dropout keep probability (default 1)")
    p.add_argument("--norm", choices=("none", "batch", "layer"), default="none",
                   help="normalisation before phi (default none)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size B > 3 for --norm batch")
    _add_common(p)
    p.set_defaults(func=_cmd_point)

    ph = sub.add_parser(
        "phase", help="phase diagram over a (sigma_w2, sigma_b2) grid: figure, data, critical line",
        description="Compute q*, c*, chi_1, chi_c, depth scales, trainable depth and the phase on a grid; "
                    "write a figure and the data (.npz), and report where the critical line lies and how "
                    "deep a network can train along it.")
    ph.add_argument("activation", nargs="?", default="tanh", help="activation (default: tanh)")
    ph.add_argument("--sigma-w2", default="0.5:5:200", metavar="GRID",
                    help="weight-variance grid: START:STOP:N or a comma list (default 0.5:5:200)")
    ph.add_argument("--sigma-b2", default="0:2:200", metavar="GRID",
                    help="bias-variance grid: START:STOP:N or a comma list (default 0:2:200)")
    ph.add_argument("--rho", type=float, default=1.0, help="dropout keep probability (default 1)")
    ph.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786): rows computed on its cluster")
    ph.add_argument("--output", default=None, metavar="PREFIX[.png|.pdf|.svg]",
                    help="write PREFIX.npz and the figure PREFIX.png; a name ending in .pdf or .svg (vector) "
                         "or .png picks the figure type (default: <activation>_phase)")
    ph.add_argument("--no-figure", action="store_true", help="write only the data")
    _add_common(ph, json_help="machine-readable summary on stdout")
    ph.set_defaults(func=_cmd_phase)

    cr = sub.add_parser("critical", help="the critical line chi_1 = 1 as a table",
                        description="sigma_w2 on the order-to-chaos line chi_1 = 1 for each sigma_b2, "
                                    "with q* there (Schoenholz et al. 2017), and where there is none, why.")
    cr.add_argument("activation", help="activation (table name or expression in x)")
    cr.add_argument("--sigma-b2", default="0:2:11", metavar="GRID",
                    help="bias variances: START:STOP:N or a comma list (default 0:2:11)")
    _add_common(cr)
    cr.set_defaults(func=_cmd_critical)

    dp = sub.add_parser("depth", help="trainable depth and gradient explosion/vanishing at one point",
                        description="How deep a network can train at (sigma_w2, sigma_b2), and how fast "
                                    "the squared gradient norm grows or shrinks (Schoenholz et al. 2017; Yang & "
                                    "Schoenholz 2017 for --residual).")
    dp.add_argument("activation", nargs="?", default="tanh", help="activation (default: tanh)")
    dp.add_argument("--sigma-w2", type=float, default=1.76, help="weight variance (default 1.76)")
    dp.add_argument("--sigma-b2", type=float, default=0.05, help="bias variance (default 0.05)")
    dp.add_argument("--rho", type=float, default=1.0, help="dropout keep probability (default 1)")
    dp.add_argument("--depth", type=int, default=None,
                    help="network depth in layers (default: the trainable depth, at most 1000)")
    dp.add_argument("--factor", type=float, default=1e3,
                    help="report the depth at which the squared gradient norm has changed by this factor, "
                         "> 1 (default 1000)")
    dp.add_argument("--residual", action="store_true", help="residual network x + V phi(W x + b) + a")
    dp.add_argument("--width", type=int, default=None,
                    help="also say how far the finite-width network (this many units per layer) follows the theory")
    dp.add_argument("--sigma-v2", type=float, default=1.0, help="residual branch weight variance (default 1)")
    dp.add_argument("--sigma-a2", type=float, default=0.0, help="residual branch bias variance (default 0)")
    _add_common(dp)
    dp.set_defaults(func=_cmd_depth)

    from ._cli_gradients import add_parser as add_gradients

    add_gradients(sub, _add_common, _cmd_gradients)

    from ._cli_spectrum import add_parser as add_spectrum

    add_spectrum(sub, _add_common, _cmd_spectrum)

    from ._cli_trainability import add_parser as add_trainability

    add_trainability(sub, _add_common, dict(activation=_activation, dump_json=_dump_json, progress=_ProgressBar,
                                            save_figure=_save_figure, check_writable=_check_writable))
    from ._cli_kernel import add_parser as add_kernel

    add_kernel(sub, _add_common, _activation)

    a = sub.add_parser("activations", help="list the activation table",
                       description="The named activations, their formulas and parameters (set them with --param).")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=_cmd_activations)
    return parser


def _cmd_activations(args) -> int:
    from .activations import describe_table

    table = describe_table()
    if args.json:
        _dump_json([{"name": name, "description": desc, "parameters": params} for name, desc, params in table])
        return 0
    for name, desc, params in table:
        extra = f"  (parameters: {', '.join(f'{k}={v}' for k, v in params.items())})" if params else ""
        print(f"{name:<12} {desc}{extra}")
    return 0


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    """Run the ``meanfield`` command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like an exception, so a file being written is removed, not left half-done
        signal.signal(signal.SIGTERM, _terminated)
    from ._cli_text import leading_minus_as_values

    parser = build_parser()
    args = parser.parse_args(leading_minus_as_values(sys.argv[1:] if argv is None else list(argv)))
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError, ImportError) as err:  # ImportError: an optional extra is missing
        print(f"meanfield: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: no traceback, the shell's exit code for SIGINT
        print("meanfield: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
