"""Which pip extra brings which part of klingflow, and the message when one is missing.

`pip install klingflow` is the client alone (httpx, pydantic, pydantic-settings). The rest
comes by role: `[cli]` the command, `[workflows]` durable runs (DBOS, SQLAlchemy), `[server]`
the web service, `[emulator]` the local PiAPI (PyAV, numpy, Pillow), `[all]` everything. This
module imports nothing beyond the standard library, so it works in the smallest install.
"""

from __future__ import annotations

__all__ = ["MISSING_EXTRA_EXIT_CODE", "extra_for_module", "install_hint", "modules_of_extra"]

MISSING_EXTRA_EXIT_CODE = 19
"""Exit code of a command whose extra is not installed (docs/client.md)."""

# Top-level module -> the extra that installs it (the first extra that lists it).
_EXTRA_OF_MODULE = {
    "typer": "cli",
    "rich": "cli",
    "click": "cli",
    "yaml": "cli",
    "dbos": "workflows",
    "sqlalchemy": "workflows",
    "croniter": "workflows",
    "jinja2": "workflows",
    "fastapi": "server",
    "starlette": "server",
    "uvicorn": "server",
    "itsdangerous": "server",
    "multipart": "server",
    "python_multipart": "server",
    "av": "emulator",
    "numpy": "emulator",
    "PIL": "emulator",
}


def extra_for_module(module: str | None, *, default: str = "all") -> str:
    """The extra that installs `module` (a dotted name is looked up by its top level)."""
    top = (module or "").partition(".")[0]
    return _EXTRA_OF_MODULE.get(top, default)


def modules_of_extra(extra: str) -> list[str]:
    """The top-level modules `extra` brings (every one for `all`)."""
    return [m for m, e in _EXTRA_OF_MODULE.items() if extra in (e, "all")]


def install_hint(*, feature: str, extra: str, module: str | None = None) -> str:
    """`klingflow run needs the [workflows] extra (no module named 'dbos'): pip install ...`."""
    because = f" (no module named {module!r})" if module else ""
    return (
        f"{feature} needs the [{extra}] extra{because}: "
        f"pip install 'klingflow[{extra}]' (or 'klingflow[all]')"
    )
