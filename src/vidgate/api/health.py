"""Liveness: answers without authentication so load balancers can probe it."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    version: str


@router.get("/health", response_model=Health)
async def health() -> Health:
    from vidgate import __version__

    return Health(status="ok", version=__version__)
