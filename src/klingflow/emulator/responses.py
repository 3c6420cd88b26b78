"""How the emulator answers: PiAPI's `{code, data, message}` envelope, and the two dialects.

PiAPI's task API and the OpenAI-compatible chat endpoint read the key from different headers
and word their errors in different shapes. A `Dialect` bundles both choices, so the request
pipeline and the faults it injects answer each client in the shape its real API would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from klingflow.emulator import chat

__all__ = ["OPENAI", "PIAPI", "Dialect", "ErrorRenderer", "envelope", "error", "status_phrase"]


def envelope(data: Any, *, status: int = 200, message: str = "success") -> JSONResponse:
    """A success in PiAPI's envelope: `code` repeats the HTTP status, as PiAPI's does."""
    return JSONResponse({"code": status, "data": data, "message": message}, status_code=status)


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error in PiAPI's envelope (`data: null`), which the client maps to its error tree."""
    return JSONResponse(
        {"code": status, "data": None, "message": message}, status_code=status, headers=headers
    )


ErrorRenderer = Callable[[int, str, Mapping[str, str] | None], Response]
"""(status, message, extra headers) -> the error response in one API's shape."""


@dataclass(frozen=True)
class Dialect:
    """How a family of API routes takes its key and words its errors."""

    read_key: Callable[[Request], str]
    error: ErrorRenderer
    unauthorized: str


PIAPI = Dialect(
    read_key=lambda request: request.headers.get("x-api-key", ""),
    error=error,
    unauthorized="Unauthorized: invalid or missing API key (x-api-key header)",
)
OPENAI = Dialect(
    read_key=chat.bearer_key,
    error=chat.openai_error,
    unauthorized=chat.UNAUTHORIZED,
)


def status_phrase(status: int) -> str:
    """`503` -> "service unavailable": the message of an injected error of that status."""
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:  # a code HTTP does not name, e.g. 599
        return "server error"
