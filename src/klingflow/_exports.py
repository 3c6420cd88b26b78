"""A package's names, each imported from its module on first use (PEP 562).

Importing a small part of klingflow (the pytest plugin, the run log's readers behind `runs
show`) must not pay, through a package's `__init__`, for the client's httpx or for jinja2.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: dict[str, Any],
    homes: Mapping[str, tuple[str, ...]],
    computed: Mapping[str, Callable[[], Any]] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for the package whose globals are `namespace`: a name of
    `homes` (module: names) is imported from its module, one of `computed` made by its
    function, the first time it is read; then it is a plain attribute."""
    home_of = {name: module for module, names in homes.items() for name in names}
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        if computed is not None and name in computed:
            value = computed[name]()
        elif name in home_of:
            value = getattr(importlib.import_module(home_of[name]), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ())})

    return __getattr__, __dir__
