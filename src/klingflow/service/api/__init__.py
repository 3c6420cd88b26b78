"""JSON REST routers, one per noun, and the error the service raises itself."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel

__all__ = ["APIError", "ErrorPublic"]


class ErrorPublic(BaseModel):
    """Every error response: a stable name, a sentence for people, and evidence."""

    error: str
    message: str
    details: dict[str, Any] = {}


class APIError(HTTPException):
    """A refusal of the service itself (unknown run or workflow), rendered as `ErrorPublic`."""

    def __init__(self, status_code: int, error: str, message: str) -> None:
        super().__init__(status_code=status_code, detail=message)
        self.error = error
