"""GET /v1/me: whom the API key belongs to, so a client can check a key before it uploads
(the upload page does, as a user types it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from vidgate.api.deps import CurrentUser, ServicesDep
from vidgate.api.schemas import Envelope, ErrorEnvelope
from vidgate.auth import key_of

router = APIRouter(prefix="/v1", tags=["account"])
ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorEnvelope}}


class KeyView(BaseModel):
    """The key this request was sent with (never the key itself, never another key)."""

    id: str
    prefix: str
    label: str | None
    role: str = Field(description="viewer, uploader, reviewer or admin (the page shows what the key may do).")
    created_at: datetime


class MeView(BaseModel):
    user_id: str
    username: str
    key: KeyView | None


@router.get("/me", response_model=Envelope[MeView], responses=ERRORS, summary="The user of the API key sent")
def get_me(principal: CurrentUser, services: ServicesDep) -> Envelope[MeView]:
    info = key_of(services.db, principal)
    key = (
        KeyView(id=info.id, prefix=info.key_prefix, label=info.label, role=info.role.value, created_at=info.created_at)
        if info
        else None
    )
    return Envelope(data=MeView(user_id=principal.user_id, username=principal.username, key=key))
