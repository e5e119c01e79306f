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
        "chi_1": "chi_1 (slope of the c-map at c = 1)",
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
    except (ValueError, TypeError, OSError) as err:
        print(f"meanfield: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
