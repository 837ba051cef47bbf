"""vidgate: self-hosted ingest for large video uploads."""

__version__ = "0.1.0"
