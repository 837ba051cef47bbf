"""API keys and the key cache, on both databases."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from tests.helpers import finishes_at_once, sha256, sqlite_write_lock_held
from vidgate.auth import KeyCache, create_key, revoke_key
from vidgate.errors import Unauthenticated


def test_a_valid_key_is_remembered_for_the_ttl_and_a_revocation_then_takes_effect(
    services_for: Callable[..., Any],
) -> None:
    with services_for() as services:
        key, info = create_key(services.db, "dora")
        cache = KeyCache(services.db, ttl=0.5)
        assert cache.cached(key) is None
        assert cache.authenticate(key).username == "dora"
        assert cache.cached(key) is not None
        revoke_key(services.db, info.key_prefix)  # as `vidgate keys revoke` in another process
        assert cache.authenticate(key).username == "dora"  # still remembered
        time.sleep(0.6)
        assert cache.cached(key) is None
        with pytest.raises(Unauthenticated):
            cache.authenticate(key)


def test_unknown_keys_are_never_remembered_and_ttl_zero_asks_every_time(services_for: Callable[..., Any]) -> None:
    with services_for() as services:
        key, info = create_key(services.db, "eve")
        cache = KeyCache(services.db, ttl=60)
        for _ in range(2):
            with pytest.raises(Unauthenticated):
                cache.authenticate("vg_not-a-key")
        assert cache.cached("vg_not-a-key") is None
        with pytest.raises(Unauthenticated):
            cache.authenticate(None)
        uncached = KeyCache(services.db, ttl=0)
        assert uncached.authenticate(key).username == "eve"
        assert uncached.cached(key) is None
        revoke_key(services.db, info.key_prefix)
        with pytest.raises(Unauthenticated):
            uncached.authenticate(key)


def test_the_cache_keeps_at_most_max_entries(services_for: Callable[..., Any]) -> None:
    with services_for() as services:
        keys = [create_key(services.db, f"user{i}")[0] for i in range(3)]
        cache = KeyCache(services.db, ttl=60, max_entries=2)
        for key in keys:
            cache.authenticate(key)
        assert cache.cached(keys[0]) is None  # the least recently used went first
        assert cache.cached(keys[1]) is not None and cache.cached(keys[2]) is not None


def test_each_role_may_what_its_table_says() -> None:
    from vidgate.auth import Principal
    from vidgate.errors import InsufficientRole
    from vidgate.roles import Permission, Role

    allowed = {
        Role.VIEWER: {Permission.READ},
        Role.UPLOADER: {Permission.READ, Permission.UPLOAD, Permission.DELETE},
        Role.REVIEWER: {Permission.READ, Permission.REVIEW},
        Role.ADMIN: set(Permission),
    }
    for role, permissions in allowed.items():
        principal = Principal(user_id="u", username="u", role=role)
        assert {p for p in Permission if principal.can(p)} == permissions
    with pytest.raises(
        InsufficientRole, match="role is uploader, which may not review; a key with role reviewer or admin may"
    ):
        Principal(user_id="u", username="u", role=Role.UPLOADER).check(Permission.REVIEW)


def test_keys_carry_their_role_and_default_to_uploader(services_for: Callable[..., Any]) -> None:
    from vidgate.auth import authenticate, list_keys
    from vidgate.roles import Role

    with services_for() as services:
        plain, info = create_key(services.db, "gina")
        reviewer, _ = create_key(services.db, "gina", role=Role.REVIEWER)
        assert info.role is Role.UPLOADER
        assert authenticate(services.db, plain).role is Role.UPLOADER
        principal = authenticate(services.db, reviewer)
        assert principal.role is Role.REVIEWER and principal.key_id
        assert sorted(k.role.value for k in list_keys(services.db)) == ["reviewer", "uploader"]


def test_keys_are_stored_hashed(services_for: Callable[..., Any]) -> None:
    from vidgate.auth import authenticate, list_keys, revoke_key
    from vidgate.errors import Unauthenticated

    with services_for() as services:
        key, info = create_key(services.db, "carol")
        assert authenticate(services.db, key).username == "carol"
        with services.db.session() as session:
            from vidgate.db.models import ApiKey

            stored = session.scalars(select(ApiKey.key_hash)).all()
        assert key not in stored and sha256(key.encode()) in stored
        assert [k.key_prefix for k in list_keys(services.db)] == [info.key_prefix]
        revoke_key(services.db, info.key_prefix)
        with pytest.raises(Unauthenticated):
            authenticate(services.db, key)


def test_a_key_is_looked_up_without_waiting_for_a_writer(services_for: Callable[..., Any]) -> None:
    """Authentication only reads: on SQLite it takes no write lock, so a request is not held up
    behind another's write transaction (it used to wait for it, up to the busy timeout)."""
    with services_for() as services:
        if services.db.engine.dialect.name != "sqlite":
            pytest.skip("SQLite's single writer")
        key, _ = create_key(services.db, "fay")
        with sqlite_write_lock_held(services.db):
            principal = finishes_at_once(lambda: KeyCache(services.db, ttl=0).authenticate(key))
        assert principal.username == "fay"
