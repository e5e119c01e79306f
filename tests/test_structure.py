"""The package's house rules, checked on its source: small modules, no private name crossing a module."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "meanfield"
MODULES = sorted(PACKAGE.glob("*.py"))
MAX_LINES = 700


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_module_is_small(path):
    n = len(path.read_text().splitlines())
    assert n < MAX_LINES, f"{path.name} has {n} lines (limit {MAX_LINES}): split it"


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_no_private_name_crosses_a_module(path):
    """``from .x import _name`` and ``x._name`` on another package module are not allowed.

    A private *module* (``meanfield/_engine.py``) is how an engine stays private; its names are
    plain, and only its public wrapper imports it.
    """
    tree = ast.parse(path.read_text())
    imported_modules = set()
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level >= 1 or (node.module or "").startswith("meanfield")):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and not _is_module(node, alias.name):
                    bad.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}")
                elif _is_module(node, alias.name):
                    imported_modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules and node.attr.startswith("_") and not node.attr.startswith("__")):
            bad.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, f"{path.name} reaches into another module's private names: {bad}"


def _is_module(node, name):
    """Whether ``from <node.module> import name`` imports a module of the package."""
    base = PACKAGE if node.level <= 1 else PACKAGE.parent
    parts = [p for p in (node.module or "").split(".") if p and p != "meanfield"]
    target = base.joinpath(*parts, name)
    return target.with_suffix(".py").exists() or (target / "__init__.py").exists()
