"""`klingflow.__all__` and `klingflow.emulator.__all__` are the honest public surfaces."""

from __future__ import annotations

import types

import pytest

import klingflow
import klingflow.emulator


@pytest.mark.parametrize("package", [klingflow, klingflow.emulator])
def test_all_lists_exactly_the_public_names(package: types.ModuleType) -> None:
    """Every public non-module name of the package is in `__all__`, and nothing else is.

    `dir` rather than `vars`: `klingflow` loads its names on first use (PEP 562).
    """
    public = {
        name
        for name in dir(package)
        if not name.startswith("_") and not isinstance(getattr(package, name), types.ModuleType)
    }
    public.discard("annotations")
    assert set(package.__all__) - {"__version__"} == public
    assert len(package.__all__) == len(set(package.__all__))


def test_importing_klingflow_loads_no_client() -> None:
    """`import klingflow` (and so the pytest plugin) does not import httpx or pydantic."""
    import subprocess
    import sys

    code = "import sys, klingflow.testing; print(sorted({'httpx', 'pydantic'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_top_level_names_are_the_client_s_own_objects() -> None:
    """`klingflow.PiAPI` is `klingflow.piapi.PiAPI`, not a copy."""
    import klingflow.piapi

    assert klingflow.PiAPI is klingflow.piapi.PiAPI
    assert klingflow.__version__ != "0"
