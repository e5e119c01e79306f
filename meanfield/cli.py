"""The ``meanfield`` command: a thin layer over the public API."""

from __future__ import annotations

import argparse
import json
import math
import sys

__all__ = ["main"]


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        if math.isnan(value):
            return "nan"
        return f"{value:.10g}"
    return str(value)


def _cmd_point(args) -> int:
    from . import analyze

    point = analyze(args.activation, args.sigma_w2, args.sigma_b2, rho=args.rho)
    data = point.as_dict()
    if args.json:
        json.dump({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}
                  | {"nonfinite": {k: _fmt(v) for k, v in data.items()
                                   if isinstance(v, float) and not math.isfinite(v)}},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
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
    print(f"{point.activation}: sigma_w2 = {_fmt(point.sigma_w2)}, sigma_b2 = {_fmt(point.sigma_b2)}, "
          f"rho = {_fmt(point.rho)}")
    for key, label in labels.items():
        print(f"  {label:<48} {_fmt(data[key])}")
    return 0


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


def _save_figure(fig, path: str):
    """Save atomically: a temporary file in the same directory, then os.replace."""
    import os

    from ._io import atomic_write

    ext = os.path.splitext(path)[1].lstrip(".") or "png"
    atomic_write(path, lambda fh: fig.savefig(fh, format=ext, dpi=150), prefix=".figure-")


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


def _cmd_phase(args) -> int:
    import numpy as np

    from .diagram import phase_diagram

    sw = parse_grid(args.sigma_w2, "--sigma-w2")
    sb = parse_grid(args.sigma_b2, "--sigma-b2")
    from .activations import activation

    act = activation(args.activation)
    prefix = args.output or "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in act.name) + "_phase"
    data_path = prefix + ".npz"
    fig_path = None if args.no_figure else prefix + ".png"
    for p in (data_path, fig_path):
        if p is not None:
            _check_writable(p)
    pd = phase_diagram(act, sw, sb, rho=args.rho, progress=_ProgressBar(f"{act.name} phase diagram"))
    pd.save(data_path)
    if fig_path is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, _ = pd.plot()
        _save_figure(fig, fig_path)
        plt.close(fig)
    crit = pd.critical_line
    depth_near = pd.critical_trainable_depth(0.05)
    counts = {name: int(np.count_nonzero(pd.phase == name)) for name in ("ordered", "chaotic", "critical", "divergent")}
    if args.json:
        _dump_json({
            "activation": pd.activation, "rho": pd.rho, "data": data_path, "figure": fig_path,
            "shape": list(pd.shape), "phase_counts": counts,
            "critical_line": {"sigma_b2": pd.sigma_b2, "sigma_w2": crit,
                              "trainable_depth_at_1.05x": depth_near},
            "n_reference": pd.n_reference,
        })
        return 0
    print(f"{pd.activation}: phase diagram on {sb.size} x {sw.size} points "
          f"(sigma_b2 {sb[0]:g}..{sb[-1]:g}, sigma_w2 {sw[0]:g}..{sw[-1]:g}, rho = {pd.rho:g})")
    print("  " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    ok = np.isfinite(crit)
    if ok.any():
        if ok.sum() == 1:
            print(f"  critical line chi_1 = 1 (order to chaos): only at sigma_b2 = {sb[ok][0]:g}, "
                  f"sigma_w2 = {crit[ok][0]:.4g}")
        else:
            print("  critical line chi_1 = 1 (order to chaos): sigma_w2 = "
                  f"{crit[ok][0]:.4g} at sigma_b2 = {sb[ok][0]:g} ... {crit[ok][-1]:.4g} at sigma_b2 = {sb[ok][-1]:g}")
        rows = np.unique(np.linspace(0, sb.size - 1, min(6, sb.size)).round().astype(int))
        print(f"    {'sigma_b2':>10} {'sigma_w2 crit':>14} {'trainable depth at 1.05x':>26}")
        for i in rows:
            d = depth_near[i]
            if np.isfinite(d):
                text = f"~{d:.0f} layers"
            elif not np.isfinite(crit[i]):
                text = "no critical point"
            elif not sw[0] <= 1.05 * crit[i] <= sw[-1]:
                text = "outside grid"
            else:
                text = "unbounded" if d == np.inf else "undefined"
            print(f"    {sb[i]:>10.4g} {_fmt(float(crit[i])):>14} {text:>26}")
        print("  On the line itself the trainable depth diverges (xi_c = inf); 5% into the chaotic phase "
              "it is the value above. Away from the line it falls fast: initialise on it.")
    else:
        print("  no critical line (chi_1 = 1) on this grid")
    if pd.n_reference:
        print(f"  note: {pd.n_reference} points were computed by the slow per-point reference path")
    print(f"  data: {data_path}" + (f"   figure: {fig_path}" if fig_path else ""))
    return 0


def _cmd_critical(args) -> int:
    import warnings

    import numpy as np

    from . import critical_sigma_w2, q_star

    sb = parse_grid(args.sigma_b2, "--sigma-b2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sw = np.atleast_1d(critical_sigma_w2(args.activation, sb))
    qs = np.full(sb.size, np.nan)
    ok = np.isfinite(sw)
    if ok.any():
        qs[ok] = np.atleast_1d(q_star(args.activation, sw[ok], sb[ok]))
    if args.json:
        _dump_json({"activation": args.activation, "sigma_b2": sb, "sigma_w2": sw, "q_star": qs})
        return 0
    print(f"critical line chi_1 = 1 of {args.activation} (variances; ordered for smaller sigma_w2, chaotic "
          "for larger)")
    print(f"  {'sigma_b2':>10} {'sigma_w2':>14} {'q*':>14}")
    for b, w, q in zip(sb, sw, qs, strict=True):
        print(f"  {b:>10.4g} {_fmt(float(w)):>14} {_fmt(float(q)):>14}")
    if not ok.all():
        print("  nan: no point with chi_1 = 1 at that sigma_b2 (e.g. relu: only sigma_b2 = 0, sigma_w2 = 2)")
    return 0


def _cmd_depth(args) -> int:
    from . import analyze
    from .dynamics import gradient_growth

    point = analyze(args.activation, args.sigma_w2, args.sigma_b2, rho=args.rho)
    td = float(point.trainable_depth)
    depth = args.depth
    if depth is None:
        depth = 100 if not math.isfinite(td) else int(min(max(math.ceil(td), 1), 1000))
    if depth < 1:
        raise ValueError(f"--depth must be a positive number of layers, got {depth}")
    gg = gradient_growth(args.activation, depth, args.sigma_w2, args.sigma_b2, rho=args.rho,
                         residual=args.residual, sigma_v2=args.sigma_v2, sigma_a2=args.sigma_a2,
                         q0=None if not (args.residual or point.phase == "divergent") else 1.0)
    reach = gg.depth_for(args.factor if gg.factor >= 1 else 1.0 / args.factor)
    if args.json:
        _dump_json({
            "activation": point.activation, "sigma_w2": args.sigma_w2, "sigma_b2": args.sigma_b2, "rho": args.rho,
            "phase": point.phase, "chi_1": point.chi_1, "xi_c": point.xi_c, "trainable_depth": td,
            "residual": args.residual, "depth": depth, "gradient_factor_per_layer": gg.factor,
            "gradient_ratio_over_depth": gg.overall, "regime": gg.regime,
            "depth_for_factor": {"factor": args.factor, "layers": reach}, "summary": gg.summary(),
        })
        return 0
    print(f"{point.activation} at sigma_w2 = {args.sigma_w2:g}, sigma_b2 = {args.sigma_b2:g}"
          + (f", rho = {args.rho:g}" if args.rho != 1 else "") + f": {point.phase} phase (chi_1 = {point.chi_1:.4g})")
    if math.isfinite(td):
        print(f"  trainable depth ~ {td:.0f} layers (6 xi_c; correlations between inputs are lost over "
              f"xi_c = {float(point.xi_c):.3g} layers)")
    elif point.phase == "divergent":
        print("  the pre-activation variance grows without bound (q* = inf); correlations follow the limiting "
              "map, whose depth scale is infinite, but the signal itself blows up: lower sigma_w2")
    else:
        print("  trainable depth: unbounded in mean-field theory (xi_c = inf: on the critical line)")
    print(f"  {gg.summary()}" + (" (residual network)" if args.residual else ""))
    word = "grow" if gg.factor >= 1 else "shrink"
    size = f"x{args.factor:g}" if gg.factor >= 1 else f"x1/{args.factor:g}"
    when = "never" if not math.isfinite(reach) else f"after {reach} layers"
    print(f"  gradients {word} by {size} {when}")
    if not args.residual:
        if gg.regime == "exploding":
            print("  advice: gradients explode; lower sigma_w2 towards the critical line, or use fewer layers")
        elif gg.regime == "vanishing":
            print("  advice: gradients vanish; raise sigma_w2 towards the critical line, or use fewer layers")
        else:
            print("  advice: gradients keep their size over this depth: a good initialisation")
    return 0


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
    p.add_argument("--json", action="store_true", help="machine-readable output")
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
    ph.add_argument("--output", default=None, metavar="PREFIX",
                    help="write PREFIX.png and PREFIX.npz (default: <activation>_phase)")
    ph.add_argument("--no-figure", action="store_true", help="write only the data")
    ph.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    ph.set_defaults(func=_cmd_phase)

    cr = sub.add_parser("critical", help="the critical line chi_1 = 1 as a table",
                        description="sigma_w2 on the order-to-chaos line chi_1 = 1 for each sigma_b2, "
                                    "with q* there (Schoenholz et al. 2017).")
    cr.add_argument("activation", help="activation (table name or expression in x)")
    cr.add_argument("--sigma-b2", default="0:2:11", metavar="GRID",
                    help="bias variances: START:STOP:N or a comma list (default 0:2:11)")
    cr.add_argument("--json", action="store_true", help="machine-readable output")
    cr.set_defaults(func=_cmd_critical)

    dp = sub.add_parser("depth", help="trainable depth and gradient explosion/vanishing at one point",
                        description="How deep a network can train at (sigma_w2, sigma_b2), and how fast "
                                    "gradients grow or shrink (Schoenholz et al. 2017; Yang & Schoenholz "
                                    "2017 for --residual).")
    dp.add_argument("activation", nargs="?", default="tanh", help="activation (default: tanh)")
    dp.add_argument("--sigma-w2", type=float, default=1.76, help="weight variance (default 1.76)")
    dp.add_argument("--sigma-b2", type=float, default=0.05, help="bias variance (default 0.05)")
    dp.add_argument("--rho", type=float, default=1.0, help="dropout keep probability (default 1)")
    dp.add_argument("--depth", type=int, default=None,
                    help="network depth in layers (default: the trainable depth, at most 1000)")
    dp.add_argument("--factor", type=float, default=1e3,
                    help="report the depth at which gradients change by this factor (default 1000)")
    dp.add_argument("--residual", action="store_true", help="residual network x + V phi(W x + b) + a")
    dp.add_argument("--sigma-v2", type=float, default=1.0, help="residual branch weight variance (default 1)")
    dp.add_argument("--sigma-a2", type=float, default=0.0, help="residual branch bias variance (default 0)")
    dp.add_argument("--json", action="store_true", help="machine-readable output")
    dp.set_defaults(func=_cmd_depth)

    a = sub.add_parser("activations", help="list the activation table")
    a.set_defaults(func=_cmd_activations)
    return parser


def _cmd_activations(args) -> int:
    from .activations import describe_table

    for name, desc, params in describe_table():
        extra = f"  (parameters: {', '.join(f'{k}={v}' for k, v in params.items())})" if params else ""
        print(f"{name:<12} {desc}{extra}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError) as err:
        print(f"meanfield: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
