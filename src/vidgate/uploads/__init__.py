"""Upload sessions: chunks, resume, assembly and expiry. Knows nothing of HTTP."""
