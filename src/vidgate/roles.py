"""What each API key role may do (kept free of heavy imports: the CLI offers the role names)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    UPLOADER = "uploader"
    REVIEWER = "reviewer"
    ADMIN = "admin"


class Permission(StrEnum):
    READ = "read"  # see one's videos, sessions, results, content and events
    UPLOAD = "upload"  # create, send and cancel uploads
    REVIEW = "review"  # record review decisions
    DELETE = "delete"  # delete videos (the library's DELETE, when it exists)


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.UPLOADER: frozenset({Permission.READ, Permission.UPLOAD, Permission.DELETE}),
    Role.REVIEWER: frozenset({Permission.READ, Permission.REVIEW}),
    Role.ADMIN: frozenset(Permission),
}
#: Keys made before roles existed could read and upload: migration 0010 makes them uploaders,
#: and ``vidgate keys create`` without ``--role`` makes one too.
DEFAULT_ROLE = Role.UPLOADER


def roles_with(permission: Permission) -> list[Role]:
    return [role for role, allowed in ROLE_PERMISSIONS.items() if permission in allowed]


__all__ = ["DEFAULT_ROLE", "ROLE_PERMISSIONS", "Permission", "Role", "roles_with"]
