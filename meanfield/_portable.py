"""Activations in a form that crosses process boundaries.

An :class:`~meanfield.activations.Activation` holds functions made by sympy's ``lambdify``,
which cannot be pickled.  A task sent to another process carries instead what rebuilds it: the
table name and parameters, the expression, or the user's (module-level) callables.  The rebuilt
activation has the same expression, hence the same compiled functions and the same numbers.
"""

from __future__ import annotations

import pickle

from .activations import Activation, activation


def portable(act: Activation) -> tuple:
    """A picklable description of ``act`` from which :func:`rebuild` makes the same activation.

    Raises a TypeError for an activation built from callables that cannot be pickled (lambdas,
    closures): those cannot run in another process.
    """
    table = act.params.get("table") if isinstance(act.params, dict) else None
    if table:
        return ("table", table, {k: v for k, v in act.params.items() if k != "table"})
    if act.expr is not None:
        try:  # an expression typed as text: parsed again the same way
            if activation(act.name).expr == act.expr:
                return ("text", act.name)
        except (ValueError, TypeError):
            pass
        return ("expr", act.expr)
    desc = ("callable", act.phi, act.dphi, act.d2phi, tuple(act.kinks))
    try:
        pickle.dumps(desc)
    except Exception as err:  # noqa: BLE001 - any pickling failure means the same thing here
        raise TypeError(f"activation {act.name!r} is a Python callable that cannot be sent to other processes "
                        f"({err}); use a module-level function, a table name or an expression") from None
    return desc


def rebuild(desc: tuple) -> Activation:
    """The activation described by :func:`portable`."""
    kind = desc[0]
    if kind == "table":
        return activation(desc[1], **desc[2])
    if kind in ("text", "expr"):
        return activation(desc[1])
    _, phi, dphi, d2phi, kinks = desc
    return activation(phi, dphi, d2phi, kinks=kinks)
