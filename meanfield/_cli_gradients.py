"""The ``meanfield gradients`` command: which architectures explode gradients, and what would help."""

from __future__ import annotations

import math


def _rows(depth: int, every: int | None) -> list[int]:
    """Vector indices to print: every ``every`` layers, or about ten rows, always 0 and depth."""
    step = every or max(1, round(depth / 10))
    rows = list(range(0, depth + 1, step))
    return rows if rows[-1] == depth else rows + [depth]


def advice(act, args, walk) -> str:
    """What the per-layer factor means for this architecture and what would change it."""
    from .dynamics import format_factor
    from .expectations import expectation

    first = walk.layers[0]
    f = float(walk.factor[-1])
    if first.kind == "batch_norm":
        from .batchnorm import lambda_G

        B = first.batch_size
        var = float(expectation(act, "phi2", 1.0)) - float(expectation(act, "cov", 1.0, 1.0, c=0.0))
        big = float(expectation(act, "dphi2", 1.0)) / var if var > 0 else math.inf
        smaller = f" (B = {B // 2}: x{format_factor(float(lambda_G(act, B // 2)))})" if B // 2 > 3 else ""
        return (f"batch norm causes this explosion whatever sigma_w2 and sigma_b2 (lambda_G depends only on phi and "
                f"B; Yang et al. 2019). A smaller batch makes it worse{smaller}; a larger one helps only down to "
                f"x{format_factor(big)} (B -> inf: E[phi'^2]/Var phi >= 1); an activation closer to linear "
                f"lowers it (linear: x{format_factor((B - 2) / (B - 3))}); residual connections dilute it.")
    if first.kind == "layer_norm":
        return ("layer norm pins the variance, so sigma_w2 cannot move the network to the edge of chaos: the factor "
                f"is sigma_w2 E[phi'(z)^2] / q* (x{format_factor(f)}); an activation closer to linear, a larger "
                "sigma_b2 (which raises q*) or residual connections (which dilute it) make it smaller.")
    if first.kind == "residual":
        eff = walk.effective_depth
        eff_txt = (f"; the network is effectively {eff:.3g} branch layers deep (Philipp et al. 2018)"
                   if math.isfinite(eff) else "")
        return ("each skip connection dilutes its branch: a block's GSC^2 = (k^2 + r^2)/(k^2 + 1), with k^2 the "
                f"skip-to-branch power ratio (k^2 = {walk.k2[-1]:.3g} at the last block){eff_txt}. "
                "A smaller sigma_v2 dilutes more.")
    if f > 1:
        return ("a dense network explodes gradients in the chaotic phase (chi_1 > 1): lower sigma_w2 towards the "
                "critical line chi_1 = 1 ('meanfield critical'), or add residual connections.")
    if f < 1:
        return ("gradients vanish in the ordered phase (chi_1 < 1): raise sigma_w2 towards the critical line "
                "chi_1 = 1 ('meanfield critical').")
    return "the network is on the critical line: gradients keep their scale."


def cmd_gradients(args, dump_json, activation_of) -> int:
    """Print the per-layer gradient factor, GSC over depth and what would help."""
    from .architecture import describe, network
    from .dynamics import format_factor
    from .gradients import gradient_scales
    from .layers import rule

    if args.depth < 1:
        raise ValueError(f"--depth must be a positive number of layers, got {args.depth}")
    if args.every is not None and args.every < 1:
        raise ValueError(f"--every must be a positive number of layers, got {args.every}")
    act = activation_of(args)
    norm = None if args.norm == "none" else args.norm
    net = network(act, args.depth, sigma_w2=args.sigma_w2, sigma_b2=args.sigma_b2, norm=norm,
                  batch_size=args.batch_size, residual=args.residual, sigma_v2=args.sigma_v2,
                  sigma_a2=args.sigma_a2)
    rule(net[0])  # a clear error (e.g. B <= 3) before any work
    walk = gradient_scales(net, args.q0, 0.0)
    help_text = advice(act, args, walk)
    rows = _rows(args.depth, args.every)
    if args.json:
        dump_json({
            "architecture": describe(net), "activation": act.name, "sigma_w2": args.sigma_w2,
            "sigma_b2": args.sigma_b2, "norm": norm, "batch_size": args.batch_size, "residual": args.residual,
            "depth": args.depth, "q0": args.q0, "gradient_factor_per_layer": walk.factor.tolist(),
            "gsc": walk.gsc.tolist(), "gsc_layer": walk.gsc_layer.tolist(), "q": walk.q.tolist(),
            "c": walk.c.tolist(), "sign_diversity": walk.sign_diversity.tolist(),
            "nonlinearity": walk.nonlinearity.tolist(), "effective_depth": walk.effective_depth,
            "diverged_at": walk.diverged_at, "summary": walk.summary(), "advice": help_text,
        })
        return 0
    print(f"{describe(net)} at sigma_w2 = {args.sigma_w2:g}, sigma_b2 = {args.sigma_b2:g}"
          + (f", sigma_v2 = {args.sigma_v2:g}, sigma_a2 = {args.sigma_a2:g}" if args.residual else ""))
    name = {"batch_norm": "lambda_G, Yang et al. 2019", "layer_norm": "sigma_w2 E[phi'(z)^2] / q*",
            "residual": "1 + sigma_v2 chi_1", "dense": "chi_1"}[net[0].kind]
    if net[0].kind == "batch_norm":  # inside the network; the last layer, fed an i.i.d. gradient, differs
        from .batchnorm import lambda_G

        where, f = "inside the network", float(lambda_G(act, args.batch_size))
    else:
        where, f = "at the last layer", float(walk.factor[-1])
    print(f"  squared gradient norm per layer {where}: x{format_factor(f)} ({name})")
    print(f"  {walk.summary()}")
    print("   layer   GSC(L, l)          q       c  sign div.  nonlinear")
    for layer in rows:
        i = min(layer, args.depth - 1)
        print(f"  {layer:6d}  {walk.gsc[layer]:10.4g}  {walk.q[layer]:9.4g}  {walk.c[layer]:6.3f}"
              f"  {walk.sign_diversity[i]:9.3f}  {walk.nonlinearity[i]:9.3f}")
    print("  GSC(L, l) = ||dOutput/df_l||_qm ||f_l|| / ||Output|| (Philipp et al. 2018): how much more a relative "
          "change at layer l moves the output than one at the output itself; sign diversity and nonlinear are at "
          "the input of layer l + 1")
    print(f"  advice: {help_text}")
    return 0


def add_parser(sub, add_common, func) -> None:
    """Register ``meanfield gradients``."""
    g = sub.add_parser(
        "gradients", help="gradient explosion by architecture: batch norm, layer norm, residual, dense",
        description="The per-layer factor of the squared gradient norm, the gradient scale coefficient over depth "
                    "(Philipp et al. 2018), sign diversity and pseudo-linearity, for dense, batch-norm (Yang et al. "
                    "2019), layer-norm and residual networks, and what would help.")
    g.add_argument("activation", nargs="?", default="tanh", help="activation (default: tanh)")
    g.add_argument("--norm", choices=("none", "batch", "layer"), default="none",
                   help="normalisation before phi (default none)")
    g.add_argument("--batch-size", type=int, default=None, help="batch size B > 3 for --norm batch")
    g.add_argument("--residual", action="store_true", help="residual blocks x + V phi(W x + b) + a")
    g.add_argument("--depth", type=int, default=50, help="number of layers (default 50)")
    g.add_argument("--sigma-w2", type=float, default=1.0, help="weight variance (default 1)")
    g.add_argument("--sigma-b2", type=float, default=0.0, help="bias variance (default 0)")
    g.add_argument("--sigma-v2", type=float, default=1.0, help="residual branch weight variance (default 1)")
    g.add_argument("--sigma-a2", type=float, default=0.0, help="residual branch bias variance (default 0)")
    g.add_argument("--q0", type=float, default=1.0, help="per-unit variance of the inputs (default 1)")
    g.add_argument("--every", type=int, default=None, help="print every N-th layer (default: about ten rows)")
    add_common(g)
    g.set_defaults(func=func)
