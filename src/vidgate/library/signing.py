"""Signed URLs for content, poster and storyboard: what a browser ``<video>`` or ``<img>`` can
fetch, since it cannot send the API key header.

A URL carries ``exp`` (Unix seconds) and ``sig``: HMAC-SHA256 over the video id, its owner's
user id and the expiry, keyed by ``LIBRARY_URL_SECRET``. It works for that video alone (any of
its three files, so a player can make as many Range requests as it likes), for its owner only
(a video id of another account never verifies), until ``exp``; the comparison is
constant-time. It grants reading and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from vidgate.config import LibrarySettings
from vidgate.errors import InvalidUrlSignature, UrlExpired

#: used when LIBRARY_URL_SECRET is unset: this process's URLs verify only in this process
_PROCESS_SECRET = secrets.token_bytes(32)
#: the files a signature opens
RESOURCES = ("content", "poster.jpg", "storyboard.jpg", "storyboard.json")


class SignedUrls(BaseModel):
    content: str = Field(description="The original bytes (Range works), for a <video> src.")
    poster: str
    storyboard: str = Field(description="The storyboard sprite.")
    storyboard_index: str = Field(description="storyboard.json; its url is signed the same way.")
    expires_at: datetime


class UrlSigner:
    def __init__(self, secret: bytes, ttl_seconds: float) -> None:
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)  # copied per signature: the key is set up once
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_settings(cls, settings: LibrarySettings) -> UrlSigner:
        secret = settings.url_secret.get_secret_value().encode() if settings.url_secret else _PROCESS_SECRET
        return cls(secret, settings.url_ttl_seconds)

    def signature(self, video_id: str, user_id: str, expires: int) -> str:
        keyed = self._keyed.copy()
        keyed.update(f"vidgate-url-v1\n{video_id}\n{user_id}\n{expires}".encode())
        return base64.urlsafe_b64encode(keyed.digest()).decode().rstrip("=")

    def expiry(self, now: float | None = None) -> int:
        """Now plus the TTL, rounded up to the minute, so pages listed within the same minute get
        the same URLs (and the browser's cache hits)."""
        return math.ceil(((now if now is not None else time.time()) + self.ttl_seconds) / 60) * 60

    def for_owner(self, user_id: str, now: float | None = None) -> Callable[[str], SignedUrls]:
        """Signs the URLs of ``user_id``'s videos with one expiry (a listing page signs 50)."""
        expires = self.expiry(now)
        expires_at = datetime.fromtimestamp(expires, UTC)

        def urls(video_id: str) -> SignedUrls:
            query = f"exp={expires}&sig={self.signature(video_id, user_id, expires)}"
            base = f"/v1/videos/{video_id}"
            return SignedUrls.model_construct(  # our own strings: nothing to validate
                content=f"{base}/content?{query}",
                poster=f"{base}/poster.jpg?{query}",
                storyboard=f"{base}/storyboard.jpg?{query}",
                storyboard_index=f"{base}/storyboard.json?{query}",
                expires_at=expires_at,
            )

        return urls

    def urls(self, video_id: str, user_id: str, now: float | None = None) -> SignedUrls:
        return self.for_owner(user_id, now)(video_id)

    def verify(self, video_id: str, user_id: str, expires: int, signature: str, now: float | None = None) -> None:
        """Raise :class:`InvalidUrlSignature` or :class:`UrlExpired` unless the URL is good now."""
        expected = self.signature(video_id, user_id, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise InvalidUrlSignature("This URL's signature does not match: ask for a fresh one.")
        if expires < (now if now is not None else time.time()):
            raise UrlExpired("This signed URL has expired: ask for a fresh one (GET /v1/videos/{id}/urls).")
