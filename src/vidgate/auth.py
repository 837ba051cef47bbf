"""API keys: created by ``vidgate keys create``, stored only as SHA-256, looked up per request
(or remembered for ``AUTH_CACHE_SECONDS`` by :class:`KeyCache`).

Each key has a role (``viewer``, ``uploader``, ``reviewer``, ``admin``); what a role may do is
:data:`ROLE_PERMISSIONS`, checked in one place (:func:`vidgate.api.deps.require`). A user is an
account (a team): its keys share its library, and the role says what each key may do there."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select

from vidgate.db.engine import Database
from vidgate.db.models import ApiKey, UserAccount, utcnow
from vidgate.errors import InsufficientRole, NotFound, Unauthenticated
from vidgate.roles import DEFAULT_ROLE, ROLE_PERMISSIONS, Permission, Role, roles_with

KEY_PREFIX = "vg_"


class Principal(BaseModel):
    """The authenticated caller, the key it used (None where no key was used) and that key's role."""

    user_id: str
    username: str
    key_id: str | None = None
    role: Role = Role.VIEWER

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def check(self, permission: Permission) -> None:
        """Raise :class:`InsufficientRole`, naming the roles that may, unless this key may."""
        if not self.can(permission):
            allowed = " or ".join(role.value for role in roles_with(permission))
            raise InsufficientRole(
                f"This key's role is {self.role.value}, which may not {permission.value}; "
                f"a key with role {allowed} may.",
                role=self.role.value,
                required=[role.value for role in roles_with(permission)],
            )


class KeyInfo(BaseModel):
    id: str
    username: str
    key_prefix: str
    label: str | None
    role: Role
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(db: Database, username: str, label: str | None = None, role: Role = DEFAULT_ROLE) -> tuple[str, KeyInfo]:
    """Create a key for ``username`` (creating the user if new). The key is returned only here."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with db.session() as session:
        user = session.scalar(select(UserAccount).where(UserAccount.username == username))
        if user is None:
            user = UserAccount(username=username)
            session.add(user)
            session.flush()
        row = ApiKey(user_id=user.id, key_hash=hash_key(key), key_prefix=key[:10], label=label, role=role.value)
        session.add(row)
        session.flush()
        info = KeyInfo(
            id=row.id,
            username=username,
            key_prefix=row.key_prefix,
            label=label,
            role=role,
            created_at=row.created_at,
            revoked_at=None,
        )
    return key, info


def list_keys(db: Database) -> list[KeyInfo]:
    with db.session() as session:
        rows = session.execute(select(ApiKey, UserAccount.username).join(UserAccount).order_by(ApiKey.created_at)).all()
        return [
            KeyInfo(
                id=key.id,
                username=username,
                key_prefix=key.key_prefix,
                label=key.label,
                role=Role(key.role),
                created_at=key.created_at,
                revoked_at=key.revoked_at,
            )
            for key, username in rows
        ]


def revoke_key(db: Database, key_id_or_prefix: str) -> KeyInfo:
    with db.session() as session:
        rows = session.scalars(
            select(ApiKey).where((ApiKey.id == key_id_or_prefix) | (ApiKey.key_prefix == key_id_or_prefix))
        ).all()
        if len(rows) != 1:
            raise NotFound(f"no single key matches {key_id_or_prefix!r} (found {len(rows)})")
        row = rows[0]
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        username = session.get_one(UserAccount, row.user_id).username
        return KeyInfo(
            id=row.id,
            username=username,
            key_prefix=row.key_prefix,
            label=row.label,
            role=Role(row.role),
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )


def count_active_keys(db: Database) -> int:
    with db.session() as session:
        return len(session.scalars(select(ApiKey.id).where(ApiKey.revoked_at.is_(None))).all())


def authenticate(db: Database, key: str | None) -> Principal:
    if not key:
        raise Unauthenticated("Send an API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.")
    digest = hash_key(key)
    with db.reading() as session:  # no write lock: a request is never held up by another's write
        row = session.execute(select(ApiKey, UserAccount).join(UserAccount).where(ApiKey.key_hash == digest)).first()
    if row is None or row[0].revoked_at is not None or not hmac.compare_digest(row[0].key_hash, digest):
        raise Unauthenticated("The API key is unknown or revoked.")
    return Principal(user_id=row[1].id, username=row[1].username, key_id=row[0].id, role=Role(row[0].role))


def key_of(db: Database, principal: Principal) -> KeyInfo | None:
    """The key the caller authenticated with; only ever the caller's own (checked by user)."""
    if principal.key_id is None:
        return None
    with db.reading() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.id == principal.key_id, ApiKey.user_id == principal.user_id))
        if key is None:
            return None
        return KeyInfo(
            id=key.id,
            username=principal.username,
            key_prefix=key.key_prefix,
            label=key.label,
            role=Role(key.role),
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCache:
    """Remembers keys that authenticated for ``ttl`` seconds, so a stream of requests (a tus
    upload is one request per chunk) does not cost a database round trip each.

    Only keys that were valid are remembered, and only for ``ttl``: a key revoked by another
    process stops working within ``ttl`` seconds (``ttl=0`` asks the database every time).
    At most ``max_entries`` keys are kept; the least recently used go first."""

    def __init__(self, db: Database, ttl: float, max_entries: int = 10_000) -> None:
        self._db = db
        self._ttl = ttl
        self._max = max_entries
        self._lock = threading.Lock()
        self._known: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def cached(self, key: str | None) -> Principal | None:
        """The principal of ``key`` if it authenticated less than ``ttl`` seconds ago."""
        if not key or self._ttl <= 0:
            return None
        digest = hash_key(key)
        with self._lock:
            hit = self._known.get(digest)
            if hit is None:
                return None
            if hit[1] <= time.monotonic():
                del self._known[digest]
                return None
            self._known.move_to_end(digest)
            return hit[0]

    def authenticate(self, key: str | None) -> Principal:
        """Cached, or looked up in the database (blocking: call it from a worker thread)."""
        principal = self.cached(key)
        if principal is not None:
            return principal
        principal = authenticate(self._db, key)
        if self._ttl > 0 and key:
            with self._lock:
                self._known[hash_key(key)] = (principal, time.monotonic() + self._ttl)
                while len(self._known) > self._max:
                    self._known.popitem(last=False)
        return principal

    def forget(self, key: str) -> None:
        with self._lock:
            self._known.pop(hash_key(key), None)
