"""Webhooks: signed JSON POSTs of chosen events to a URL per user, retried with backoff.

The transaction that stores an event (:mod:`vidgate.events.store`) records one
``webhook_delivery`` row per receiving user who has a webhook and asked for that type (unique
per event and user), so it exists exactly when the change does. Any ``vidgate serve`` process
sends due rows, at least once (a crash after a POST sends it again): it
leases a row in a short transaction, posts outside any transaction, then records the
outcome, so neither SQLite's single writer nor a slow receiver holds a lock.

Each POST carries ``X-Vidgate-Event-Id`` (receivers drop repeats), ``X-Vidgate-Event-Type`` and
``X-Vidgate-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the user's
secret>``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from vidgate.config import WebhookSettings
from vidgate.db.engine import Database
from vidgate.db.models import UserAccount, WebhookDelivery, utcnow
from vidgate.errors import InvalidParameter, NotFound
from vidgate.events.schema import AnyEvent, to_client

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Vidgate-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300.0) -> bool:
    """What a receiver does: recompute the signature and check the timestamp is recent."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, timestamp, body)
    return hmac.compare_digest(expected, header) and abs(time.time() - timestamp) <= tolerance


def set_webhook(db: Database, username: str, url: str) -> str:
    """Point ``username``'s webhook at ``url``; returns the new signing secret."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidParameter(f"webhook URL must be http(s)://host/..., got {url!r}")
    secret = "whsec_" + secrets.token_hex(24)
    with db.session() as session:
        user = session.scalar(select(UserAccount).where(UserAccount.username == username))
        if user is None:
            raise NotFound(f"no user {username!r}")
        user.webhook_url, user.webhook_secret = url, secret
    return secret


def clear_webhook(db: Database, username: str) -> None:
    with db.session() as session:
        user = session.scalar(select(UserAccount).where(UserAccount.username == username))
        if user is None:
            raise NotFound(f"no user {username!r}")
        user.webhook_url = user.webhook_secret = None


class WebhookOutbox:
    """Records a delivery for each stored event its user asked for, in the event's own
    transaction (so a crash between the change and the delivery loses nothing)."""

    def __init__(self, db: Database, settings: WebhookSettings) -> None:
        self.db = db
        self.event_types = set(settings.event_types)
        self._url_of = select(UserAccount.webhook_url).where(UserAccount.id == bindparam("user_id"))

    def stage(self, session: Session, event: AnyEvent) -> None:
        """``event`` is one user's copy (numbered, that user its only audience)."""
        if event.event_type not in self.event_types or not event.audience:
            return
        user_id = event.audience[0]
        url = session.scalar(self._url_of, {"user_id": user_id})
        if url is None:
            return
        session.add(
            WebhookDelivery(
                event_id=event.event_id,
                event_type=event.event_type,
                user_id=user_id,
                url=url,
                payload=to_client(event),
                next_attempt_at=utcnow(),
            )
        )


class WebhookSender:
    def __init__(self, db: Database, settings: WebhookSettings) -> None:
        self.db = db
        self.settings = settings
        self._client: httpx.Client | None = None  # made for the first delivery (see _post)

    def deliver_due(self, limit: int = 50) -> int:
        """Send every delivery that is due; return how many succeeded."""
        lease = timedelta(seconds=self.settings.timeout_seconds + 5)
        now = utcnow()
        is_due = (WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        with self.db.reading() as session:  # a round with nothing due takes no write lock (SQLite: every second)
            if session.scalar(select(WebhookDelivery.id).where(*is_due).limit(1)) is None:
                return 0
        with self.db.session() as session:
            due = session.scalars(
                select(WebhookDelivery)
                .where(*is_due)
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            jobs = []
            for delivery in due:
                delivery.next_attempt_at = now + lease  # leased: no other sender takes it meanwhile
                secret = session.scalar(select(UserAccount.webhook_secret).where(UserAccount.id == delivery.user_id))
                jobs.append(
                    (
                        delivery.id,
                        delivery.url,
                        delivery.payload,
                        delivery.event_id,
                        delivery.event_type,
                        delivery.attempts,
                        secret or "",
                    )
                )
        delivered = 0
        for delivery_id, url, payload, event_id, event_type, attempts, secret in jobs:
            error = self._post(url, payload.encode(), event_id, event_type, secret)
            with self.db.session() as session:
                if error is None:
                    session.execute(
                        update(WebhookDelivery)
                        .where(WebhookDelivery.id == delivery_id)
                        .values(status="delivered", attempts=attempts + 1, delivered_at=utcnow(), last_error=None)
                    )
                    delivered += 1
                    continue
                attempt = attempts + 1
                gave_up = attempt >= self.settings.max_attempts
                delay = self.settings.retry_backoff_seconds * 2 ** (attempt - 1)
                session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == delivery_id)
                    .values(
                        status="failed" if gave_up else "pending",
                        attempts=attempt,
                        last_error=error[:2000],
                        next_attempt_at=utcnow() + timedelta(seconds=delay),
                    )
                )
                log.warning("webhook %s to %s failed (attempt %d): %s", event_id, url, attempt, error)
        return delivered

    def _post(self, url: str, body: bytes, event_id: str, event_type: str, secret: str) -> str | None:
        headers = {
            "Content-Type": "application/json",
            "X-Vidgate-Event-Id": event_id,
            "X-Vidgate-Event-Type": event_type,
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
        }
        # Imported for the first delivery: httpx costs every API process ~5 MiB, and most never
        # deliver a webhook.
        import httpx

        if self._client is None:
            timeout = self.settings.timeout_seconds
            self._client = httpx.Client(timeout=timeout, headers={"User-Agent": "vidgate-webhooks/1"})
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if response.is_success else f"HTTP {response.status_code}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
