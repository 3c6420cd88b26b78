"""`klingflow.workflows.__all__` is the honest public surface; each module declares its own."""

from __future__ import annotations

import types

import klingflow.workflows
from klingflow.workflows import loading, spec, templates, validation


def test_all_lists_exactly_the_public_names() -> None:
    """Every public non-module name of the package is in `__all__`, and nothing else is.

    `dir` rather than `vars`: the package loads its names on first use (PEP 562).
    """
    public = {
        name
        for name in dir(klingflow.workflows)
        if not name.startswith("_")
        and not isinstance(getattr(klingflow.workflows, name), types.ModuleType)
    }
    assert set(klingflow.workflows.__all__) == public
    assert len(klingflow.workflows.__all__) == len(set(klingflow.workflows.__all__))


def test_modules_declare_all() -> None:
    """spec, loading, templates and validation name their API, and every name exists."""
    for module in (spec, loading, templates, validation):
        assert module.__all__, module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
