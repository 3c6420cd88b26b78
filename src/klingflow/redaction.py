"""Redaction, one home: the one mask users see where a secret was, and the functions that put it.

Secrets (the PiAPI key, webhook secrets, tokens in a workflow's inputs) must never reach a
log, an error message, the run log, a page or DBOS's checkpoints. Every place that hides one
uses `MASK`, so a user learns one sign for "a secret was here" (`***`, also what SQLAlchemy
shows for a database URL's password). Imports nothing of ours, so the client (`piapi`), the
emulator, the workflows, the service and the CLI can all use it.

What is kept is also made *storable* on the way (`storable`): the same walk over a value
masks its secrets and replaces the characters no database or JSON encoder takes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any, Final

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "hold_run_secrets",
    "is_secret_name",
    "mask_secrets",
    "redact",
    "redact_values",
    "run_secrets",
    "storable",
]

MASK: Final = "***"
"""What stands where a secret was, everywhere klingflow shows or keeps a value."""

MIN_SECRET_LENGTH: Final = 4
"""Shorter values are not searched for in other text: masking every `a` would ruin it."""

_SCALARS: Final = frozenset({int, float, bool, type(None)})
"""Types `redact_values` returns as they are, found without an `isinstance` walk."""

_run_secrets: ContextVar[tuple[str, ...]] = ContextVar("klingflow_run_secrets", default=())

_SECRET_NAME = re.compile(
    r"(secret|token|password|passwd|authorization|cookie|(^|[-_])key$|api[-_]?key)", re.I
)


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a field or header called `name` holds a secret (its value is masked whole).
    Cached: the run log asks it of the same few field names for every value it stores."""
    return _SECRET_NAME.search(name) is not None


def run_secrets() -> tuple[str, ...]:
    """The secret input values of the run executing in this task (`hold_run_secrets`)."""
    return _run_secrets.get()


def hold_run_secrets(values: Iterable[str]) -> None:
    """Make `values` known secrets for the rest of this task and the tasks it starts: the
    run log's writes and DBOS's step outputs made inside a run mask them (a context
    variable, so two runs in one process never see each other's)."""
    _run_secrets.set(tuple(v for v in values if len(v) >= MIN_SECRET_LENGTH))


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each known secret replaced by `MASK` (empty ones skipped)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def storable(text: str) -> str:
    """`text` as every database and JSON encoder takes it: a lone surrogate becomes `?` and
    NUL becomes U+FFFD (an answer from an HTTP endpoint or a chat model may hold either;
    stored raw, it would break Postgres writes and every later listing)."""
    if text.isascii() and "\x00" not in text:
        return text
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def redact_values(value: Any, secrets: tuple[str, ...]) -> Any:
    """A copy of `value` with known secret strings masked wherever they appear, and every
    string (keys too) made storable."""
    kind = type(value)
    if kind is str:  # the commonest first: every stored value is a walk over a few of each
        return storable(mask_secrets(value, secrets))
    if kind in _SCALARS:
        return value
    if kind is dict or isinstance(value, Mapping):
        return {
            storable(k) if isinstance(k, str) else k: redact_values(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_values(v, secrets) for v in value]
    if isinstance(value, str):
        return storable(mask_secrets(value, secrets))
    return value


def redact(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """A copy of `value` with secret-looking keys' values and known secret strings masked."""
    if type(value) is dict or isinstance(value, Mapping):
        return {
            storable(k) if isinstance(k, str) else k: (
                MASK if is_secret_name(str(k)) and v else redact(v, secrets)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return redact_values(value, secrets)
