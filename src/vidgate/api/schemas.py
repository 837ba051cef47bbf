"""The response envelope shared by every endpoint."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    """``{"success": true, "data": ..., "message": ...}``"""

    success: bool = True
    data: T | None = None
    message: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    """``{"success": false, "error": {"code": ..., "message": ...}}``"""

    success: bool = False
    error: ErrorBody
