"""Optional virus scan through a ClamAV daemon (clamav-client), streamed with INSTREAM."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import BinaryIO, cast

from clamav_client.clamd import ClamdError, ClamdNetworkSocket, ClamdUnixSocket

from vidgate.errors import MalwareDetected, ScannerUnavailable
from vidgate.storage.base import RangedFile

log = logging.getLogger(__name__)


class ClamAVScanner:
    """``address`` is a unix socket path or ``host:port``."""

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout

    def _client(self) -> ClamdNetworkSocket:
        if ":" in self.address and not self.address.startswith("/"):
            host, port = self.address.rsplit(":", 1)
            return ClamdNetworkSocket(host=host, port=int(port), timeout=int(self.timeout))
        return ClamdUnixSocket(path=self.address, timeout=int(self.timeout))

    def scan(self, source: Path | RangedFile) -> None:
        """Stream ``source`` (a local file, or an object read by ranges) to clamd."""
        try:
            handle = source.open("rb") if isinstance(source, Path) else source.reader()
            with contextlib.closing(handle):
                results = self._client().instream(cast(BinaryIO, handle))
        except (ClamdError, OSError) as exc:
            raise ScannerUnavailable(
                f"The virus scanner at {self.address} could not be reached ({exc}); the upload is kept "
                "and checked again later."
            ) from exc
        status, signature = (results or {}).get("stream", ("OK", None))
        if status == "FOUND":
            raise MalwareDetected(f"The virus scanner found {signature} in the file; it was refused.")
        if status != "OK":
            raise ScannerUnavailable(f"The virus scanner answered {status} {signature or ''}".strip() + ".")
