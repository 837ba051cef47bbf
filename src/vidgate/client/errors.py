"""What can go wrong in a client call, as exceptions a caller can tell apart."""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error the client raises; ``str()`` is a message fit for a user."""


class RequestRefused(ClientError):
    """The server answered with an error: its HTTP status, its error code and message.

    Raised for refusals (4xx: bad key, extension not allowed, file too large, ...) and for
    server errors that retrying did not cure, so the caller can act on ``code``.
    """

    def __init__(self, status: int, code: str, message: str, *, session_id: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.session_id = session_id


class ServerUnreachable(ClientError):
    """The server could not be reached (or kept dropping the connection) after retries."""


class FileChanged(ClientError):
    """The file changed while it was being uploaded: the bytes sent no longer describe it."""


class HashMismatch(ClientError):
    """The server stored content whose SHA-256 differs from the one computed here."""

    def __init__(self, local: str, remote: str) -> None:
        super().__init__(f"the server stored SHA-256 {remote}, but the file's SHA-256 is {local}")
        self.local = local
        self.remote = remote


class WaitTimeout(ClientError):
    """Processing did not end within the time the caller was willing to wait."""
