"""GET /v1/me over real HTTP, on SQLite and on PostgreSQL: the key's own user and key, nobody
else's, and 401 for a missing, unknown or revoked key."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx

from tests.conftest import RunningServer
from tests.helpers import error_code
from vidgate.auth import create_key, list_keys, revoke_key


def test_the_key_names_its_own_user_and_key(server: RunningServer) -> None:
    username = f"me-{uuid.uuid4().hex[:8]}"
    key, info = create_key(server.db, username, label="laptop")
    other_key, _ = create_key(server.db, username, label="phone")  # a second key of the same user
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        mine = client.get("/v1/me", headers={"X-API-Key": key})
        bearer = client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
        second = client.get("/v1/me", headers={"X-API-Key": other_key})
    assert mine.status_code == 200, mine.text
    data = mine.json()["data"]
    assert data["username"] == username
    assert data["key"]["id"] == info.id and data["key"]["label"] == "laptop"
    assert data["key"]["prefix"] == key[:10] and key not in mine.text
    assert datetime.fromisoformat(data["key"]["created_at"]).replace(tzinfo=None) == info.created_at.replace(
        tzinfo=None
    )
    assert set(data) == {"user_id", "username", "key"}
    assert set(data["key"]) == {"id", "prefix", "label", "role", "created_at"}
    assert data["key"]["role"] == "uploader"
    assert bearer.json()["data"] == data
    assert second.json()["data"]["user_id"] == data["user_id"]
    assert second.json()["data"]["key"]["label"] == "phone"


def test_no_other_users_data(server: RunningServer) -> None:
    with server.client("alice") as alice, server.client("bob") as bob:
        seen_by_alice = alice.get("/v1/me").json()["data"]
        seen_by_bob = bob.get("/v1/me").json()["data"]
    assert (seen_by_alice["username"], seen_by_bob["username"]) == ("alice", "bob")
    assert seen_by_alice["user_id"] != seen_by_bob["user_id"]
    assert seen_by_alice["key"]["id"] != seen_by_bob["key"]["id"]
    ids = {k.id: k.username for k in list_keys(server.db)}
    assert ids[seen_by_alice["key"]["id"]] == "alice" and ids[seen_by_bob["key"]["id"]] == "bob"


def test_a_missing_unknown_or_revoked_key_gets_401(server: RunningServer) -> None:
    key, info = create_key(server.db, f"revoked-{uuid.uuid4().hex[:8]}")
    revoke_key(server.db, info.id)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for headers in ({}, {"X-API-Key": "vg_not_a_key"}, {"X-API-Key": key}):
            response = client.get("/v1/me", headers=headers)
            assert response.status_code == 401, (headers, response.text)
            assert error_code(response) == "unauthenticated"


def test_a_bearer_key_decides_and_no_second_credential_is_ignored(server: RunningServer) -> None:
    """A wrong Bearer key is refused even beside a valid X-API-Key, and so is an Authorization
    header of another scheme: a request names one credential, or two naming the same key."""
    key = server.key_for("alice")
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        wrong_bearer = client.get("/v1/me", headers={"Authorization": "Bearer vg_wrong", "X-API-Key": key})
        basic = client.get("/v1/me", headers={"Authorization": "Basic cHJveHk6cGFzcw==", "X-API-Key": key})
        same = client.get("/v1/me", headers={"Authorization": f"Bearer {key}", "X-API-Key": key})
    assert wrong_bearer.status_code == 401
    assert basic.status_code == 401 and error_code(basic) == "unauthenticated"
    assert same.status_code == 200 and same.json()["data"]["username"] == "alice"
