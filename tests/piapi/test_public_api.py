"""`klingflow.piapi.__all__` is the honest, complete public surface of the client."""

from __future__ import annotations

import types

import klingflow.errors
import klingflow.piapi


def test_all_lists_exactly_the_public_names() -> None:
    """Every public non-module name in the package is in `__all__`, and nothing else is.

    `dir` rather than `vars`: the package loads its names on first use (PEP 562), and
    `getattr` loads each, so a name in `__all__` that is nowhere fails here.
    """
    public = {
        name
        for name in dir(klingflow.piapi)
        if not name.startswith("_")
        and not isinstance(getattr(klingflow.piapi, name), types.ModuleType)
    }
    assert set(klingflow.piapi.__all__) == public
    assert len(klingflow.piapi.__all__) == len(set(klingflow.piapi.__all__))


def test_client_errors_are_reexported_unchanged() -> None:
    """The errors the client raises are the very classes of klingflow.errors."""
    for name in ("PiAPIError", "SubmitUncertainError", "WaitTimeoutError", "DownloadError"):
        assert getattr(klingflow.piapi, name) is getattr(klingflow.errors, name)


def test_public_modules_declare_all() -> None:
    """Each public module of the client names its API in `__all__`."""
    from klingflow.piapi import downloads, kling, models, pricing, throttle, waiting, webhooks

    for module in (downloads, kling, models, pricing, throttle, waiting, webhooks):
        assert module.__all__, module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
