"""schemathesis hooks: tus bodies (application/offset+octet-stream) are sent as raw bytes."""

from __future__ import annotations

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
