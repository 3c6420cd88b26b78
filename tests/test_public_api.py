"""`klingflow.__all__` and `klingflow.emulator.__all__` are the honest public surfaces."""

from __future__ import annotations

import types

import pytest

import klingflow
import klingflow.emulator


@pytest.mark.parametrize("package", [klingflow, klingflow.emulator])
def test_all_lists_exactly_the_public_names(package: types.ModuleType) -> None:
    """Every public non-module name of the package is in `__all__`, and nothing else is."""
    public = {
        name
        for name, value in vars(package).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    public.discard("annotations")
    assert set(package.__all__) - {"__version__"} == public
    assert len(package.__all__) == len(set(package.__all__))


def test_top_level_names_are_the_client_s_own_objects() -> None:
    """`klingflow.PiAPI` is `klingflow.piapi.PiAPI`, not a copy."""
    import klingflow.piapi

    assert klingflow.PiAPI is klingflow.piapi.PiAPI
    assert klingflow.__version__ != "0"
